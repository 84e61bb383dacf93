"""More conversations than slots: slots saved to files and restored (llama-server's
`--slot-save-path`), against real llama-servers.

What llama-server itself reports is the judge: each answer's `cache_read_input_tokens` is the
prompt it did not process again (`timings.cache_n`). A returning conversation whose slot was
given away reads back its whole previous prompt only if ccgate restored it; without a restore
it reads back only what it shares with the slot's other conversation (Claude Code's common
system prompt), which the test measures in the same run.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.harness.procs import Process, free_port, llama_server_binary, real_model, start_llama
from tests.harness.sessions import first_turn, next_turn
from tests.harness.wait import wait_until
from tests.integration.test_metrics import scrape, value
from tests.integration.test_slot_pinning import ran_on

ANSWER = "Hello from the scripted model."
NAMES = ("alpha", "beta", "gamma", "delta")


def slot_files(gw: Process) -> str:
    return httpx.get(gw.url + "/readyz", timeout=10).json()["backends"]["local"].get("slot_files", "")


def idle(gw: Process, server: Process | None = None) -> None:
    """Until ccgate sees the backend idle (and, given the server, the server says so itself:
    an answer ccgate stopped may still be winding down there)."""
    if server is not None:
        slots = lambda: httpx.get(server.url + "/slots", timeout=10).json()  # noqa: E731
        wait_until(lambda: not any(s["is_processing"] for s in slots()), "the server's slots to be idle")
    ready = lambda: httpx.get(gw.url + "/readyz", timeout=10).json()["backends"]["local"]["queue_depth"] == 0  # noqa: E731
    wait_until(ready, "the backend to be idle")


def ask(gw: Process, body: dict) -> tuple[dict, int]:
    r = httpx.post(gw.url + "/v1/messages", json={**body, "max_tokens": 8}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()["usage"], int(r.headers["x-ccgate-slot"])


def prompt_of(usage: dict) -> int:
    return usage["input_tokens"] + usage.get("cache_read_input_tokens", 0)


def test_four_conversations_on_two_slots_each_get_their_prefix_back(
    start_ccgate, start_llama_server, tmp_path: Path
) -> None:
    saved = tmp_path / "slots"
    saved.mkdir()
    server = start_llama_server("text", "-np", "2", "--slots", "--cache-ram", "0", "--slot-save-path", f"{saved}/")
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": server.url}})
    wait_until(lambda: slot_files(gw).startswith("on"), "ccgate to find the server's slot files")
    assert "up to 4 files" in slot_files(gw)  # twice the slots
    sessions = {name: first_turn(name) for name in NAMES}
    previous: dict[str, int] = {}
    shared = 0  # what two conversations have in common (the most a slot given away still gives)
    for turn in range(3):
        for name in NAMES:
            usage, slot = ask(gw, sessions[name])
            assert slot == ran_on(server)
            cached = usage.get("cache_read_input_tokens", 0)
            if turn == 0:
                shared = max(shared, cached)
            else:
                where = f"turn {turn} of {name}: {usage}, its previous prompt {previous[name]}, shared {shared}"
                assert cached >= previous[name] - 8 and cached > shared + 200, where
            previous[name] = prompt_of(usage)
            sessions[name] = next_turn(sessions[name], ANSWER, turn + 1)
    assert shared >= 500  # the comparison means something: sessions do share their system prompt
    files = sorted(p.name for p in saved.iterdir())
    assert files and len(files) <= 4 and all(f.startswith("ccgate-local-") for f in files), files
    samples = scrape(gw)
    restores = value(samples, "ccgate_slot_files_total", backend="local", action="restore", result="ok")
    # every return of turns 1 and 2 whose prefix was not in a slot: at least 3 of 4 sessions
    # a round, when one keeps a slot and the other three take turns in the other
    assert 6 <= restores <= 8, samples
    assert value(samples, "ccgate_slot_files_total", backend="local", action="restore", result="failed") == 0


def test_two_replicas_restore_what_the_other_saved(
    start_ccgate, start_llama_server, redis_url: str, tmp_path: Path
) -> None:
    """The files are indexed in Redis beside the slots: a session saved through one replica is
    restored through the other."""
    saved = tmp_path / "slots"
    saved.mkdir()
    server = start_llama_server("text", "-np", "1", "--slots", "--cache-ram", "0", "--slot-save-path", f"{saved}/")
    # three sessions on one slot: the two away in files, and a third name, since a save never
    # overwrites the file its own request restores
    backends = {"local": {"kind": "llamacpp", "url": server.url, "slot_files": {"files": 3}}}
    extra = {"state": {"key_prefix": f"slotfiles-{tmp_path.name}:"}}
    replicas = [start_ccgate(backends, env={"REDIS_URL": redis_url}, extra=extra) for _ in range(2)]
    for gw in replicas:
        wait_until(lambda gw=gw: slot_files(gw).startswith("on"), "ccgate to find the server's slot files")
    sessions = {name: first_turn(name) for name in NAMES[:3]}
    sent = 0
    for turn in range(3):
        for name in sessions:
            for gw in replicas:  # one slot: each replica must see it free (the other's count included)
                idle(gw)
            usage, _ = ask(replicas[sent % 2], sessions[name])
            sent += 1
            if turn:  # one slot, three sessions: each return is a restore, half of them of the other's save
                assert usage["cache_read_input_tokens"] > 10 * usage["input_tokens"], (turn, name, usage)
            sessions[name] = next_turn(sessions[name], ANSWER, turn + 1)
    restores = [
        value(scrape(gw), "ccgate_slot_files_total", backend="local", action="restore", result="ok") for gw in replicas
    ]
    assert sum(restores) == 6 and all(restores), restores


def test_a_file_gone_is_processed_whole_and_not_tried_again(start_ccgate, start_llama_server, tmp_path: Path) -> None:
    saved = tmp_path / "slots"
    saved.mkdir()
    server = start_llama_server("text", "-np", "1", "--slots", "--cache-ram", "0", "--slot-save-path", f"{saved}/")
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": server.url}})
    wait_until(lambda: slot_files(gw).startswith("on"), "ccgate to find the server's slot files")
    alpha, beta = first_turn("alpha"), first_turn("beta")
    ask(gw, alpha)
    ask(gw, beta)  # alpha's prefix saved first
    wait_until(lambda: any(saved.iterdir()), "alpha's slot file")
    for file in saved.iterdir():
        file.unlink()
    alpha = next_turn(alpha, ANSWER, 1)
    usage, _ = ask(gw, alpha)  # the restore fails: answered all the same, the prompt processed whole
    assert usage["input_tokens"] > 10 * usage.get("cache_read_input_tokens", 0), usage
    samples = scrape(gw)
    assert value(samples, "ccgate_slot_files_total", backend="local", action="restore", result="failed") == 1
    assert re.search(r"restoring ccgate-local-[0-9a-f]+-0\.bin into slot 0 failed", gw.log.read_text())
    ask(gw, beta)  # beta was saved again (its own file), alpha's given back now
    ask(gw, next_turn(alpha, ANSWER, 2))
    samples = scrape(gw)
    assert value(samples, "ccgate_slot_files_total", backend="local", action="restore", result="failed") == 1


def test_a_server_without_slot_files_is_left_as_it_is(start_ccgate, start_llama_server) -> None:
    server = start_llama_server("text", "-np", "1", "--slots", "--cache-ram", "0")
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": server.url}})
    wait_until(lambda: slot_files(gw).startswith("off"), "ccgate to find the server has no slot files")
    assert "--slot-save-path" in slot_files(gw)
    for name in ("alpha", "beta", "alpha"):
        ask(gw, first_turn(name))
    samples = scrape(gw)
    for action in ("save", "restore"):
        for result in ("ok", "failed"):
            assert value(samples, "ccgate_slot_files_total", backend="local", action=action, result=result) == 0
    assert "slot files off: llama-server was started without --slot-save-path" in gw.log.read_text()


def test_a_sliding_window_model_whose_restores_give_nothing_back_has_slot_files_turned_off(
    start_ccgate, start_llama_server, tmp_path: Path
) -> None:
    """The real Gemma 3 (sliding-window attention): llama-server reuses a restored slot only
    with --swa-full (without it, a restored slot has no context checkpoint, and the prompt is
    processed again). ccgate sees it from the answers' own counts and stops saving."""
    saved = tmp_path / "slots"
    saved.mkdir()
    server = start_llama(
        real_model(),
        tmp_path,
        "-np",
        "1",
        "-c",
        "4096",
        "-t",
        "2",
        "--slots",
        "--cache-ram",
        "0",
        "--slot-save-path",
        f"{saved}/",
    )
    try:
        gw = start_ccgate({"local": {"kind": "llamacpp", "url": server.url, "slot_files": {"min_tokens": 64}}})
        wait_until(lambda: slot_files(gw).startswith("on"), "ccgate to find the server's slot files")
        rules = " ".join(f"Rule {i}: answer briefly and precisely, in plain words." for i in range(40))
        bodies = {
            name: {"model": "m", "system": f"You are {name}. {rules}", "messages": [{"role": "user", "content": "hi"}]}
            for name in NAMES[:2]
        }
        for name in ["alpha", "beta"] + ["alpha", "beta"] * 2:  # three restores, each wasted
            idle(gw, server)  # its one slot free, as llama-server reports it, or the request would be "busy"
            usage, _ = ask(gw, {**bodies[name], "max_tokens": 2})
        assert usage["input_tokens"] > 200, usage  # processed again after its restore
        wait_until(lambda: "--swa-full" in slot_files(gw), "slot files to be turned off")
        assert "slot files are off for it" in gw.log.read_text()
        restores = value(scrape(gw), "ccgate_slot_files_total", backend="local", action="restore", result="ok")
        idle(gw, server)
        ask(gw, {**bodies["alpha"], "max_tokens": 2})  # no more restores
        assert value(scrape(gw), "ccgate_slot_files_total", backend="local", action="restore", result="ok") == restores
    finally:
        server.stop()


@pytest.mark.parametrize("metrics", [True, False], ids=["metrics", "slots"])
def test_a_restarted_server_has_empty_slots_and_its_files_are_still_restored(
    start_ccgate, models: dict[str, Path], tmp_path: Path, owned, metrics: bool
) -> None:
    """llama-server restarted on the same port: ccgate notices (its work went back: /metrics'
    prompt_tokens_total, or without --metrics /slots' newest id_task), forgets what the slots
    held, and restores from the files saved before the restart. Not noticing, it would save the
    empty slot over a file as if it held the last conversation."""
    saved = tmp_path / "slots"
    saved.mkdir()
    port = free_port()
    args = [llama_server_binary(), "-m", str(models["text"]), "--host", "127.0.0.1", "--port", str(port), "-t", "1"]
    args += ["--jinja", "-np", "1", "--slots", "--cache-ram", "0", "--slot-save-path", f"{saved}/"]
    args += ["--metrics"] if metrics else []

    def start(n: int) -> Process:
        return owned(Process(f"llama-restarted-{n}", args, port, tmp_path / f"llama-{n}.log")).start("/health")

    server = start(1)
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": server.url}})
    wait_until(lambda: slot_files(gw).startswith("on"), "ccgate to find the server's slot files")
    alpha, beta, gamma = (first_turn(name) for name in ("alpha", "beta", "gamma"))
    ask(gw, alpha)
    ask(gw, beta)  # alpha saved
    saves = value(scrape(gw), "ccgate_slot_files_total", backend="local", action="save", result="ok")
    assert saves == 1
    server.stop()
    server = start(2)
    wait_until(lambda: "backend local restarted" in gw.log.read_text(), "ccgate to notice the restart")
    idle(gw)
    ask(gw, gamma)  # the slot is empty: nothing to save (beta's prefix went with the restart)
    assert value(scrape(gw), "ccgate_slot_files_total", backend="local", action="save", result="ok") == saves
    idle(gw)
    usage, _ = ask(gw, next_turn(alpha, ANSWER, 1))  # restored from the file saved before the restart
    assert usage["cache_read_input_tokens"] > 10 * usage["input_tokens"], usage
