"""How ccgate reaches a backend in a company network: a private CA (the backend's `ca_file`, or
`SSL_CERT_FILE`), a client certificate, and an egress proxy from `HTTPS_PROXY` / `NO_PROXY`;
requests, health probes and the doctor alike.

Real parts: an HTTPS upstream (tests/harness/conformance_upstream.py with a certificate from a
private CA made by trustme), and proxy.py, a CONNECT proxy with basic auth, in its own process.
The upstream listens on this machine's own address as well as its loopback: a loopback host
never goes through a proxy from the environment (as in Go), so the proxy is tested on the other.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme

from tests.conftest import write_policy
from tests.harness.procs import Process, free_port, listening, start_gateway
from tests.harness.wait import wait_until


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path  # certificate and key in one PEM


def own_address() -> str:
    """An address of this machine's that is not its loopback (from the routes: no packet is sent)."""
    for target in ("203.0.113.1", "10.255.255.255", "198.51.100.1"):  # only the route is looked up
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect((target, 9))
            except OSError:
                continue
            address = probe.getsockname()[0]
            if not address.startswith("127."):
                return address
    raise RuntimeError("this machine has no address but its loopback: the proxy test needs one")


ADDRESS = own_address()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA(organization_name="ccgate test CA")
    server = ca.issue_cert("localhost", "127.0.0.1", ADDRESS)
    client = ca.issue_cert("alice@team.example")
    paths = Pki(folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "client.pem")
    ca.cert_pem.write_to_path(str(paths.ca))
    server.cert_chain_pems[0].write_to_path(str(paths.server_cert))
    server.private_key_pem.write_to_path(str(paths.server_key))
    client.private_key_and_cert_chain_pem.write_to_path(str(paths.client_cert))
    return paths


def start_upstream(logdir: Path, pki: Pki, client_ca: bool = False) -> Process:
    port = free_port()
    args = [sys.executable, "-m", "tests.harness.conformance_upstream", "--port", str(port), "--host", "0.0.0.0"]
    args += ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    args += ["--client-ca", str(pki.ca)] if client_ca else []
    return Process(f"tls-upstream-{port}", args, port, logdir / f"tls-upstream-{port}.log").launch()


@pytest.fixture(scope="module")
def upstream(logdir: Path, pki: Pki) -> Iterator[Process]:
    proc = start_upstream(logdir, pki)
    wait_until(lambda: listening(proc.port), "the HTTPS upstream listens")
    trusting = ssl.create_default_context(cafile=str(pki.ca))
    assert httpx.get(f"https://localhost:{proc.port}/health", verify=trusting, timeout=10).status_code == 200
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def proxy(logdir: Path) -> Iterator[Process]:
    """proxy.py: a CONNECT proxy that wants `user:pw`, logging each tunnel it opens."""
    port = free_port()
    log = logdir / f"proxy-{port}.log"
    args = [sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", str(port)]
    args += ["--basic-auth", "user:pw", "--num-workers", "1", "--num-acceptors", "1", "--log-file", str(log)]
    proc = Process(f"proxy-{port}", args, port, logdir / f"proxy-{port}.out").launch()
    wait_until(lambda: listening(port), "the proxy listens")
    yield proc
    proc.stop()


def tunnels(proxy: Process) -> int:
    """Tunnels the proxy opened and closed again (proxy.py logs one as it ends)."""
    log = proxy.log.with_suffix(".log")
    return log.read_text().count(" - CONNECT ") if log.exists() else 0


@pytest.fixture
def gateway(tmp_path: Path, logdir: Path, owned):
    """`gateway(upstream, env, **backend)`: a ccgate whose one backend is the HTTPS upstream."""

    def start(
        upstream: Process, env: dict[str, str] | None = None, host: str = "localhost", **backend: str
    ) -> tuple[Process, Path]:
        cloud = {"kind": "anthropic", "url": f"https://{host}:{upstream.port}", "api_key": "sk-own", **backend}
        policy = write_policy(tmp_path / f"policy-{free_port()}.yaml", {"cloud": cloud})
        # the lower-case spelling wins where both are set (as for curl): the test sets both
        spelled = {name.lower(): value for name, value in (env or {}).items() if name.endswith("_PROXY")}
        return owned(start_gateway(policy, logdir, {**(env or {}), **spelled})), policy

    return start


def ask(gw: Process, nonce: str) -> httpx.Response:
    body = {"model": "ok", "max_tokens": 16, "messages": [{"role": "user", "content": nonce}]}
    return httpx.post(gw.url + "/v1/messages", json=body, timeout=60)


def text_of(r: httpx.Response) -> str:
    return r.json()["content"][0]["text"] if r.status_code == 200 else r.json()["error"]["message"]


def doctor(policy: Path, env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "router.cli", "doctor", "--config", str(policy), "--json", "--timeout", "30"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    [report] = json.loads(done.stdout)
    return {c["name"]: c for c in report["checks"]}


def test_a_private_ca_from_the_backend_or_the_environment(gateway, upstream: Process, pki: Pki) -> None:
    untrusted, _ = gateway(upstream)
    r = ask(untrusted, "n-untrusted")
    assert r.status_code == 529, r.text
    assert "TLS certificate not trusted" in text_of(r) and "set ca_file or SSL_CERT_FILE" in text_of(r)
    untrusted.stop()

    own, policy = gateway(upstream, ca_file=str(pki.ca))
    r = ask(own, "n-ca-file")
    assert (r.status_code, text_of(r)) == (200, "answer for n-ca-file"), r.text
    checks = doctor(policy, {})
    assert checks["egress"]["detail"] == f"direct; TLS trusting the system's CA store and {pki.ca}"
    assert checks["reachable"]["status"] == "ok", checks

    env = {"SSL_CERT_FILE": str(pki.ca)}
    from_env, _ = gateway(upstream, env=env)
    r = ask(from_env, "n-ssl-cert-file")
    assert (r.status_code, text_of(r)) == (200, "answer for n-ssl-cert-file"), r.text
    ready = httpx.get(from_env.url + "/readyz", timeout=10).json()
    assert ready["backends"]["cloud"]["healthy"], ready


def test_a_client_certificate_when_the_server_asks_for_one(gateway, logdir: Path, pki: Pki) -> None:
    strict = start_upstream(logdir, pki, client_ca=True)
    try:
        wait_until(lambda: listening(strict.port), "the strict upstream listens")
        without, _ = gateway(strict, ca_file=str(pki.ca))
        r = ask(without, "n-no-cert")
        assert r.status_code in (502, 529) and "n-no-cert" not in r.text, r.text
        with_cert, _ = gateway(strict, ca_file=str(pki.ca), client_cert=str(pki.client_cert))
        r = ask(with_cert, "n-cert")
        assert (r.status_code, text_of(r)) == (200, "answer for n-cert"), r.text
    finally:
        strict.stop()


def test_https_proxy_from_the_environment(gateway, upstream: Process, proxy: Process, pki: Pki) -> None:
    via = {"HTTPS_PROXY": f"http://user:pw@127.0.0.1:{proxy.port}"}
    before = tunnels(proxy)
    gw, policy = gateway(upstream, env=via, host=ADDRESS, ca_file=str(pki.ca))
    r = ask(gw, "n-proxied")
    assert (r.status_code, text_of(r)) == (200, "answer for n-proxied"), r.text
    gw.stop()  # its kept-alive tunnels close, and the proxy logs them
    wait_until(lambda: tunnels(proxy) > before, "the proxy logs the gateway's tunnel")
    log = gw.log.read_text()
    assert f"via proxy http://127.0.0.1:{proxy.port}" in log and "user:pw" not in log and ":pw@" not in log

    before = tunnels(proxy)
    checks = doctor(policy, via)  # the doctor goes the same way
    assert checks["egress"]["detail"].startswith(f"via proxy http://127.0.0.1:{proxy.port};"), checks
    assert checks["reachable"]["status"] == "ok", checks
    wait_until(lambda: tunnels(proxy) > before, "the proxy logs the doctor's tunnel")

    wrong = {"HTTPS_PROXY": f"http://user:nope@127.0.0.1:{proxy.port}"}
    refused, _ = gateway(upstream, env=wrong, host=ADDRESS, ca_file=str(pki.ca))
    r = ask(refused, "n-wrong-proxy-password")
    assert r.status_code == 529 and "the proxy refused the connection (HTTP 407" in text_of(r), r.text
    assert "nope" not in r.text and "nope" not in refused.log.read_text()

    for bypass, host in (({**via, "NO_PROXY": ADDRESS}, ADDRESS), (via, "localhost")):  # NO_PROXY; loopback
        direct, _ = gateway(upstream, env=bypass, host=host, ca_file=str(pki.ca))
        r = ask(direct, f"n-direct-{host}")
        assert (r.status_code, text_of(r)) == (200, f"answer for n-direct-{host}"), r.text
        line = f"backend cloud: anthropic/anthropic at https://{host}:{upstream.port}, direct,"
        assert line in direct.log.read_text()


def test_a_proxy_named_in_the_policy_is_used_for_any_host(gateway, upstream: Process, proxy: Process, pki: Pki):
    forced = f"http://user:pw@127.0.0.1:{proxy.port}"
    before = tunnels(proxy)
    gw, _ = gateway(upstream, ca_file=str(pki.ca), proxy=forced)
    r = ask(gw, "n-forced")
    assert (r.status_code, text_of(r)) == (200, "answer for n-forced"), r.text
    gw.stop()
    wait_until(lambda: tunnels(proxy) > before, "the proxy logs the gateway's tunnel")
    assert "pw" not in gw.log.read_text().replace("pwd", "")
