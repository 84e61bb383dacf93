"""Which model families can call tools, as far as llama.cpp runs them (`--jinja` and the model's
own chat template). Used by `ccgate doctor` for its hints and by `capabilities: {tools: auto}`.

Matched against the model's name (its GGUF file name, alias, or the id a server lists), first
match wins, so the more specific patterns come first. A family not listed is not held against
the backend: doctor's probe call is the real test.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    patterns: tuple[str, ...]
    tools: bool
    note: str  # how its calls look, or what to use instead
    marker: str = ""  # a turn marker its own chat template writes: a template without it is another's


FAMILIES: tuple[Family, ...] = (
    Family("Qwen3-Coder", ("*qwen3*coder*",), True, "XML calls (<function=...>); needs --jinja", "<|im_start|>"),
    Family("Qwen2.5-Coder", ("*qwen2.5*coder*",), True, "Hermes <tool_call> JSON; needs --jinja", "<|im_start|>"),
    Family("Qwen 3", ("*qwen3*", "*qwq*"), True, "Hermes <tool_call> JSON; needs --jinja", "<|im_start|>"),
    Family("Qwen 2.5", ("*qwen2.5*", "*qwen2*"), False, "Qwen 2.5 family has no tool calling: use Qwen 3 / Qwen-Coder"),
    Family("gpt-oss", ("*gpt-oss*",), True, "harmony format; needs --jinja"),
    Family("GLM 4.5+", ("*glm-4.5*", "*glm-4.6*", "*glm-4.7*", "*glm4.5*"), True, "needs --jinja"),
    Family(
        "Devstral / Mistral",
        ("*devstral*", "*mistral-small*", "*mistral-nemo*", "*ministral*", "*magistral*", "*codestral*"),
        True,
        "[TOOL_CALLS] format; needs --jinja",
    ),
    Family(
        "Llama 3.1+", ("*llama-3.[123]*", "*llama3.[123]*", "*llama-4*"), True, "JSON / <|python_tag|>; needs --jinja"
    ),
    Family(
        "Llama 3.0", ("*llama-3-*", "*llama3-*", "*meta-llama-3-*"), False, "no tool calling: use Llama 3.1 or later"
    ),
    Family("Llama 2", ("*llama-2*", "*llama2*", "*codellama*"), False, "no tool calling: use Qwen3-Coder or Devstral"),
    Family(
        "Gemma 3",
        ("*gemma-3*", "*gemma3*"),
        True,
        "```tool_code blocks, converted by ccgate's tool guard",
        "<start_of_turn>",
    ),
    Family(
        "Gemma 2", ("*gemma-2*", "*gemma2*"), False, "no tool calling: use Gemma 3 or Qwen3-Coder", "<start_of_turn>"
    ),
    Family("DeepSeek V3 / R1-0528", ("*deepseek-v3*", "*deepseek-r1-0528*"), True, "needs --jinja"),
    Family("DeepSeek Coder", ("*deepseek-coder*",), False, "no tool calling: use Qwen3-Coder or Devstral"),
    Family("Hermes", ("*hermes-2*", "*hermes-3*", "*hermes-4*"), True, "Hermes <tool_call> JSON; needs --jinja"),
    Family("Phi 4 mini", ("*phi-4-mini*",), True, "needs --jinja"),
    Family("Phi 2 / 3", ("*phi-2*", "*phi-3*"), False, "no tool calling: use Qwen3-Coder"),
    Family("Granite 3+", ("*granite-3*", "*granite-4*"), True, "needs --jinja"),
    Family("Kimi K2", ("*kimi-k2*",), True, "needs --jinja"),
)


def family_of(model: str | None) -> Family | None:
    """The family a model name belongs to, or None when the table does not know it."""
    if not model:
        return None
    name = re.split(r"[\\/]", model.lower())[-1]
    for family in FAMILIES:
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in family.patterns):
            return family
    return None


def supports_tools(model: str | None) -> bool | None:
    """True / False when the table knows the model's family, None when it cannot say."""
    family = family_of(model)
    return None if family is None else family.tools
