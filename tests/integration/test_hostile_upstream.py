"""Hostile upstreams: every oddity of an upstream is a backend failure (the next target answers
before any byte reached the client, or the stream ends with an error event), never a 500, never
garbage relayed, never a key in an answer or a log; and /healthz answers within 100 ms throughout.

The upstream is tests/harness/hostile_upstream.py, a real server process misbehaving on purpose
(one mode per model name), run through every backend kind, streamed and not.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness.health_watch import HealthWatch
from tests.harness.procs import Process, start_gateway, start_hostile
from tests.integration.test_passthrough import ask

KINDS = {
    "anthropic": {"kind": "anthropic"},
    "llamacpp": {"kind": "llamacpp"},
    "openai": {"kind": "openai"},
    "llamacpp-openai": {"kind": "llamacpp", "dialect": "openai"},
}
UPSTREAM_KEY = "sk-hostile-upstream-SECRET-1234"
CLIENT_KEY = "sk-ant-client-own-SECRET-5678"
HOSTILE_TEXT = "Hello from the hostile server."
FALLBACK_TEXT = "Hello from the scripted model."


@pytest.fixture(scope="module")
def hostile(logdir: Path) -> Iterator[Process]:
    proc = start_hostile(logdir)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def gateways(
    hostile: Process, text_llama: Process, logdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Process]]:
    """One ccgate per backend kind: the hostile server first (with its own key), then a fallback;
    and one per kind with the hostile server alone, to see what a client gets with no fallback."""
    import yaml

    started: dict[str, Process] = {}
    folder = tmp_path_factory.mktemp("hostile")
    try:
        for name, kind in KINDS.items():
            url = hostile.url + ("/v1" if kind["kind"] == "openai" else "")
            backend = {**kind, "url": url, "api_key": UPSTREAM_KEY, "breaker": {"failures": 1000}}
            for alone in (False, True):
                backends = {"hostile": backend}
                if not alone:
                    backends["fallback"] = {"kind": "anthropic", "url": text_llama.url}
                policy = folder / f"{name}-{alone}.yaml"
                policy.write_text(
                    yaml.safe_dump({"backends": backends, "rules": [{"name": "default", "to": list(backends)}]})
                )
                started[f"{name}{'-alone' if alone else ''}"] = start_gateway(policy, logdir)
        yield started
    finally:
        for proc in started.values():
            proc.stop()


def call(gw: Process, mode: str, stream: bool) -> tuple[int, dict[str, str], str]:
    """(status, headers, what the client read: the text, or the error message)."""
    body = {**ask(), "model": mode, "stream": stream}
    headers = {"x-api-key": CLIENT_KEY}
    with httpx.stream("POST", gw.url + "/v1/messages", json=body, headers=headers, timeout=120) as r:
        raw = r.read().decode()
        if r.status_code != 200:
            return r.status_code, dict(r.headers), json.loads(raw)["error"]["message"]
        if not stream:
            message = json.loads(raw)
            return 200, dict(r.headers), "".join(b.get("text", "") for b in message["content"])
    text, errors = [], []
    for line in raw.splitlines():
        if line.startswith("data: "):
            event = json.loads(line[6:])  # every event the client gets is JSON: no garbage relayed
            if event.get("type") == "content_block_delta":
                text.append(event["delta"].get("text", ""))
            if event.get("type") == "error":
                errors.append(event["error"]["message"])
    return 200, dict(r.headers), "".join(text) + "".join(f" [error: {e}]" for e in errors)


# What each mode must come to when a fallback is there: "hostile" (decoded and answered),
# "fallback" (the hostile one failed before the first byte), "error event" (failed after it).
EXPECTED = {
    "gzip": "hostile",
    "brotli": "fallback",
    "endless-line": "fallback",
    "redirect": "fallback",
    "not-json": "fallback",
    "bad-start": "fallback",
    "bad-event": "error event",
    "echo-headers": "fallback",
    "huge-error": "fallback",
}


def expected(mode: str, kind: str, stream: bool) -> set[str]:
    collected = not stream and kind.startswith("llamacpp")  # streamed upstream, assembled by ccgate
    if mode in ("bad-start", "bad-event") and not stream and not collected:
        return {"hostile"}  # a whole answer asked for as such: the stream's faults are not in it
    if mode == "bad-event" and collected:
        return {"fallback"}  # nothing went out yet
    if mode == "bad-event":
        # Every event is read (by the guard, the translator, or the usage tap): when the bad one
        # comes in the same read as the start, nothing went out yet and the next target answers;
        # when it comes later, the stream ends with an error event. Both are right.
        return {"fallback", "error event"}
    return {EXPECTED[mode]}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_oddity_is_a_backend_failure(gateways: dict[str, Process], kind: str, stream: bool) -> None:
    gw = gateways[kind]
    with HealthWatch(gw.url) as watch:
        for mode in EXPECTED:
            status, headers, said = call(gw, mode, stream)
            where = f"{kind} {'stream' if stream else 'json'} {mode}: {status} {said[:200]!r}"
            assert status == 200, where
            if headers["x-ccgate-backend"] == "fallback":
                got = "fallback"
                assert said == FALLBACK_TEXT, where
                reason = headers["x-ccgate-fallback-reason"]
                assert reason.startswith("hostile: ") and len(reason) <= 512, where
                assert all(32 <= ord(c) < 127 for c in reason), where
            else:
                got = "error event" if "[error: " in said else "hostile"
                assert got == "error event" or said == HOSTILE_TEXT, where
            assert got in expected(mode, kind, stream), where
            assert "SECRET" not in said and "SECRET" not in json.dumps(headers), where
    assert watch.failures == 0 and watch.worst < 0.1, f"/healthz: worst {watch.worst * 1000:.0f} ms"
    assert "SECRET" not in gw.log.read_text()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_with_nowhere_to_go_the_client_gets_a_bad_gateway(
    gateways: dict[str, Process], kind: str, stream: bool
) -> None:
    gw = gateways[f"{kind}-alone"]
    for mode in ("brotli", "redirect", "not-json", "echo-headers", "huge-error", "endless-line"):
        status, headers, said = call(gw, mode, stream)
        where = f"{kind} {'stream' if stream else 'json'} {mode}: {status} {said[:200]!r}"
        assert status == 502, where
        assert len(said) < 2000 and "SECRET" not in said and "\x1b" not in said, where
        assert headers.get("x-ccgate-trace-id"), where
    assert httpx.get(gw.url + "/healthz").status_code == 200
    assert "SECRET" not in gw.log.read_text()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_crlf_split_between_reads_keeps_the_event_name(gateways: dict[str, Process], stream: bool) -> None:
    """`event: x\\r` | `\\ndata: ...`: the decoder used to end the event at the CR and lose its
    name, so the guard passed the nameless tool_use of an unknown tool unchecked."""
    status, headers, said = call(gateways["llamacpp"], "crlf-nope", stream)
    assert status == 200 and headers["x-ccgate-backend"] == "fallback", (status, said)
    assert "'Nope', which is not among the offered tools" in headers["x-ccgate-fallback-reason"]
