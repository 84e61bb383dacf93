"""Hot reload: the policy file is swapped under load; no request fails, a bad file changes nothing."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx
import yaml

from tests.harness.procs import Process, start_gateway
from tests.harness.wait import wait_until
from tests.integration.test_passthrough import ask


def policy_for(url: str, kind: str) -> str:
    return yaml.safe_dump(
        {"backends": {"local": {"kind": kind, "url": url}}, "rules": [{"name": kind, "to": ["local"]}]}
    )


def answered_by(gw: Process) -> str:
    return httpx.post(gw.url + "/v1/messages", json={**ask(), "max_tokens": 20}, timeout=30).headers["x-ccgate-route"]


def sighup_and_wait(gw: Process, marker: str) -> None:
    """One SIGHUP, and wait until the gateway logged what it made of it (signals sent faster than
    it handles them would merge, and the count would depend on the machine's speed)."""
    before = gw.log.read_text().count(marker)
    gw.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    wait_until(lambda: gw.log.read_text().count(marker) > before, f"ccgate logged {marker!r} once more")


def answered_after(results: list[tuple[int, str]], seen: int, route: str) -> None:
    wait_until(lambda: any(r == route for _, r in results[seen:]), f"a request was answered by rule {route}")


def test_twenty_swaps_under_load(tmp_path: Path, logdir: Path, owned, tool_llama: Process, text_llama: Process) -> None:
    path = tmp_path / "policy.yaml"
    a, b = policy_for(tool_llama.url, "llamacpp"), policy_for(text_llama.url, "anthropic")
    path.write_text(a)
    gw = owned(start_gateway(path, logdir, {"CCGATE_RELOAD_INTERVAL": "0"}))  # SIGHUP only: exact swap count
    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                r = client.post(gw.url + "/v1/messages", json={**ask(), "max_tokens": 20, "stream": True})
                results.append((r.status_code, r.headers.get("x-ccgate-route", "")))

    workers = [threading.Thread(target=load) for _ in range(2)]  # the servers have 2 slots: never busy
    try:
        for w in workers:
            w.start()
        for i in range(20):
            path.write_text(b if i % 2 == 0 else a)
            sighup_and_wait(gw, "policy reloaded (SIGHUP)")
            if i % 5 == 4:  # a broken edit in between: rejected, the policy in force stays
                path.write_text("backends: {local: {kind: nope}}\nrules: []\n")
                sighup_and_wait(gw, "policy reload (SIGHUP) rejected")
            if i < 2:  # the load really runs on each policy: one answer routed by it
                answered_after(results, len(results), "anthropic" if i % 2 == 0 else "llamacpp")
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert results and all(status == 200 for status, _ in results), [r for r in results if r[0] != 200][:5]
    assert {route for _, route in results} == {"llamacpp", "anthropic"}
    assert answered_by(gw) == "llamacpp"  # the last good file was `a`; the broken one after it was refused
    log = gw.log.read_text()
    assert log.count("policy reloaded (SIGHUP)") == 20
    assert log.count("policy reload (SIGHUP) rejected") == 4
    assert "unknown field" in log or "Invalid enum value 'nope'" in log


def test_edited_file_is_picked_up(
    tmp_path: Path, logdir: Path, owned, tool_llama: Process, text_llama: Process
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(policy_for(tool_llama.url, "llamacpp"))
    gw = owned(start_gateway(path, logdir, {"CCGATE_RELOAD_INTERVAL": "0.2"}))
    assert answered_by(gw) == "llamacpp"
    path.write_text(policy_for(text_llama.url, "anthropic"))
    wait_until(lambda: answered_by(gw) == "anthropic", "the edited policy file was loaded")
