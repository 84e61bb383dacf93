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
    signature: str = ""  # what its own chat template writes and no other's: found in /props, it names the family
    # Sliding-window attention: llama-server reuses a restored slot file only with --swa-full
    sliding_window: bool = False


TEMPLATES = "llama.cpp's models/templates/"  # where its tested chat templates live (in its source tree)

FAMILIES: tuple[Family, ...] = (
    # distilled DeepSeek R1 models (on Qwen or Llama) write DeepSeek's format: before Qwen and Llama
    Family(
        "DeepSeek R1",
        ("*deepseek-r1*",),
        True,
        f"full-width <｜tool▁call▁begin｜> markers; its own template has no tools: --jinja "
        f"--chat-template-file {TEMPLATES}llama-cpp-deepseek-r1.jinja --reasoning-format deepseek",
        signature="<｜tool▁calls▁begin｜>",
    ),
    Family("Qwen3-Coder", ("*qwen3*coder*",), True, "XML calls (<function=...>); needs --jinja", "<|im_start|>"),
    Family(
        "Qwen2.5-Coder",
        ("*qwen2.5*coder*",),
        True,
        "writes its calls in <tools> tags or a bare ```json fence, which no server parses; ccgate's guard "
        "converts them; better: Qwen3-Coder",
        "<|im_start|>",
    ),
    Family("Qwen 3", ("*qwen3*", "*qwq*"), True, "Hermes <tool_call> JSON; needs --jinja", "<|im_start|>"),
    Family("Qwen 2.5", ("*qwen2.5*", "*qwen2*"), False, "Qwen 2.5 family has no tool calling: use Qwen 3 / Qwen-Coder"),
    Family(
        "gpt-oss",
        ("*gpt-oss*",),
        True,
        "harmony channels (commentary to=functions.NAME); needs --jinja with its own template "
        f"({TEMPLATES}openai-gpt-oss-120b.jinja) and --reasoning-format auto",
        signature="<|channel|>",
        sliding_window=True,
    ),
    Family(
        "GLM 4.5+",
        ("*glm-4.5*", "*glm-4.6*", "*glm-4.7*", "*glm4.5*"),
        True,
        f"<arg_key>/<arg_value> calls; needs --jinja (--chat-template-file {TEMPLATES}GLM-4.6.jinja)",
        signature="<arg_key>",
    ),
    Family(
        "Magistral",
        ("*magistral*",),
        True,
        "[THINK] reasoning and [TOOL_CALLS] calls; needs --jinja",
    ),
    Family(
        "Devstral / Mistral",
        ("*devstral*", "*mistral-small*", "*mistral-nemo*", "*ministral*", "*codestral*"),
        True,
        f"[TOOL_CALLS] format; needs --jinja ({TEMPLATES}unsloth-mistral-Devstral-Small-2507.jinja)",
        signature="[TOOL_CALLS]",
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
        sliding_window=True,
    ),
    Family(
        "Gemma 2",
        ("*gemma-2*", "*gemma2*"),
        False,
        "no tool calling: use Gemma 3 or Qwen3-Coder",
        "<start_of_turn>",
        sliding_window=True,
    ),
    Family(
        "DeepSeek V3.1+",
        ("*deepseek-v3*",),
        True,
        f"full-width markers; needs --jinja ({TEMPLATES}deepseek-ai-DeepSeek-V3.1.jinja)",
    ),
    Family("DeepSeek Coder", ("*deepseek-coder*",), False, "no tool calling: use Qwen3-Coder or Devstral"),
    Family(
        "Kimi K2",
        ("*kimi-k2*",),
        True,
        f"tool-calls sections; needs --jinja ({TEMPLATES}moonshotai-Kimi-K2.jinja)",
        signature="<|tool_calls_section_begin|>",
    ),
    Family(
        "MiniMax M2",
        ("*minimax-m2*", "*minimax-m1*"),
        True,
        f"<invoke> calls; needs --jinja ({TEMPLATES}MiniMax-M2.jinja)",
        signature="<minimax:tool_call>",
    ),
    Family(
        "Seed-OSS",
        ("*seed-oss*",),
        True,
        f"<seed:tool_call> calls, <seed:think> reasoning; needs --jinja ({TEMPLATES}ByteDance-Seed-OSS.jinja)",
        signature="<seed:tool_call>",
    ),
    Family(
        "Command R7B",
        ("*command-r7b*", "*c4ai-command-r*"),
        True,
        "action blocks; needs --jinja --chat-template-file "
        f"{TEMPLATES}CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja",
        signature="<|START_ACTION|>",
    ),
    Family(
        "Granite 3+",
        ("*granite-3*", "*granite-4*"),
        True,
        f"<|tool_call|> lists; needs --jinja ({TEMPLATES}ibm-granite-granite-3.3-2B-Instruct.jinja)",
        signature="<|tool_call|>",
    ),
    Family("Phi 4", ("*phi-4*",), True, "<|tool_call|> lists; needs --jinja with its own template"),
    Family("Phi 2 / 3", ("*phi-2*", "*phi-3*"), False, "no tool calling: use Qwen3-Coder"),
    Family(
        "Nemotron",
        ("*nemotron*",),
        True,
        f"<TOOLCALL> lists; needs --jinja ({TEMPLATES}NVIDIA-Nemotron-Nano-v2.jinja)",
        signature="<TOOLCALL>",
    ),
    Family(
        "LFM2",
        ("*lfm2*",),
        True,
        f"Python call lists in <|tool_call_start|>; needs --jinja ({TEMPLATES}LFM2-8B-A1B.jinja)",
        signature="<|tool_call_start|>",
    ),
    Family(
        "Apertus",
        ("*apertus*",),
        True,
        f"<|tools_prefix|> lists; needs --jinja ({TEMPLATES}Apertus-8B-Instruct.jinja)",
        signature="<|tools_prefix|>",
    ),
    Family(
        "Functionary",
        ("*functionary*",),
        True,
        f"v3.2 writes >>>NAME calls; needs --jinja ({TEMPLATES}meetkai-functionary-medium-v3.2.jinja)",
        signature=">>>",
    ),
    Family(
        "Firefunction",
        ("*firefunction*",),
        True,
        f"functools[...] lists; needs --jinja ({TEMPLATES}fireworks-ai-llama-3-firefunction-v2.jinja)",
        signature="functools[",
    ),
    Family("Hermes", ("*hermes-2*", "*hermes-3*", "*hermes-4*"), True, "Hermes <tool_call> JSON; needs --jinja"),
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


def family_of_template(template: str | None) -> Family | None:
    """The family whose own chat template this is, by what only it writes (for GGUFs whose name says nothing)."""
    if not template:
        return None
    return next((f for f in FAMILIES if f.signature and f.signature in template), None)


def supports_tools(model: str | None) -> bool | None:
    """True / False when the table knows the model's family, None when it cannot say."""
    family = family_of(model)
    return None if family is None else family.tools
