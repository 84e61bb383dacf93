"""ccgate's upstream client against an upstream that breaks HTTP/1.1 on purpose
(tests/harness/conformance_upstream.py, one real process, a case per model name).

Each case runs with two team keys in flight at once, twice over, and then both keys again with a
good answer (on whatever connections the pool kept). Whatever the upstream does, each client
gets its own answer or a clear error: never the other's answer, never a stale one; no request
reaches the upstream twice; no team key reaches it at all; ccgate's memory stays bounded.
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import write_policy
from tests.harness.conformance_upstream import CASES, answer_text
from tests.harness.procs import Process, free_port, start_gateway
from tests.harness.team import ADMIN_TOKEN, Team
from tests.harness.wait import wait_until

GOOD = {"info-100", "info-103", "two-in-one-read", "unsolicited", "chunked-trailers", "body-longer", "utf8-header"}
ROUNDS = 2
PEAK_GROWTH_MIB = 100  # what a bomb case may add to ccgate's peak memory, both requests together


@pytest.fixture(scope="module")
def upstream(logdir: Path) -> Iterator[Process]:
    port = free_port()
    args = [sys.executable, "-m", "tests.harness.conformance_upstream", "--port", str(port)]
    proc = Process(f"conformance-{port}", args, port, logdir / f"conformance-{port}.log").start("/health")
    yield proc
    proc.stop()


@pytest.fixture(scope="module", params=["anthropic", "openai"])
def team(
    request: pytest.FixtureRequest, upstream: Process, redis_url: str, logdir: Path, tmp_path_factory
) -> Iterator[tuple[Team, str]]:
    """One gateway in keys mode per backend kind, with alice's and bob's keys."""
    kind = request.param
    url = upstream.url + ("/v1" if kind == "openai" else "")
    backend = {"kind": kind, "url": url, "api_key": "sk-upstream-own", "breaker": {"failures": 100000}}
    extra = {"state": {"key_prefix": f"test-{secrets.token_hex(4)}:"}}
    policy = write_policy(tmp_path_factory.mktemp("conformance") / "policy.yaml", {"up": backend}, extra=extra)
    env = {"REDIS_URL": redis_url, "CCGATE_AUTH": "keys", "CCGATE_ADMIN_TOKEN": ADMIN_TOKEN}
    gw = start_gateway(policy, logdir, env)
    try:
        made = Team([gw], env)
        made.add_key("alice", "core")
        made.add_key("bob", "core")
        yield made, kind
    finally:
        gw.stop()


def ask(team: Team, who: str, case: str, nonce: str, stream: bool) -> tuple[int, str]:
    """(status, what the client read: the answer's text, or `error: <message>`)."""
    key = team.keys[who]
    # alice sends her key once; bob in two headers at once, as a misconfigured shell might
    headers = {"x-api-key": key} if who == "alice" else {"x-ccgate-key": key, "authorization": f"Bearer {key}"}
    body = {"model": case, "max_tokens": 64, "stream": stream, "messages": [{"role": "user", "content": nonce}]}
    url = team.replicas[0].url + "/v1/messages?beta=true"
    if who == "alice":  # her key in the query too (a script's mistake): it must not go upstream either
        url += f"&note={key}"
    with httpx.stream("POST", url, json=body, headers=headers, timeout=120) as r:
        raw = r.read().decode()
    if r.status_code != 200:
        error = json.loads(raw)
        assert error["type"] == "error" and error["error"]["message"], raw
        return r.status_code, "error: " + error["error"]["message"]
    if not stream:
        return 200, "".join(b.get("text", "") for b in json.loads(raw)["content"])
    text = []
    for line in raw.splitlines():
        if line.startswith("data: "):
            event = json.loads(line[6:])
            if event.get("type") == "content_block_delta":
                text.append(event["delta"].get("text", ""))
            if event.get("type") == "error":
                text.append(" error: " + event["error"]["message"])
    return 200, "".join(text)


def peak_rss_mib(proc: Process) -> float:
    assert proc.proc is not None
    status = Path(f"/proc/{proc.proc.pid}/status").read_text()
    [line] = [ln for ln in status.splitlines() if ln.startswith("VmHWM:")]
    return int(line.split()[1]) / 1024


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("case", CASES)
def test_each_client_gets_its_own_answer_or_a_clear_error(
    team: tuple[Team, str], upstream: Process, case: str, stream: bool
) -> None:
    made, kind = team
    gw = made.replicas[0]
    run = secrets.token_hex(4)
    peak_before = peak_rss_mib(gw)
    seen: list[tuple[str, str, int, str]] = []  # (nonce, case, status, said)
    with ThreadPoolExecutor(2) as pool:
        for round_ in range(ROUNDS):
            for step in (case, "ok"):
                nonces = {who: f"{run}-{step}-{round_}-{who}" for who in ("alice", "bob")}
                if step == "unsolicited":
                    before = httpx.get(upstream.url + "/_log", timeout=10).json()["unsolicited"]
                futures = {who: pool.submit(ask, made, who, step, nonce, stream) for who, nonce in nonces.items()}
                for who, future in futures.items():
                    status, said = future.result()
                    seen.append((nonces[who], step, status, said))
                if step == "unsolicited":  # both stray responses are on idle connections before going on
                    wait_until(
                        lambda b=before: httpx.get(upstream.url + "/_log", timeout=10).json()["unsolicited"] >= b + 2,
                        "the upstream wrote its unsolicited responses",
                    )
    where = f"{kind} {'stream' if stream else 'json'} {case}"
    every_nonce = {nonce for nonce, *_ in seen}
    for nonce, step, status, said in seen:
        others = [n for n in every_nonce if n != nonce and n in said]
        assert not others, f"{where}: {nonce} was given {others}'s answer: {said!r}"
        assert "STALE" not in said, f"{where}: {nonce} got a stale response: {said!r}"
        if step == "ok" or step in GOOD:
            assert (status, said) == (200, answer_text(nonce)), f"{where}: {nonce}: {status} {said!r}"
        else:
            assert "error: " in said and answer_text(nonce) != said, f"{where}: {nonce}: {status} {said!r}"
            assert status in (200, 502, 504), f"{where}: {nonce}: {status} {said!r}"
    log = httpx.get(upstream.url + "/_log", timeout=10).json()
    twice = {n: c for n, c in log["received"].items() if n.startswith(run) and c != 1}
    assert not twice, f"{where}: sent more than once: {twice}"
    assert sum(1 for n in log["received"] if n.startswith(run)) == len(seen), f"{where}: not every request arrived"
    assert log["team_keys"] == 0, f"{where}: a team key reached the upstream"
    grew = peak_rss_mib(gw) - peak_before
    assert grew < PEAK_GROWTH_MIB, f"{where}: ccgate's peak memory grew by {grew:.0f} MiB"
    assert httpx.get(gw.url + "/healthz", timeout=10).status_code == 200
