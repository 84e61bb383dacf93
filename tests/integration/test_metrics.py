"""GET /metrics after a scripted sequence: answers, a fallback, an overload, backend state."""

from __future__ import annotations

import httpx
import jsonschema_rs
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.procs import Process, free_port
from tests.harness.wait import wait_until
from tests.integration.test_passthrough import ask


def metrics_headers(gw: Process) -> dict[str, str]:
    """What a scraper sends: the metrics token (or the admin token) the gateway was started with."""
    token = gw.env.get("CCGATE_METRICS_TOKEN") or gw.env.get("CCGATE_ADMIN_TOKEN")
    return {"authorization": f"Bearer {token}"} if token else {}


def scrape(gw: Process) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = httpx.get(gw.url + "/metrics", headers=metrics_headers(gw))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(r.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum of every series of `name` that has these labels (and any others)."""
    wanted = set(labels.items())
    return sum(v for (n, series), v in samples.items() if n == name and wanted <= set(series))


def test_metrics_of_a_scripted_sequence(start_ccgate, tool_llama: Process, text_llama: Process) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    gw = start_ccgate(
        {
            "local": {"kind": "llamacpp", "url": tool_llama.url},
            "fallback": {"kind": "anthropic", "url": text_llama.url},
            "dead": {"kind": "llamacpp", "url": dead},
        },
        to=["local", "fallback"],
        extra={
            "rules": [
                {"name": "doomed", "when": {"model": "*doomed*"}, "to": ["dead"]},
                {"name": "rescued", "when": {"model": "*rescued*"}, "to": ["dead", "fallback"]},
                {"name": "default", "to": ["local", "fallback"]},
            ]
        },
    )
    ua = {"user-agent": "claude-cli/2.1.197 (external, sdk-cli)"}
    for stream in (False, True):
        r = httpx.post(gw.url + "/v1/messages", json={**ask(), "stream": stream}, headers=ua, timeout=30)
        assert r.status_code == 200
        r.read()
    overloaded = httpx.post(gw.url + "/v1/messages", json={**ask(), "model": "doomed"}, headers=ua, timeout=30)
    assert overloaded.status_code == 529
    rescued = httpx.post(gw.url + "/v1/messages", json={**ask(), "model": "rescued"}, headers=ua, timeout=30)
    assert rescued.status_code == 200

    samples = scrape(gw)
    ok = value(samples, "ccgate_requests_total", rule="default", backend="local", outcome="ok", client="claude-cli")
    assert ok == 2
    assert (
        value(
            samples, "ccgate_requests_total", rule="doomed", backend="none", outcome="overloaded", client="claude-cli"
        )
        == 1
    )
    assert value(samples, "ccgate_fallbacks_total", from_backend="dead", to_backend="none", reason="unhealthy") == 1
    assert value(samples, "ccgate_fallbacks_total", from_backend="dead", to_backend="fallback", reason="unhealthy") == 1
    assert value(samples, "ccgate_decisions_total", rule="default") == 2
    assert value(samples, "ccgate_time_to_first_byte_seconds_count", backend="local") == 2
    assert value(samples, "ccgate_request_duration_seconds_count", backend="local", stream="true") == 1
    assert value(samples, "ccgate_request_duration_seconds_count", backend="local", stream="false") == 1
    assert value(samples, "ccgate_backend_healthy", backend="local") == 1
    assert value(samples, "ccgate_backend_healthy", backend="dead") == 0
    assert value(samples, "ccgate_backend_slots", backend="local") == 2
    assert value(samples, "ccgate_backend_in_flight", backend="local") == 0
    output = value(samples, "ccgate_tokens_total", backend="local", kind="output")
    prompt = value(samples, "ccgate_tokens_total", backend="local", kind="input")
    prompt += value(samples, "ccgate_tokens_total", backend="local", kind="cached")
    assert output == 4  # the tool call and the end of turn, twice
    assert prompt > 2 * 200  # Read's schema and the template: ~240 tokens a request
    assert value(samples, "ccgate_output_tokens_per_second_count", backend="local") == 1  # the streamed one


def test_one_json_log_line_per_request(start_ccgate, tool_llama: Process) -> None:
    import json

    gw = start_ccgate({"local": {"kind": "llamacpp", "url": tool_llama.url}})
    assert httpx.post(gw.url + "/v1/messages", json=ask(), headers={"user-agent": "opencode/1.0"}).status_code == 200
    lines = [json.loads(line) for line in gw.log.read_text().splitlines() if line.startswith("{")]
    assert lines and all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    [request] = [line for line in lines if line.get("op") == "messages"]
    assert (request["rule"], request["backend"], request["status"], request["client"]) == (
        "default",
        "local",
        200,
        "opencode",
    )
    assert request["ms"] > 0 and request["fallbacks"] == []


def test_every_answer_has_a_trace_id_and_every_refusal_one_line(start_ccgate, tool_llama: Process) -> None:
    """Not only the model API: the probes, /metrics, /v1/models, /openapi.json, /admin/* (their
    401s too), unknown paths and wrong methods. And each refusal, wherever it comes from, is one
    JSON line with every field an answered request's line has."""
    import json

    gw = start_ccgate(
        {"local": {"kind": "llamacpp", "url": tool_llama.url}},
        env={"CCGATE_ADMIN_TOKEN": "adm-token", "CCGATE_METRICS_TOKEN": "scrape", "CCGATE_MAX_BODY_BYTES": "4096"},
    )
    calls = [
        ("GET", "/healthz", None, 200),
        ("GET", "/readyz", None, 200),
        ("GET", "/metrics", None, 401),
        ("GET", "/v1/models", None, 200),
        ("GET", "/openapi.json", None, 200),
        ("GET", "/", None, 200),
        ("GET", "/admin/keys", None, 401),
        ("GET", "/nope", None, 404),
        ("GET", "/v1/messages", None, 405),
        ("OPTIONS", "/v1/messages", None, 204),
        ("POST", "/v1/messages", b"{not json", 400),
        ("POST", "/v1/messages", b'{"pad": "' + b"x" * 8192 + b'"}', 413),
        ("POST", "/v1/messages", json.dumps(ask()).encode(), 200),
    ]
    with httpx.Client(base_url=gw.url, timeout=30) as client:
        document = client.get("/openapi.json").json()
        for method, path, body, status in calls:
            r = client.request(method, path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == status, (method, path, r.status_code, r.text[:200])
            assert len(r.headers.get("x-ccgate-trace-id", "")) == 32, (method, path)
            if path in document["paths"] and method.lower() in document["paths"][path]:  # as documented
                answers = document["paths"][path][method.lower()]["responses"]
                assert str(status) in answers, (method, path, status)
                schema = answers[str(status)].get("content", {}).get("application/json", {}).get("schema")
                if schema is not None:
                    rooted = {**schema, "components": document["components"]}
                    errors = [e.message for e in jsonschema_rs.validator_for(rooted).iter_errors(r.json())]
                    assert not errors, (method, path, errors)
        authed = {"authorization": "Bearer adm-token", "content-type": "application/json"}
        for method, path, body, status in [
            ("POST", "/admin/explain", json.dumps(ask()).encode(), 200),
            ("GET", "/admin/keys", None, 404),  # team keys are off (open mode): said so
            ("GET", "/admin/usage", None, 404),
            ("GET", "/metrics", None, 200),
        ]:
            r = client.request(method, path, content=body, headers=authed)
            assert r.status_code == status and r.headers["x-ccgate-trace-id"], (path, r.status_code, r.text[:200])
            answers = document["paths"][path][method.lower()]["responses"]
            schema = answers[str(status)]["content"].get("application/json", {}).get("schema")
            if schema is not None:
                rooted = {**schema, "components": document["components"]}
                errors = [e.message for e in jsonschema_rs.validator_for(rooted).iter_errors(r.json())]
                assert not errors, (method, path, errors)
        admin = client.get("/admin/explain", headers={"authorization": "Bearer adm-token"})  # POST only: 405
        assert admin.status_code == 405 and admin.headers["x-ccgate-trace-id"]

    def lines() -> list[dict]:
        return [json.loads(line) for line in gw.log.read_text().splitlines() if line.startswith("{")]

    wait_until(lambda: sum(1 for line in lines() if "status" in line) >= 11, "the request lines were written")
    logged = [line for line in lines() if "status" in line]
    answered = next(line for line in logged if line["status"] == 200 and line["op"] == "messages")
    for status, path in [
        (401, "/metrics"),
        (401, "/admin/keys"),
        (404, "/nope"),
        (405, "/v1/messages"),
        (400, "/v1/messages"),
        (413, "/v1/messages"),
        (405, "/admin/explain"),
    ]:
        [line] = [x for x in logged if x["status"] == status and x["path"] == path]
        assert set(answered) - {"ts", "msg", "level"} <= set(line), (status, path, set(answered) - set(line))
        assert line["trace_id"] and line["message"], line
    assert not [x for x in logged if x["path"] in ("/healthz", "/readyz", "/v1/models") and x["status"] == 200]
