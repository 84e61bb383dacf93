"""deploy/: the compose stack checked without a Docker engine, then run natively.

No engine runs containers here and no image can be pulled, so the compose file is resolved and
validated by a real Compose implementation (Debian's docker-compose, offline), the Prometheus
config by promtool, the collector and Grafana files are parsed and cross-checked against the
compose file and the dashboards, and one smoke test runs the stack's services as the compose
file describes them, from the programs this machine has: redis-server with the compose's command
line (restarted, to show keys and usage survive), a scripted llama-server with the compose's
flags, ccgate with the image's command and the compose's environment, Prometheus with deploy/'s
config (targets rewritten to local ports), then the real Claude Code CLI with a team key.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from tests.harness.procs import Process, free_port, llama_server_binary
from tests.harness.wait import wait_until
from tests.integration.test_claude_cli import run_claude
from tests.integration.test_passthrough import ask

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"


def compose(*args: str, env_file: Path = ENV_EXAMPLE) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        raise RuntimeError("docker-compose is not installed: ./scripts/test installs Debian's package")
    command = [binary, "-f", str(COMPOSE), "--env-file", str(env_file), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": "/tmp"})


def resolved(*profile: str) -> dict:
    done = compose(*profile, "config")
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def mounts(service: dict) -> dict[str, str]:
    """A service's volumes as target → source (a named volume, or an absolute path here)."""
    out = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            out[volume["target"]] = volume["source"]
        else:
            source, target = volume.split(":")[:2]
            out[target] = source
    return out


def env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if re.match(r"^[A-Z_]+=", line))
    return dict(pairs)


def dockerfile() -> dict[str, list[str]]:
    """Each instruction of deploy/Dockerfile (continuation lines joined), by keyword."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            out.setdefault(keyword.upper(), []).append(rest.strip())
    return out


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in dockerfile()["ENV"]:
        env |= dict(item.split("=", 1) for item in shlex.split(line))
    return env


@pytest.mark.parametrize("profile", [(), ("--profile", "gpu")], ids=["default", "gpu"])
def test_compose_resolves_for_each_profile(profile: tuple[str, ...]) -> None:
    config = resolved(*profile)
    services = config["services"]
    assert {"ccgate", "redis", "prometheus", "grafana", "otel-collector", "jaeger", "llama"} <= set(services)

    ccgate = services["ccgate"]
    assert ccgate["build"]["dockerfile"] == "deploy/Dockerfile" and Path(ccgate["build"]["context"]) == ROOT
    assert ccgate["command"] == json.loads(dockerfile()["CMD"][-1]) == ["ccgate", "serve"]
    env = ccgate["environment"]
    assert env["CCGATE_AUTH"] == "keys" and env["REDIS_URL"] == "redis://redis:6379/0"
    assert env["CCGATE_ADMIN_TOKEN"] == env_example()["CCGATE_ADMIN_TOKEN"]
    assert ccgate["depends_on"]["redis"]["condition"] == "service_healthy"

    redis = services["redis"]
    command = redis["command"]
    assert command[0] == "redis-server" and command[command.index("--appendonly") + 1] == "yes"
    data_dir = command[command.index("--dir") + 1]
    assert mounts(redis)[data_dir] in config["volumes"]  # a named volume

    llama = services["llama"]
    assert llama["profiles"] == ["gpu"]
    assert llama["image"].startswith("ghcr.io/ggml-org/llama.cpp:server-cuda")
    flags = llama["command"]
    for flag in ("--jinja", "--metrics", "--slots", "-np", "-c", "--model", "--slot-save-path"):
        assert flag in flags, flag
    slot_files = flags[flags.index("--slot-save-path") + 1].rstrip("/")
    assert mounts(llama)[slot_files] in config["volumes"]  # a named volume: the files outlive the container
    assert flags[flags.index("-np") + 1] == env_example()["LLAMA_SLOTS"]
    assert flags[flags.index("-c") + 1] == env_example()["LLAMA_CONTEXT"]
    assert flags[flags.index("--model") + 1] == "/models/" + env_example()["LLAMA_MODEL"]
    [device] = llama["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "/models" in mounts(llama)


def test_compose_refuses_to_start_without_an_admin_token(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(re.sub(r"(?m)^CCGATE_ADMIN_TOKEN=.*\n", "", ENV_EXAMPLE.read_text()))
    done = compose("config", env_file=env_file)
    assert done.returncode != 0 and "set CCGATE_ADMIN_TOKEN in deploy/.env" in done.stderr


def test_compose_without_the_gpu_profile_needs_no_model(tmp_path: Path) -> None:
    """ccgate, Redis and the observability stack in front of a box run elsewhere: no LLAMA_MODEL.
    With the gpu profile and none set, llama-server is told a file name that says what to do."""
    env_file = tmp_path / ".env"
    env_file.write_text(re.sub(r"(?m)^LLAMA_MODEL=.*\n", "", ENV_EXAMPLE.read_text()))
    done = compose("config", env_file=env_file)
    assert done.returncode == 0, done.stderr
    gpu = compose("--profile", "gpu", "config", env_file=env_file)
    assert gpu.returncode == 0, gpu.stderr
    flags = yaml.safe_load(gpu.stdout)["services"]["llama"]["command"]
    assert flags[flags.index("--model") + 1] == "/models/SET-LLAMA_MODEL-IN-deploy-.env.gguf"


def test_every_variable_is_documented_and_every_documented_one_is_used() -> None:
    used = set()
    for path in (COMPOSE, DEPLOY / "policy.yaml"):
        used |= set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", path.read_text()))
    documented = set(env_example())
    assert used - documented == set(), "used in deploy/ but not in .env.example"
    assert documented - used - {"COMPOSE_PROJECT_NAME"} == set(), "in .env.example but used nowhere"
    for name in documented:  # each has a comment saying what it is
        block = ENV_EXAMPLE.read_text().split(f"\n{name}=")[0].rsplit("\n\n", 1)[-1]
        assert "#" in block, name


def test_image_is_slim_unprivileged_and_checks_readiness() -> None:
    instructions = dockerfile()
    assert all(re.match(r"python:3\.1[1-9]-slim", base) for base in instructions["FROM"])
    assert instructions["USER"][-1] not in ("root", "0")
    [healthcheck] = instructions["HEALTHCHECK"]
    assert "/readyz" in healthcheck
    assert image_env()["CCGATE_PORT"] == "4000"


def test_the_image_build_steps_make_a_wheel_with_the_builtin_policy(tmp_path: Path) -> None:
    """The Dockerfile's first stage, natively: from only the files it copies, a wheel with the
    `ccgate` command and the built-in policy (which `ccgate serve` needs with no --config)."""
    copied = [line.split()[:-1] for line in dockerfile()["COPY"] if not line.startswith("--from")]
    for sources in copied:
        for name in sources:
            source = ROOT / name
            target = tmp_path / "src" / name
            if source.is_dir():
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(source, target)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path / "wheels"), "."],
        cwd=tmp_path / "src",
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "wheels").glob("ccgate-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert (
        "router/policies/default.yaml" in names
        and "router/cli/__init__.py" in names
        and "router/server/app.py" in names
    )
    assert "ccgate = router.cli:main" in entry_points


def test_prometheus_grafana_and_collector_agree_with_the_compose_file() -> None:
    services = resolved("--profile", "gpu")["services"]
    check = subprocess.run(
        ["promtool", "check", "config", "--syntax-only", str(DEPLOY / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    [ccgate_target] = jobs["ccgate"]["static_configs"][0]["targets"]
    assert ccgate_target == f"ccgate:{image_env()['CCGATE_PORT']}"
    assert any(p["target"] == 4000 for p in services["ccgate"]["ports"])
    [pattern] = jobs["llama"]["file_sd_configs"][0]["files"]
    targets_dir = Path(mounts(services["prometheus"])[str(Path(pattern).parent)])
    files = sorted(targets_dir.glob(Path(pattern).name))
    llama_targets = [t for f in files for group in yaml.safe_load(f.read_text()) for t in group["targets"]]
    llama_port = services["llama"]["command"][services["llama"]["command"].index("--port") + 1]
    assert llama_targets == [f"llama:{llama_port}"]
    assert urlsplit(services["ccgate"]["environment"]["LOCAL_LLAMA_URL"]).netloc == llama_targets[0]

    grafana = mounts(services["grafana"])
    provisioning = Path(grafana["/etc/grafana/provisioning"])
    datasources = yaml.safe_load((provisioning / "datasources" / "datasources.yml").read_text())["datasources"]
    by_type = {d["type"]: d for d in datasources}
    assert urlsplit(by_type["prometheus"]["url"]).hostname in services
    assert urlsplit(by_type["prometheus"]["url"]).port == 9090
    assert urlsplit(by_type["jaeger"]["url"]).hostname in services
    assert any(p["target"] == urlsplit(by_type["jaeger"]["url"]).port for p in services["jaeger"]["ports"])
    [provider] = yaml.safe_load((provisioning / "dashboards" / "dashboards.yml").read_text())["providers"]
    boards = Path(grafana[provider["options"]["path"]])
    assert boards == ROOT / "dashboards"
    for name in ("gateway.json", "local-models.json"):
        board = json.loads((boards / name).read_text())
        [variable] = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
        assert variable["query"] == "prometheus" and variable["current"]["value"] == by_type["prometheus"]["uid"]
        uids = {t["datasource"]["uid"] for p in board["panels"] for t in p["targets"]}
        assert uids == {"${datasource}"}

    collector = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    otlp = urlsplit(services["ccgate"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert otlp.hostname == "otel-collector" and otlp.hostname in services
    assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(f":{otlp.port}")
    collector_files = mounts(services["otel-collector"])
    config_flag = services["otel-collector"]["command"][0].split("=", 1)[1]
    assert Path(collector_files[config_flag]) == DEPLOY / "otel-collector.yaml"
    for pipeline in collector["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            assert set(pipeline[kind]) <= set(collector[kind]), kind
    jaeger = urlsplit("//" + collector["exporters"]["otlp/jaeger"]["endpoint"])
    assert jaeger.hostname in services
    assert f"receivers.otlp.protocols.grpc.endpoint=0.0.0.0:{jaeger.port}" in " ".join(services["jaeger"]["command"])


class _Collector(BaseHTTPRequestHandler):
    """Stands in for the OpenTelemetry Collector's OTLP/HTTP receiver: counts what arrives."""

    received: list[bytes] = []  # noqa: RUF012 (one receiver per test run)

    def do_POST(self) -> None:
        _Collector.received.append(self.rfile.read(int(self.headers["content-length"])))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_the_stack_runs_natively_and_claude_code_works_through_it(
    tmp_path: Path, logdir: Path, owned, models: dict[str, Path], standin: Process
) -> None:
    services = resolved("--profile", "gpu")["services"]

    # redis-server, with the compose's command line (its volume: a folder here)
    redis_port = free_port()
    redis_command = services["redis"]["command"]
    data = tmp_path / "redis-data"
    data.mkdir()
    redis_args = [a if a != "/data" else str(data) for a in redis_command]
    redis_args[0] = shutil.which("redis-server") or "redis-server"
    redis_args += ["--port", str(redis_port), "--bind", "127.0.0.1"]

    def start_redis() -> Process:
        proc = Process(f"redis-{redis_port}", redis_args, redis_port, logdir / f"redis-{redis_port}.log")
        owned(proc).launch()
        wait_until(lambda: _answers(redis_port), "redis-server answers")
        return proc

    redis = start_redis()

    # llama-server with the compose's flags: the scripted model instead of the GPU's, on a free port
    llama_port = free_port()
    flags = list(services["llama"]["command"])
    flags[flags.index("--model") + 1] = str(models["tool"])
    flags[flags.index("--host") + 1] = "127.0.0.1"
    flags[flags.index("--port") + 1] = str(llama_port)
    # 32k per slot (Claude Code's prompt is ~20k); the compose's 64k per slot is a GPU's, not this CPU's
    flags[flags.index("-c") + 1] = str(32768 * int(flags[flags.index("-np") + 1]))
    slot_files = logdir / f"slots-{llama_port}"
    slot_files.mkdir()
    flags[flags.index("--slot-save-path") + 1] = f"{slot_files}/"
    llama = owned(Process("llama-compose", [llama_server_binary(), *flags], llama_port, logdir / "llama-compose.log"))
    llama.start("/health")

    # the collector's receiver
    receiver = HTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()

    # ccgate: the image's command and environment, the compose's environment, service names → here
    gw_port = free_port()
    places = {
        "redis:6379": f"127.0.0.1:{redis_port}",
        "http://llama:8080": llama.url,
        "http://otel-collector:4318": f"http://127.0.0.1:{receiver.server_port}",
        "https://api.anthropic.com": standin.url,
        "/etc/ccgate/policy.yaml": str(DEPLOY / "policy.yaml"),
    }
    env = {**image_env(), **services["ccgate"]["environment"], "CCGATE_PORT": str(gw_port)}
    for name, value in env.items():
        for there, here in places.items():
            value = value.replace(there, here)
        env[name] = value
    env["CCGATE_STATE_DIR"] = str(tmp_path / "ccgate-state")
    env["CCGATE_HEALTH_INTERVAL"] = "0.5"
    command = services["ccgate"]["command"]
    assert command[0] == "ccgate"
    args = [sys.executable, "-m", "router.cli", *command[1:]]  # the `ccgate` console script, as this Python has it
    gw = owned(Process(f"ccgate-{gw_port}", args, gw_port, logdir / "ccgate-compose.log", env))
    gw.start("/readyz")
    assert "auth: team keys" in gw.log.read_text()

    # Prometheus, with deploy/'s config: the compose's service names become the local ports
    prometheus_dir = tmp_path / "prometheus"
    (prometheus_dir / "targets").mkdir(parents=True)
    config = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    config = config.replace("ccgate:4000", f"127.0.0.1:{gw_port}").replace("10s", "1s")
    config = config.replace("/etc/prometheus/targets", str(prometheus_dir / "targets"))
    # the compose's entrypoint writes CCGATE_METRICS_TOKEN where credentials_file reads it
    token_file = prometheus_dir / "ccgate-metrics-token"
    entrypoint = " ".join(services["prometheus"]["entrypoint"])
    assert "/prometheus/ccgate-metrics-token" in entrypoint and "/prometheus/ccgate-metrics-token" in config
    token_file.write_text(env["CCGATE_METRICS_TOKEN"])
    config = config.replace("/prometheus/ccgate-metrics-token", str(token_file))
    assert httpx.get(gw.url + "/metrics", timeout=10).status_code == 401  # not without the token
    (prometheus_dir / "prometheus.yml").write_text(config)
    for targets in (DEPLOY / "prometheus" / "targets").glob("*.yml"):
        text = targets.read_text().replace("llama:8080", f"127.0.0.1:{llama_port}")
        (prometheus_dir / "targets" / targets.name).write_text(text)
    prom_port = free_port()
    prometheus = owned(
        Process(
            "prometheus-compose",
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={prometheus_dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={prometheus_dir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            prom_port,
            logdir / "prometheus-compose.log",
        )
    )
    prometheus.start("/-/ready")

    # A teammate's key, made as the README says (`docker compose exec ccgate ccgate keys add ...`)
    def ccgate_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "router.cli", *args], env={**os.environ, **env}, capture_output=True, text=True
        )

    made = ccgate_cli("keys", "add", "alice", "--team", "core")
    assert made.returncode == 0, made.stderr
    key = made.stdout.splitlines()[-1]

    done = run_claude(gw, tmp_path / "alice", "--output-format", "json", env={"ANTHROPIC_AUTH_TOKEN": key})
    assert done.returncode == 0, done.stderr + done.stdout[-2000:]
    assert json.loads(done.stdout)["result"] == "The file a.txt says hi."
    assert httpx.get(standin.url + "/_requests", timeout=10).json() == []  # the GPU box answered, not the cloud

    def targets_up() -> bool:
        active = httpx.get(prometheus.url + "/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        return sorted((t["labels"]["job"], t["health"]) for t in active) == [("ccgate", "up"), ("llama", "up")]

    wait_until(targets_up, "Prometheus reports every target up")

    # The compose's Redis restarts: keys and usage are still there, and the gateway carries on.
    def alice_usage() -> list[dict]:
        report = ccgate_cli("usage", "--json")
        return [row for row in json.loads(report.stdout)["usage"] if row["key"] == "alice"] if report.stdout else []

    [before] = wait_until(alice_usage, "alice's usage is recorded")
    redis.stop()
    redis = start_redis()
    assert "alice" in ccgate_cli("keys", "list").stdout
    assert alice_usage() == [before]
    wait_until(
        lambda: (
            httpx.post(gw.url + "/v1/messages", json=ask(), headers={"x-api-key": key}, timeout=60).status_code == 200
        ),
        "the gateway serves alice again after Redis came back",
    )
    gw.stop()  # flushes its spans
    receiver.shutdown()
    assert _Collector.received, "no spans reached the collector's endpoint"


def _answers(port: int) -> bool:
    try:
        import redis as redis_client

        return bool(redis_client.Redis(port=port, socket_timeout=1).ping())
    except (OSError, redis_client.RedisError):
        return False
