"""`ccgate serve --workers N`: several processes on one port, one set of metrics, one shutdown."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.harness.procs import Process, listening
from tests.harness.wait import wait_until
from tests.integration.test_metrics import scrape, total
from tests.integration.test_passthrough import ask


def workers_of(gw: Process) -> set[int]:
    assert gw.proc is not None
    children = Path(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children")
    return {int(pid) for pid in children.read_text().split()} if children.exists() else set()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def port_refuses(port: int) -> bool:
    return not listening(port, timeout=1)


@pytest.fixture
def two_workers(start_ccgate, text_llama: Process, redis_url: str) -> Process:
    gw = start_ccgate(
        {"local": {"kind": "llamacpp", "url": text_llama.url}},
        env={"CCGATE_WORKERS": "2", "REDIS_URL": redis_url},
        extra={"state": {"key_prefix": f"ccgate-workers-{os.getpid()}-{id(text_llama)}:"}},
    )
    wait_until(lambda: gw.log.read_text().count("Application startup complete") == 2, "both workers serving")
    assert len(workers_of(gw)) == 2
    return gw


def test_every_worker_answers_and_a_scrape_counts_them_all(two_workers: Process) -> None:
    gw = two_workers
    before = total(scrape(gw), "ccgate_requests_total", outcome="ok")
    for _ in range(12):  # a new connection each: the kernel hands them to either worker
        answer = httpx.post(gw.url + "/v1/messages", json={**ask(), "max_tokens": 4}, timeout=60)
        assert answer.status_code == 200, answer.text
    # whichever worker answers the scrape, it sums both (prometheus multi-process files)
    for _ in range(4):
        assert total(scrape(gw), "ccgate_requests_total", outcome="ok") - before == 12

    # a worker that dies is replaced, and the server answers meanwhile
    first = workers_of(gw)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    assert httpx.post(gw.url + "/v1/messages", json={**ask(), "max_tokens": 4}, timeout=60).status_code == 200
    replaced = wait_until(lambda: len(w := workers_of(gw)) == 2 and victim not in w and w, "a new worker")
    assert len(replaced & first) == 1
    wait_until(lambda: gw.log.read_text().count("Application startup complete") == 3, "the new worker serving")
    assert "exited (status -9); starting another" in gw.log.read_text()


def test_sigterm_drains_every_worker_and_frees_the_port(two_workers: Process) -> None:
    gw = two_workers
    pids = workers_of(gw)
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(timeout=60) == 0
    assert not any(alive(pid) for pid in pids)
    assert port_refuses(gw.port)
    assert gw.log.read_text().count("drained: closing the listener") == 2


def test_workers_do_not_outlive_a_killed_supervisor(two_workers: Process) -> None:
    gw = two_workers
    pids = workers_of(gw)
    assert gw.proc is not None
    gw.proc.kill()  # SIGKILL: it can pass nothing on; the kernel tells the workers (PDEATHSIG)
    gw.proc.wait(timeout=30)
    wait_until(lambda: not any(alive(pid) for pid in pids), "the workers are gone")
    wait_until(lambda: port_refuses(gw.port), "the port is free")


def test_a_sigterm_while_a_worker_is_being_replaced_still_stops_the_server(two_workers: Process) -> None:
    """The supervisor waits a second before it starts a worker again; a SIGTERM in that second (or
    as the new one starts) used to leave it waiting for ever on a worker nobody told to stop."""
    gw = two_workers
    assert gw.proc is not None
    victim = min(workers_of(gw))
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: "exited (status -9); starting another" in gw.log.read_text(), "the supervisor saw it die")
    gw.proc.send_signal(signal.SIGTERM)  # in the pause before the restart, or just after it
    assert gw.proc.wait(timeout=60) == 0
    wait_until(lambda: port_refuses(gw.port), "the port is free")
    assert not workers_of(gw)


def test_a_hung_worker_is_killed_and_replaced(start_ccgate, text_llama: Process, redis_url: str) -> None:
    gw = start_ccgate(
        {"local": {"kind": "llamacpp", "url": text_llama.url}},
        env={"CCGATE_WORKERS": "2", "REDIS_URL": redis_url, "CCGATE_WORKER_TIMEOUT": "2"},
        extra={"state": {"key_prefix": f"ccgate-hung-{os.getpid()}:"}},
    )
    wait_until(lambda: gw.log.read_text().count("Application startup complete") == 2, "both workers serving")
    first = workers_of(gw)
    hung = min(first)
    os.kill(hung, signal.SIGSTOP)  # its event loop stops: it still holds the socket, answers nobody
    replaced = wait_until(lambda: len(w := workers_of(gw)) == 2 and hung not in w and w, "a new worker")
    assert len(replaced & first) == 1
    assert f"worker {hung} has not run its event loop" in gw.log.read_text()
    wait_until(lambda: gw.log.read_text().count("Application startup complete") == 3, "the new worker serving")
    for _ in range(6):  # every new connection answered again, whichever worker takes it
        assert httpx.post(gw.url + "/v1/messages", json={**ask(), "max_tokens": 4}, timeout=60).status_code == 200
