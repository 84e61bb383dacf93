"""deploy/kubernetes/: every manifest validated strictly against Kubernetes 1.31
(kubernetes-validate, offline), the pieces checked against each other and against ccgate, then
the Deployment's container run natively: its environment with the Secret filled in, its policy
ConfigMap laid out the way the kubelet mounts one, its probes, the metrics credential, and a
policy change delivered as the kubelet delivers it (the `..data` symlink swapped)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from router.config import Settings
from router.policy.loader import load_policy
from router.server.app import USAGE_DRAIN
from tests.harness.procs import Process, free_port, start_redis
from tests.harness.wait import wait_until
from tests.integration.test_passthrough import ask

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
VERSION = "1.31"
NOT_IN_KUBERNETES = {"Kustomization", "PodMonitor"}  # kustomize's file; the Prometheus Operator's CRD


def manifests() -> list[Path]:
    return sorted(KUBE.rglob("*.yaml"))


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def resource(kind: str) -> dict:
    [found] = [d for p in manifests() for d in docs(p) if d["kind"] == kind]
    return found


def container() -> dict:
    [c] = resource("Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def test_every_manifest_is_valid_for_kubernetes_1_31_strictly() -> None:
    paths = manifests()
    done = subprocess.run(
        [validator(), "--strict", "-k", VERSION, *map(str, paths)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    passed = re.findall(r"^INFO (\S+) passed for resource", done.stdout, re.M)
    unknown = re.findall(r"^WARN \S+ Couldn't find schema for kind (\w+)", done.stdout, re.M)
    kinds = [d["kind"] for p in paths for d in docs(p)]
    assert len(passed) == len([k for k in kinds if k not in NOT_IN_KUBERNETES]), done.stdout
    assert set(unknown) == NOT_IN_KUBERNETES and "ERROR" not in done.stdout, done.stdout
    assert {"Namespace", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= set(
        kinds
    )


def test_each_kustomization_lists_exactly_the_manifests_beside_it() -> None:
    for kustomization in KUBE.rglob("kustomization.yaml"):
        listed = docs(kustomization)[0]["resources"]
        files = {p.name for p in kustomization.parent.glob("*.yaml")} - {"kustomization.yaml"}
        assert {r for r in listed if r.endswith(".yaml")} == files, kustomization
        for entry in (r for r in listed if not r.endswith(".yaml")):
            assert (kustomization.parent / entry / "kustomization.yaml").is_file(), entry


@pytest.mark.parametrize("entry", ["", "podmonitor"])
def test_what_kubectl_apply_k_would_apply_renders_and_validates(entry: str, tmp_path: Path) -> None:
    """`kubectl kustomize` (kustomize v5 inside kubectl) renders each entry point, and what it
    renders (names, namespace, labels and image rewritten) passes the strict check too."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed here: the files themselves are validated by the test above")
    done = subprocess.run([kubectl, "kustomize", str(KUBE / entry)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rendered = [d for d in yaml.safe_load_all(done.stdout) if d]
    kinds = sorted(d["kind"] for d in rendered)
    expected = ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Namespace", "PodDisruptionBudget", "Service"]
    assert kinds == sorted(expected + (["PodMonitor"] if entry else []))
    for d in rendered:
        assert d["kind"] == "Namespace" or d["metadata"]["namespace"] == "ccgate", d["metadata"]
    [deployment] = [d for d in rendered if d["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith("/ccgate:0.1.0")
    out = tmp_path / "rendered.yaml"
    out.write_text(done.stdout)
    check = subprocess.run([validator(), "--strict", "-k", VERSION, str(out)], capture_output=True, text=True)
    assert check.returncode == 0 and "ERROR" not in check.stdout, check.stdout


def validator() -> str:
    return shutil.which("kubernetes-validate") or str(Path(sys.executable).parent / "kubernetes-validate")


def test_the_pieces_agree_with_each_other() -> None:
    deployment, service = resource("Deployment"), resource("Service")
    pdb, hpa, monitor = resource("PodDisruptionBudget"), resource("HorizontalPodAutoscaler"), resource("PodMonitor")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for selector in (service["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    port_names = {p["name"] for p in container()["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in port_names
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in port_names
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    # the autoscaler owns the count (at least 2); a count in the Deployment would reset it at every apply
    assert hpa["spec"]["minReplicas"] >= 2 and "replicas" not in deployment["spec"]
    assert resource("Namespace")["metadata"]["name"] == docs(KUBE / "base" / "kustomization.yaml")[0]["namespace"]
    # the PodMonitor and the Deployment read the metrics token from the same Secret key
    credentials = monitor["spec"]["podMetricsEndpoints"][0]["authorization"]["credentials"]
    assert env_sources()["CCGATE_METRICS_TOKEN"] == (credentials["name"], credentials["key"])


def test_the_container_is_locked_down_and_drains_before_it_is_killed() -> None:
    pod = resource("Deployment")["spec"]["template"]["spec"]
    c = container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    uid = re.search(r"--uid (\d+)", (ROOT / "deploy" / "Dockerfile").read_text())
    assert uid and pod["securityContext"]["runAsUser"] == int(uid[1])
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"requests", "limits"} <= set(c["resources"]) and all(
        {"cpu", "memory"} <= set(c["resources"][k]) for k in ("requests", "limits")
    )
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = plain_env()
    pause = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    stopping = pause + float(env["CCGATE_SHUTDOWN_GRACE"]) + USAGE_DRAIN
    assert pod["terminationGracePeriodSeconds"] > stopping
    # what ccgate writes lives on writable volumes: its state dir and /tmp
    writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
    assert {env["CCGATE_STATE_DIR"], "/tmp"} <= writable
    # the policy is a directory mount (a subPath mount never sees a changed ConfigMap)
    [policy_mount] = [m for m in c["volumeMounts"] if m["name"] == "policy"]
    assert "subPath" not in policy_mount and env["CCGATE_CONFIG"].startswith(policy_mount["mountPath"] + "/")


def plain_env() -> dict[str, str]:
    return {e["name"]: e["value"] for e in container()["env"] if "value" in e}


def env_sources() -> dict[str, tuple[str, str]]:
    return {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container()["env"]
        if "valueFrom" in e
    }


def test_every_variable_is_one_ccgate_reads_and_every_secret_key_is_documented() -> None:
    policy_text = resource("ConfigMap")["data"]["policy.yaml"]
    read = {
        name
        for source in (ROOT / "router").rglob("*.py")
        for name in re.findall(r"\"((?:CCGATE|REDIS)_[A-Z_]+)\"", source.read_text())
    }
    read |= set(re.findall(r"\$\{([A-Z_]+)", policy_text))
    names = [e["name"] for e in container()["env"]]
    assert len(names) == len(set(names))
    assert set(names) <= read, set(names) - read
    readme = (KUBE / "README.md").read_text()
    for name, (secret, key) in env_sources().items():
        assert secret == "ccgate"
        assert f"--from-literal={key}=" in readme, f"README.md does not say how to set {key} ({name})"


def kubelet_mount(folder: Path, files: dict[str, str], generation: int) -> None:
    """Lay out a ConfigMap volume as the kubelet's atomic writer does: the files in a timestamped
    directory, `..data` a symlink to it, each name a symlink through `..data`; an update writes a
    new directory and swaps `..data` with a rename."""
    stamp = folder / f"..2026_12_03_00_00_0{generation}.000000000"
    stamp.mkdir()
    for name, text in files.items():
        (stamp / name).write_text(text)
    new = folder / "..data_tmp"
    new.symlink_to(stamp.name)
    new.rename(folder / "..data")
    for name in files:
        link = folder / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")


def test_the_deployment_runs_as_written_and_reloads_a_changed_configmap(
    tmp_path: Path, logdir: Path, owned, standin: Process
) -> None:
    redis = owned(start_redis(logdir))  # the policy's default key prefix, on a Redis of its own
    mount = tmp_path / "etc-ccgate"
    mount.mkdir()
    policy_text = resource("ConfigMap")["data"]["policy.yaml"]
    kubelet_mount(mount, {"policy.yaml": policy_text}, 1)
    secret = {
        "redis-url": f"redis://127.0.0.1:{redis.port}/0",
        "admin-token": "adm-" + os.urandom(16).hex(),
        "metrics-token": "met-" + os.urandom(16).hex(),
        "anthropic-api-key": "sk-ant-team",
    }
    port = free_port()
    env = {**plain_env(), **{name: secret[key] for name, (_, key) in env_sources().items() if key in secret}}
    env |= {
        "CCGATE_HOST": "127.0.0.1",
        "CCGATE_PORT": str(port),
        "CCGATE_CONFIG": str(mount / "policy.yaml"),
        "CCGATE_STATE_DIR": str(tmp_path / "state"),
        "LOCAL_LLAMA_URL": f"http://127.0.0.1:{free_port()}",  # the GPU pool is away: the cloud answers
        "FALLBACK_URL": standin.url,
    }
    assert Settings.from_env(env).config == str(mount / "policy.yaml")
    gw = owned(Process(f"ccgate-k8s-{port}", container()["args"], port, logdir / f"ccgate-k8s-{port}.log", env))
    gw.start(container()["livenessProbe"]["httpGet"]["path"])
    wait_until(lambda: httpx.get(gw.url + container()["readinessProbe"]["httpGet"]["path"]).status_code == 200, "ready")
    scraped = httpx.get(gw.url + "/metrics", headers={"authorization": f"Bearer {secret['metrics-token']}"})
    assert scraped.status_code == 200 and "ccgate_requests_total" in scraped.text
    assert httpx.get(gw.url + "/metrics").status_code == 401

    made = subprocess.run(
        [sys.executable, "-m", "router.cli", "keys", "add", "alice", "--team", "core"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.splitlines()[-1]
    answer = httpx.post(gw.url + "/v1/messages", json=ask(), headers={"x-api-key": key}, timeout=60)
    assert answer.status_code == 200, answer.text

    # `kubectl apply` of a policy that keeps the box's prompts on the box: the cloud is no longer a target
    changed = policy_text.replace("to: [local, fallback]", "to: [local]")
    assert changed != policy_text and load_policy_text(tmp_path, changed)
    kubelet_mount(mount, {"policy.yaml": changed}, 2)
    wait_until(lambda: "policy reloaded (file changed)" in gw.log.read_text(), "the replica re-reads the policy")
    refused = httpx.post(gw.url + "/v1/messages", json=ask(), headers={"x-api-key": key}, timeout=60)
    assert refused.status_code in (503, 529), refused.text


def load_policy_text(folder: Path, text: str) -> bool:
    path = folder / "check-policy.yaml"
    path.write_text(text)
    return bool(load_policy(path).rules)


def test_the_walkthrough_names_commands_that_exist() -> None:
    text = (KUBE / "README.md").read_text()
    assert "kubectl apply -k deploy/kubernetes" in text
    assert "ANTHROPIC_BASE_URL" in text
    commands = re.findall(r"-- ccgate (\w+)", text)
    assert commands and set(commands) <= {"keys", "usage", "doctor", "serve", "explain"}, commands
