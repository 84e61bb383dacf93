"""The model family table, and `capabilities: {tools: auto}` deciding by it."""

from __future__ import annotations

import pytest

from router.policy.engine import Engine
from router.policy.features import Features
from router.policy.loader import parse_policy
from router.policy.model_families import family_of, supports_tools
from router.policy.snapshot import BackendSnapshot


@pytest.mark.parametrize(
    ("model", "family", "tools"),
    [
        ("/models/Qwen3-Coder-30B-A3B-Instruct-Q4_K_M.gguf", "Qwen3-Coder", True),
        ("qwen2.5-coder-7b-instruct-q8_0.gguf", "Qwen2.5-Coder", True),
        ("Qwen2.5-7B-Instruct-Q4_K_M.gguf", "Qwen 2.5", False),
        ("Qwen3-8B-Q4_K_M.gguf", "Qwen 3", True),
        ("Devstral-Small-2507-Q4_K_M.gguf", "Devstral / Mistral", True),
        ("Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", "Llama 3.1+", True),
        ("Meta-Llama-3-8B-Instruct.Q4_K_M.gguf", "Llama 3.0", False),
        ("gemma-3-12b-it-Q4_K_M.gguf", "Gemma 3", True),
        ("C:\\models\\gpt-oss-20b-mxfp4.gguf", "gpt-oss", True),
    ],
)
def test_families(model: str, family: str, tools: bool) -> None:
    found = family_of(model)
    assert found is not None and found.name == family and found.tools is tools


def test_unknown_models_are_not_judged() -> None:
    assert family_of("my-finetune.gguf") is None and supports_tools("my-finetune.gguf") is None
    assert supports_tools(None) is None


POLICY = """
backends:
  local: {kind: llamacpp, url: "http://a", capabilities: {tools: auto}}
  cloud: {kind: anthropic, url: "http://b"}
rules:
  - name: default
    to: [local, cloud]
"""


@pytest.mark.parametrize(
    ("model", "tool_count", "candidates"),
    [
        ("Qwen2.5-7B-Instruct-Q4_K_M.gguf", 18, ("cloud",)),
        ("Qwen2.5-7B-Instruct-Q4_K_M.gguf", 0, ("local", "cloud")),
        ("Qwen3-Coder-30B-A3B-Instruct-Q4_K_M.gguf", 18, ("local", "cloud")),
        (None, 18, ("local", "cloud")),
    ],
)
def test_tools_auto(model: str | None, tool_count: int, candidates: tuple[str, ...]) -> None:
    engine = Engine(parse_policy(POLICY, "p.yaml", {}))
    decision = engine.decide(
        Features(tokens=1000, model="claude-opus-4-8", tool_count=tool_count), {"local": BackendSnapshot(model=model)}
    )
    assert decision.candidates == candidates
    if candidates == ("cloud",):
        assert decision.skipped["local"] == "no tool support (Qwen 2.5)"


def test_a_family_is_known_by_its_template_when_the_file_name_says_nothing() -> None:
    from router.policy.model_families import family_of_template

    assert family_of_template("...<|channel|>commentary...").name == "gpt-oss"  # type: ignore[union-attr]
    assert family_of_template("{% if tools %}<minimax:tool_call>{% endif %}").name == "MiniMax M2"  # type: ignore[union-attr]
    assert family_of_template("<|im_start|>{{ message.content }}<|im_end|>") is None


@pytest.mark.parametrize(
    ("file", "family"),
    [
        ("gpt-oss-20b-mxfp4.gguf", "gpt-oss"),
        ("Kimi-K2-Instruct-Q4_K_M.gguf", "Kimi K2"),
        ("GLM-4.6-Q4_K_M.gguf", "GLM 4.5+"),
        ("DeepSeek-R1-0528-Qwen3-8B-Q4_K_M.gguf", "DeepSeek R1"),
        ("MiniMax-M2-Q4_K_M.gguf", "MiniMax M2"),
        ("Seed-OSS-36B-Instruct-Q4_K_M.gguf", "Seed-OSS"),
        ("c4ai-command-r7b-12-2024-Q4_K_M.gguf", "Command R7B"),
        ("granite-3.3-8b-instruct-Q4_K_M.gguf", "Granite 3+"),
        ("phi-4-mini-instruct-Q4_K_M.gguf", "Phi 4"),
        ("NVIDIA-Nemotron-Nano-9B-v2-Q4_K_M.gguf", "Nemotron"),
        ("LFM2-1.2B-Q4_K_M.gguf", "LFM2"),
        ("Apertus-8B-Instruct-2509-Q4_K_M.gguf", "Apertus"),
        ("functionary-small-v3.2-Q4_K_M.gguf", "Functionary"),
        ("firefunction-v2-Q4_K_M.gguf", "Firefunction"),
        ("Magistral-Small-2509-Q4_K_M.gguf", "Magistral"),
    ],
)
def test_the_families_of_2026(file: str, family: str) -> None:
    found = family_of(file)
    assert found is not None and found.name == family and found.tools
    assert "--jinja" in found.note or "guard" in found.note


def test_sliding_window_families_are_marked() -> None:
    """The doctor warns that these reuse a restored slot file only with llama-server's --swa-full."""
    for model in ("gemma-3-270m-it-Q4_K_M.gguf", "gpt-oss-20b-mxfp4.gguf", "gemma-2-9b.gguf"):
        family = family_of(model)
        assert family is not None and family.sliding_window, model
    for model in ("Qwen3-Coder-30B-A3B-Instruct-Q4_K_M.gguf", "Devstral-Small-2507.gguf"):
        family = family_of(model)
        assert family is not None and not family.sliding_window, model
