"""Fixtures that start real servers: scripted llama-servers, ccgate itself, Redis."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from tests.harness import procs, scripted_model
from tests.harness.procs import Process, start_gateway, start_llama, start_redis
from tests.harness.team import make_team  # noqa: F401  (a fixture: team keys on real Redis)

StartLlama = Callable[..., Process]
StartGateway = Callable[..., Process]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Every process a test started must be stopped by the time the session ends, even after a
    failure: a left-over ccgate or llama-server holds ports and CPU long after the run."""
    left = procs.leftovers()
    orphans = _children_of(os.getpid())
    if not left and not orphans:
        return
    for proc in left:
        proc.kill()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"{p.name} (pid {p.proc.pid if p.proc else '?'}): {' '.join(p.args[:3])} ..." for p in left]
    lines += [f"pid {pid}: {cmd}" for pid, cmd in orphans.items() if all(p.proc and p.proc.pid != pid for p in left)]
    if reporter is not None:
        reporter.write_line("processes left running by the tests (now killed):", red=True)
        for line in lines:
            reporter.write_line("  " + line, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _children_of(pid: int) -> dict[int, str]:
    """Live child processes of `pid` (Linux /proc), whoever started them."""
    found: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):
            continue
        state, ppid = fields[0], int(fields[1])
        if ppid == pid and state != "Z":
            found[int(stat.parent.name)] = cmdline[:160]
    return found


@pytest.fixture
def owned() -> Iterator[Callable[[Process], Process]]:
    """`owned(start_gateway(...))`: the process is stopped when the test ends, pass or fail."""
    started: list[Process] = []

    def own(proc: Process) -> Process:
        started.append(proc)
        return proc

    yield own
    for proc in reversed(started):
        proc.stop()


@pytest.fixture
def standin(logdir: Path, owned: Callable[[Process], Process]) -> Process:
    """tests/harness/anthropic_standin.py: the Anthropic API's rules, and what reached it."""
    port = procs.free_port()
    args = [sys.executable, "-m", "tests.harness.anthropic_standin", "--port", str(port)]
    return owned(Process(f"standin-{port}", args, port, logdir / f"standin-{port}.log").start("/_requests"))


@pytest.fixture(scope="session")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return scripted_model.build_all(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def session_llamas(models: dict[str, Path], logdir: Path) -> Iterator[dict[str, Process]]:
    started: dict[str, Process] = {}
    yield started
    for proc in started.values():
        proc.stop()


def _shared(session_llamas: dict[str, Process], key: str, start: Callable[[], Process]) -> Process:
    proc = session_llamas.get(key)
    if proc is None or proc.proc is None or proc.proc.poll() is not None:
        proc = session_llamas[key] = start()
    return proc


@pytest.fixture(scope="session")
def tool_llama(session_llamas: dict[str, Process], models: dict[str, Path], logdir: Path) -> Process:
    """The `tool` model: a Read call first, "The file a.txt says hi." after the tool result."""
    return _shared(
        session_llamas, "tool", lambda: start_llama(models["tool"], logdir, "-np", "2", "--metrics", "--slots")
    )


@pytest.fixture(scope="session")
def text_llama(session_llamas: dict[str, Process], models: dict[str, Path], logdir: Path) -> Process:
    """The `text` model, used as the fallback backend: answers one fixed sentence."""
    return _shared(session_llamas, "text", lambda: start_llama(models["text"], logdir, "-np", "2"))


@pytest.fixture(scope="session")
def gemma(session_llamas: dict[str, Process], logdir: Path) -> Process:
    """The real model (Gemma 3 270M) on llama-server, as a user runs it: --jinja, its own template
    (which has no place for tools), one slot, 2 threads. ~20 tokens/s here: keep answers short."""
    from tests.harness.procs import real_model

    return _shared(
        session_llamas,
        "gemma",
        lambda: start_llama(real_model(), logdir, "-np", "1", "-c", "32768", "-t", "2", "--metrics", "--slots"),
    )


@pytest.fixture
def start_llama_server(models: dict[str, Path], logdir: Path) -> Iterator[StartLlama]:
    """Start a private llama-server for one test: `start_llama_server("loop", "-np", "1")`."""
    started: list[Process] = []

    def start(model: str, *flags: str, jinja: bool = True) -> Process:
        proc = start_llama(models[model], logdir, *flags, jinja=jinja)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def write_policy(path: Path, backends: dict[str, dict], to: list[str] | None = None, extra: dict | None = None) -> Path:
    policy = {"backends": backends, "rules": [{"name": "default", "to": to or list(backends)}], **(extra or {})}
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


@pytest.fixture
def start_ccgate(tmp_path: Path, logdir: Path) -> Iterator[StartGateway]:
    """Start `ccgate serve` as its own process with the given backends (first = first choice)."""
    started: list[Process] = []

    def start(
        backends: dict[str, dict],
        to: list[str] | None = None,
        env: dict[str, str] | None = None,
        extra: dict | None = None,
    ) -> Process:
        policy = write_policy(tmp_path / f"policy-{len(started)}.yaml", backends, to, extra)
        proc = start_gateway(policy, logdir, env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
def gateway(
    tool_llama: Process, text_llama: Process, logdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Process]:
    """ccgate with the shipped shape: local llama.cpp first, an Anthropic-dialect fallback second."""
    backends = {
        "local": {"kind": "llamacpp", "url": tool_llama.url},
        "fallback": {"kind": "anthropic", "url": text_llama.url, "api_key": "sk-fallback-secret"},
    }
    policy = write_policy(tmp_path_factory.mktemp("gw") / "policy.yaml", backends)
    proc = start_gateway(policy, logdir)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def redis_url(logdir: Path) -> Iterator[str]:
    """REDIS_URL when a server answers there, else a private redis-server on a free port."""
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=0.5):
            yield url
            return
    except OSError:
        pass
    proc = start_redis(logdir)
    yield f"redis://127.0.0.1:{proc.port}/0"
    proc.stop()
