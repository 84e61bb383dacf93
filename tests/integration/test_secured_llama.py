"""llama-server with --api-key leaves only /health open: ccgate's probes must send the backend's
key, or say plainly that they cannot (slots, context and load unknown, so no slot pinning)."""

from __future__ import annotations

import httpx

from tests.harness.wait import wait_until
from tests.integration.test_passthrough import ask


def local_state(gw_url: str) -> dict:
    return httpx.get(gw_url + "/readyz", timeout=10).json()["backends"]["local"]


def test_probes_use_the_backends_key(start_ccgate, start_llama_server) -> None:
    secured = start_llama_server("tool", "-np", "2", "--metrics", "--api-key", "sk-local-llama-key")
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": secured.url, "api_key": "sk-local-llama-key"}})
    state = wait_until(lambda: (s := local_state(gw.url))["slots"] == 2 and s, "ccgate read /props with the key")
    assert state["detail"] == "up"
    r = httpx.post(gw.url + "/v1/messages", json=ask(), timeout=60)
    assert r.status_code == 200 and r.headers["x-ccgate-slot"] in ("0", "1")  # pinned: the slots are known


def test_a_refused_probe_is_reported_not_ignored(start_ccgate, start_llama_server) -> None:
    secured = start_llama_server("tool", "-np", "2", "--metrics", "--api-key", "sk-local-llama-key")
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": secured.url, "api_key": "sk-WRONG-key"}})
    state = local_state(gw.url)
    assert state["slots"] is None
    assert state["detail"].startswith("up, but /props refused the configured api_key"), state
    assert "sk-WRONG" not in str(state)
