"""Client-controlled tool schemas cannot make the gateway reach anything, spin, or answer 500.

The model calls Read with 29 a's and a stop: the input on which `^(a+)+$` kept Python's `re`
busy for 19.5 s. It is a real llama-server running the scripted `long_arg` model where
llama-server accepts the schema; llama-server itself refuses a `$ref` outside the document
(400), so for those the answer comes from the hostile test server's `long-call` mode, which
does not look at schemas. /healthz is asked every 20 ms throughout and must answer within 100 ms.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.harness.health_watch import HealthWatch
from tests.harness.procs import Process
from tests.integration.test_metrics import scrape, value


@pytest.fixture
def tarpit() -> Iterator[socket.socket]:
    """A port that accepts connections (the kernel does) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        s.setblocking(False)
        yield s


def connections_to(tarpit: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = tarpit.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def read_tool(file_path_schema: dict, **extra: object) -> dict:
    schema = {
        "type": "object",
        "properties": {"file_path": file_path_schema},
        "required": ["file_path"],
        "additionalProperties": False,
        **extra,
    }
    return {"name": "Read", "description": "Read a file", "input_schema": schema}


def asking(tool: dict, stream: bool = False, model: str = "claude-opus-4-8") -> dict:
    return {
        "model": model,
        "max_tokens": 256,
        "stream": stream,
        "tools": [tool],
        "messages": [{"role": "user", "content": "read the file"}],
    }


@pytest.fixture
def gw(start_ccgate, start_llama_server, text_llama: Process) -> Process:
    local = start_llama_server("long_arg", "-np", "2")
    return start_ccgate(
        {"local": {"kind": "llamacpp", "url": local.url}, "fallback": {"kind": "anthropic", "url": text_llama.url}}
    )


@pytest.fixture
def guarded(start_ccgate, logdir, owned) -> Process:
    """ccgate guarding the hostile server's calls (kind llamacpp: the guard is on)."""
    import sys

    from tests.harness.procs import free_port

    port = free_port()
    args = [sys.executable, "-m", "tests.harness.hostile_upstream", "--port", str(port)]
    hostile = owned(Process(f"hostile-{port}", args, port, logdir / f"hostile-{port}.log").start("/health"))
    return start_ccgate({"local": {"kind": "llamacpp", "url": hostile.url}})


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_refs_are_never_fetched_and_calls_they_guard_pass_unchecked(
    guarded: Process, gw: Process, tarpit: socket.socket, stream: bool
) -> None:
    port = tarpit.getsockname()[1]
    refs = [
        {"$ref": f"http://127.0.0.1:{port}/schema.json"},
        {"$ref": "file:///etc/passwd"},
        {"$ref": "#/$defs/missing"},
        {"type": {"x": 1}},  # not a schema at all
    ]
    with HealthWatch(guarded.url) as watch:
        for ref in refs:
            r = httpx.post(guarded.url + "/v1/messages", json=asking(read_tool(ref), stream, "long-call"), timeout=60)
            assert r.status_code == 200, (ref, r.text)
            assert '"a' + "a" * 28 + '!"' in r.text.replace("\\", "")  # the call went through as made
        # llama-server refuses such a schema itself (it builds a grammar from it): its 400 is the answer
        real = httpx.post(gw.url + "/v1/messages", json=asking(read_tool(refs[0]), stream), timeout=60)
        assert real.status_code == 400 and "$ref" in real.json()["error"]["message"]
    assert connections_to(tarpit) == 0
    assert watch.failures == 0 and watch.worst < 0.1, f"/healthz: worst {watch.worst * 1000:.0f} ms"
    unchecked = value(scrape(guarded), "ccgate_tool_calls_total", backend="local", outcome="unchecked")
    assert unchecked == len(refs)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_catastrophic_pattern_costs_nothing(guarded: Process, gw: Process, stream: bool) -> None:
    hostile = [
        read_tool({"type": "string", "pattern": "^(a+)+$"}),
        read_tool({"type": "string", "pattern": "^(a|aa)+(?=b)"}),  # lookahead: bounded backtracking
        read_tool({"type": "string"}, patternProperties={"^(f|ff)+(i|le|_|path)+$": {"type": "integer"}}),
    ]
    with HealthWatch(guarded.url) as watch:
        for tool in hostile:
            r = httpx.post(guarded.url + "/v1/messages", json=asking(tool, stream, "long-call"), timeout=60)
            # the call breaks each schema: with no other backend, a 502 (or an error event) naming it
            text = r.text if r.status_code != 200 else r.text.split("event: error", 1)[-1]
            assert r.status_code in (200, 502) and "Read:" in text, r.text
        for tool in hostile:  # and through a real llama-server: its own verdict, or a call, never a hang
            r = httpx.post(gw.url + "/v1/messages", json=asking(tool, stream), timeout=60)
            assert r.status_code in (200, 400), r.text
    assert watch.failures == 0 and watch.worst < 0.1, f"/healthz: worst {watch.worst * 1000:.0f} ms"


def test_a_pattern_the_call_breaks_still_moves_the_request(gw: Process) -> None:
    r = httpx.post(gw.url + "/v1/messages", json=asking(read_tool({"type": "string", "pattern": "^/"})), timeout=60)
    assert r.headers["x-ccgate-backend"] == "fallback"
    assert "does not match" in r.headers["x-ccgate-fallback-reason"]


@pytest.mark.parametrize("kind", ["llamacpp", "openai"])
def test_odd_content_shapes_are_a_400_naming_the_field(start_ccgate, text_llama: Process, kind: str) -> None:
    url = text_llama.url + ("/v1" if kind == "openai" else "")
    gw = start_ccgate({"local": {"kind": kind, "url": url}})
    body = {
        "model": "claude-opus-4-8",
        "max_tokens": 64,
        "messages": [
            {"role": "user", "content": "read a.txt"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": ["plain string"]}]},
        ],
    }
    r = httpx.post(gw.url + "/v1/messages", json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert "messages[2].content[0].content[0]" in r.json()["error"]["message"]
    assert httpx.get(gw.url + "/healthz").status_code == 200
