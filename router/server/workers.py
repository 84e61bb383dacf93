"""`ccgate serve --workers N`: N processes answer on one port, for a box with more than one core.

One Python process serves one core's worth of requests (bench/overhead.py --workers 1,2 measures
it). The supervisor binds the listening socket once and forks N workers that inherit it; each
new connection goes to whichever worker accepts it first. Each worker is a whole gateway (its
own backends, health polling, event loop), so what replicas share, workers share the same way:
with REDIS_URL the prefix index, in-flight counts, limits and usage are one for all of them; in
memory, each worker routes on what it saw itself (a conversation's keep-alive connection stays
on one worker, but a new connection may not), which the start-up log says.

Metrics: prometheus_client's multi-process mode, in a directory the supervisor makes and
removes. Counters and histograms are every worker's sum in every scrape, whichever worker
answers it; `ccgate_queue_waiting` sums the live workers, `ccgate_state_redis_up` is the lowest.
What is read at scrape time (process_*, ccgate_backend_*, ccgate_event_loop_tasks) is the
answering worker's own.

Signals: SIGTERM (or SIGINT) to the supervisor goes to every worker, and each drains as
`ccgate serve` does (router/server/shutdown.py); a second one stops them at once. A worker started just
as the signal came gets it too. A worker that dies otherwise is started again; one that exits
with status 2 at start-up (a setting it refuses) stops the whole server with that status.

Hung workers: each worker's event loop marks a shared clock ten times a second; one whose mark is
older than CCGATE_WORKER_TIMEOUT (its loop blocked: a worker answering nobody, while the kernel
still hands it connections) is killed and replaced, as uvicorn's own supervisor does.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from router.config import Settings
from router.policy.schema import Policy

log = logging.getLogger("ccgate.workers")
RESTART_PAUSE = 1.0  # seconds before a crashed worker is started again (no tight crash loop)
STARTUP_ALLOWANCE = 60.0  # seconds a new worker has, beyond the timeout, before its first tick
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def supervise(settings: Settings, policy: Policy) -> int:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    listener = socket.create_server((settings.host, settings.port), family=family, backlog=2048)
    listener.set_inheritable(True)
    metrics_dir = tempfile.mkdtemp(prefix="ccgate-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir
    context = multiprocessing.get_context("fork")  # the workers inherit the socket and settings
    workers: dict[int, BaseProcess] = {}
    beats: dict[int, Any] = {}  # slot → the worker's last tick (time.monotonic, shared memory)
    told: dict[int, int] = {}  # pid → signals sent to it
    signals: list[int] = []  # SIGTERM / SIGINT received, in order

    def start(slot: int) -> None:
        beat = context.Value("d", time.monotonic() + STARTUP_ALLOWANCE, lock=False)
        worker = context.Process(
            target=_work, args=(listener, settings, policy, os.getpid(), beat), name=f"ccgate-worker-{slot}"
        )
        worker.start()
        workers[slot], beats[slot] = worker, beat

    def pass_on() -> None:
        """Every live worker gets every signal the supervisor got, the ones started since too."""
        for worker in workers.values():
            pid = worker.pid
            if pid is None or worker.exitcode is not None:
                continue
            for sig in signals[told.get(pid, 0) :]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            told[pid] = len(signals)

    def forward(sig: int, frame: FrameType | None) -> None:
        signals.append(sig)
        pass_on()

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        for slot in range(settings.workers):
            start(slot)
        state = "shared in Redis" if settings.redis_url or policy.state.redis_url else "in memory, per worker"
        log.info(
            "%d workers on %s:%d (pids %s); routing state %s",
            settings.workers,
            settings.host,
            settings.port,
            ", ".join(str(w.pid) for w in workers.values()),
            state,
        )
        while workers:
            wait([w.sentinel for w in workers.values()], timeout=1.0)
            pass_on()
            for slot, worker in list(workers.items()):
                if worker.exitcode is None:
                    _unless_hung(worker, beats[slot].value, settings.worker_timeout)
                    continue
                del workers[slot]
                told.pop(worker.pid or 0, None)
                _forget(worker)
                if signals:
                    continue
                if worker.exitcode == 2:  # it refused its settings: the others will too
                    status = 2
                    forward(signal.SIGTERM, None)
                    continue
                log.error("worker %s exited (status %s); starting another", worker.pid, worker.exitcode)
                time.sleep(RESTART_PAUSE)
                if not signals:  # a SIGTERM during the pause: nothing more to start
                    start(slot)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        listener.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return status


def _unless_hung(worker: BaseProcess, last_tick: float, timeout: float) -> None:
    """Kill a worker whose event loop has not ticked for `timeout` seconds: it is replaced (or,
    when stopping, no longer holds the shutdown up)."""
    silent = time.monotonic() - last_tick
    if silent <= timeout or worker.pid is None:
        return
    log.error(
        "worker %s has not run its event loop for %.0fs (CCGATE_WORKER_TIMEOUT %gs): killing it",
        worker.pid,
        silent,
        timeout,
    )
    with contextlib.suppress(ProcessLookupError):
        os.kill(worker.pid, signal.SIGKILL)


def _end_with(supervisor: int) -> None:
    """A worker whose supervisor is killed (SIGKILL: no chance to pass anything on) gets SIGTERM
    and drains, rather than serving on, orphaned, on a port nobody owns."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the supervisor's own SIGTERM still reaches it
        return
    if os.getppid() != supervisor:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _forget(worker: BaseProcess) -> None:
    """Its live gauges no longer count (the multi-process files of a dead pid)."""
    from prometheus_client import multiprocess

    if worker.pid is not None:
        multiprocess.mark_process_dead(worker.pid)


def _work(listener: socket.socket, settings: Settings, policy: Policy, supervisor: int, beat: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # uvicorn installs its own once it runs
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _end_with(supervisor)
    from prometheus_client import values

    values.ValueClass = values.MultiProcessValue()  # before any metric exists in this process

    from router.server.app import create_app
    from router.server.shutdown import serve

    try:
        app = create_app(settings, policy)
    except ValueError as exc:
        log.error("ccgate: %s", exc)
        os._exit(2)

    def drain() -> None:
        app.state.draining = True

    def tick() -> None:
        beat.value = time.monotonic()

    serve(app, settings, drain, sockets=[listener], on_tick=tick)
