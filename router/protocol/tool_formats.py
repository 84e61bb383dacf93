"""The formats local models write tool calls in, when they reach ccgate as text (pure).

One entry per format: the markers that open it, and a parser that reads the calls from text
starting at such a marker. The reference is llama.cpp's own chat parsers (common/chat*.cpp,
common/parsers/) and the chat templates of each family. Adding a family is an entry here and a
corpus file in tests/unit/tool_corpus/.

Reasoning sections some families write around their calls (`<think>`, Command R's thinking,
gpt-oss's analysis channel, ...) become thinking, never text; wrappers and channel headers never
reach the client.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from router.protocol.tool_syntax import (
    TextCall,
    decode_object,
    json_prefix,
    known,
    named_calls,
    python_calls,
    split_top_level,
    strip_one_newline,
)


@dataclass(slots=True)
class Parsed:
    """What a format's parser read from text that starts with one of its markers."""

    calls: list[TextCall]
    end: int  # characters consumed
    thinking: list[str] = field(default_factory=list)
    text: str = ""  # answer text the markup wrapped (gpt-oss's final channel)


Parser = Callable[[str, Collection[str]], Parsed]


@dataclass(frozen=True, slots=True)
class Format:
    name: str
    openers: tuple[str, ...]
    parse: Parser
    # strong: the marker is never prose, so a marker without a readable call is an unusable call;
    # weak: `>>>`, `functools[`, ... can be prose too, and then they are just text
    strong: bool = True


# Reasoning written as text: (opening, closing) pairs, taken out as thinking wherever they are.
REASONING = (
    ("<think>", "</think>"),
    ("<seed:think>", "</seed:think>"),
    ("<|START_THINKING|>", "<|END_THINKING|>"),
    ("<|inner_prefix|>", "<|inner_suffix|>"),
    ("[THINK]", "[/THINK]"),
)
# Markup that wraps an answer and says nothing itself.
WRAPPERS = ("<|START_RESPONSE|>", "<|END_RESPONSE|>")


def _until(text: str, closing: str, start: int = 0) -> tuple[str, int]:
    """The text up to `closing` (or to the end, cut off) and where what follows it starts."""
    at = text.find(closing, start)
    return (text[start:], len(text)) if at < 0 else (text[start:at], at + len(closing))


# Hermes / Qwen (`<tool_call>{json}</tool_call>`), and what travels inside the same tags:
# Qwen3-Coder's `<function=...>` and GLM 4.5's `Name <arg_key>k</arg_key><arg_value>v</arg_value>`.

_ARG_PAIR = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)(?:</arg_value>|$)", re.S)


def _hermes(text: str, tools: Collection[str]) -> Parsed:
    calls: list[TextCall] = []
    end = 0
    for match in re.finditer(r"<tool_call>(.*?)(?:</tool_call>|$)", text, re.S):
        if text[end : match.start()].strip():
            break  # prose between calls: the calls so far are the answer, the rest is text
        body = match.group(1).strip()
        if body.startswith("<function="):
            calls += _functions(body, tools).calls
        elif "<arg_key>" in body or re.fullmatch(r"[\w.-]+", body):
            name, _, pairs = body.partition("<arg_key>")
            arguments = {k.strip(): strip_one_newline(v) for k, v in _ARG_PAIR.findall("<arg_key>" + pairs)}
            if re.fullmatch(r"[\w.-]+", name.strip()):
                calls.append(TextCall(name.strip(), arguments, "glm"))
        else:
            calls += named_calls(decode_object(body), "hermes", require_arguments=False)
        end = match.end()
    return Parsed(calls, end)


# Qwen3-Coder, Llama 3.1, Functionary v3.1: `<function=Name><parameter=p>v</parameter></function>`
# or `<function=Name>{json}</function>`.

_FUNCTION = re.compile(r"<function=([^>\s]+)>(.*?)(?:</function>|$)", re.S)
_PARAMETER = re.compile(r"<parameter=([^>\s]+)>(.*?)(?:</parameter>|(?=<parameter=)|(?=</function>)|$)", re.S)


def _functions(text: str, tools: Collection[str]) -> Parsed:
    calls: list[TextCall] = []
    end = 0
    for match in _FUNCTION.finditer(text):
        if text[end : match.start()].replace("</tool_call>", "").replace("<tool_call>", "").strip():
            break
        name, body = match.group(1), match.group(2)
        if "<parameter=" in body:
            params = {key: strip_one_newline(value) for key, value in _PARAMETER.findall(body)}
            calls.append(TextCall(name, params, "qwen3-coder"))
        else:
            calls.append(TextCall(name, body.strip(), "llama3-function"))
        end = match.end()
    closing = re.match(r"\s*</tool_call>", text[end:])
    return Parsed(calls, end + (closing.end() if closing else 0))


# Mistral / Devstral / Magistral: `[TOOL_CALLS][{json}...]` or `[TOOL_CALLS]Name[ARGS]{json}`.

_MISTRAL_NAMED = re.compile(r"\s*([A-Za-z_][\w.-]*)\s*(?:\[CALL_ID\]\s*\S+?\s*)?\[ARGS\]", re.S)


def _mistral(text: str, tools: Collection[str]) -> Parsed:
    calls: list[TextCall] = []
    pos = 0
    while text.startswith("[TOOL_CALLS]", pos):
        pos += len("[TOOL_CALLS]")
        named = _MISTRAL_NAMED.match(text, pos)
        if named:
            arguments, pos = json_prefix(text, named.end())
            calls.append(TextCall(named.group(1), arguments, "mistral"))
        else:
            value, pos = json_prefix(text, pos)
            calls += named_calls(decode_object(value), "mistral", require_arguments=False)
        following = len(text) - len(text[pos:].lstrip())
        if text.startswith("[TOOL_CALLS]", following):
            pos = following
    return Parsed(calls, pos)


# Llama 3: `<|python_tag|>{json}` or Python call syntax, several joined by `;`.


def _python_tag(text: str, tools: Collection[str]) -> Parsed:
    body = text[len("<|python_tag|>") :]
    end_tag = re.search(r"<\|eom_id\|>|<\|eot_id\|>", body)
    body = body[: end_tag.start()] if end_tag else body
    calls: list[TextCall] = []
    for part in split_top_level(body, ";"):
        part = part.strip()
        if not part:
            continue
        if part.startswith("{"):
            calls += named_calls(decode_object(part), "llama3", require_arguments=False)
        else:
            calls += python_calls(part, tools, format="llama3")
    return Parsed(calls, len("<|python_tag|>") + (end_tag.end() if end_tag else len(body)))


def _json_between(opener: str, closing: str | None, format: str) -> Parser:
    """A JSON call or list of calls after `opener`, up to `closing` (or the end of the JSON)."""

    def parse(text: str, tools: Collection[str]) -> Parsed:
        start = len(opener)
        if closing is not None and closing in text:
            body, end = _until(text, closing, start)
        else:
            body, end = json_prefix(text, start)
        return Parsed(named_calls(decode_object(body.strip()), format, require_arguments=False), end)

    return parse


# gpt-oss (harmony): messages on channels; `commentary to=functions.Name` carries a call, the
# analysis channel is reasoning, the final channel is the answer.

_HARMONY = re.compile(
    r"(?:<\|start\|>\s*(?:assistant)?)?\s*(?:to=functions\.(?P<pre>[\w.-]+)\s*)?"
    r"<\|channel\|>\s*(?P<channel>\w+)(?:\s+to=functions\.(?P<post>[\w.-]+))?"
    r"(?:\s*<\|constrain\|>\s*\w+)?\s*(?:json)?\s*<\|message\|>(?P<body>.*?)"
    r"(?P<stop><\|end\|>|<\|call\|>|<\|return\|>|(?=<\|start\|>)|(?=<\|channel\|>)|$)",
    re.S,
)


def _harmony(text: str, tools: Collection[str]) -> Parsed:
    parsed = Parsed([], 0)
    pos = 0
    while True:
        match = _HARMONY.match(text, pos)
        if match is None or match.end() == pos:
            break
        name = match.group("pre") or match.group("post")
        body = match.group("body")
        if name:
            parsed.calls.append(TextCall(name, body.strip(), "gpt-oss"))
        elif match.group("channel") == "analysis":
            parsed.thinking.append(body.strip())
        else:  # final, or commentary addressed to nobody: what the user reads
            parsed.text += body
        pos = match.end()
        following = len(text) - len(text[pos:].lstrip())
        if not text.startswith(("<|start|>", "<|channel|>", "to=functions."), following):
            break
        pos = following
    parsed.end = pos
    return parsed


# Kimi K2: `<|tool_calls_section_begin|><|tool_call_begin|>functions.Name:0
# <|tool_call_argument_begin|>{json}<|tool_call_end|><|tool_calls_section_end|>`.

_KIMI_CALL = re.compile(
    r"<\|tool_call_begin\|>\s*(?:functions\.)?([\w.-]+?)(?::\d+)?\s*<\|tool_call_argument_begin\|>(.*?)"
    r"(?:<\|tool_call_end\|>|$)",
    re.S,
)


def _kimi(text: str, tools: Collection[str]) -> Parsed:
    body, end = _until(text, "<|tool_calls_section_end|>")
    calls = [TextCall(name, arguments.strip(), "kimi-k2") for name, arguments in _KIMI_CALL.findall(body)]
    return Parsed(calls, end)


# DeepSeek R1: `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>Name\n```json\n{json}\n```
# <｜tool▁call▁end｜><｜tool▁calls▁end｜>`; V3.1: `<｜tool▁call▁begin｜>Name<｜tool▁sep｜>{json}<｜tool▁call▁end｜>`.

_DEEPSEEK_CALL = re.compile(
    r"<｜tool▁call▁begin｜>\s*(?:function\s*<｜tool▁sep｜>\s*(?P<r1>[\w.-]+)\s*```(?:json)?\s*(?P<r1args>.*?)\s*```"
    r"|(?P<v3>[\w.-]+)\s*<｜tool▁sep｜>\s*(?P<v3args>.*?))\s*(?:<｜tool▁call▁end｜>|$)",
    re.S,
)


def _deepseek(text: str, tools: Collection[str]) -> Parsed:
    body, end = _until(text, "<｜tool▁calls▁end｜>")
    calls = [
        TextCall(m.group("r1") or m.group("v3"), (m.group("r1args") or m.group("v3args") or "").strip(), "deepseek")
        for m in _DEEPSEEK_CALL.finditer(body)
    ]
    return Parsed(calls, end)


# MiniMax M2: `<minimax:tool_call><invoke name="Name"><parameter name="p">v</parameter></invoke>
# </minimax:tool_call>`.

_INVOKE = re.compile(r"<invoke\s+name=\"([^\"]+)\"\s*>(.*?)(?:</invoke>|$)", re.S)
_NAMED_PARAMETER = re.compile(r"<parameter\s+name=\"([^\"]+)\"\s*>(.*?)(?:</parameter>|$)", re.S)


def _minimax(text: str, tools: Collection[str]) -> Parsed:
    body, end = _until(text, "</minimax:tool_call>")
    calls = [
        TextCall(name, {k: strip_one_newline(v) for k, v in _NAMED_PARAMETER.findall(inner)}, "minimax-m2")
        for name, inner in _INVOKE.findall(body)
    ]
    return Parsed(calls, end)


# Seed-OSS: `<seed:tool_call><function=Name><parameter=p>v</parameter></function></seed:tool_call>`.


def _seed(text: str, tools: Collection[str]) -> Parsed:
    body, end = _until(text, "</seed:tool_call>", len("<seed:tool_call>"))
    body = body.strip()
    return Parsed(_functions(body, tools).calls if body.startswith("<function=") else [], end)


# Command R7B: `<|START_ACTION|>[{"tool_call_id": "0", "tool_name": "Name", "parameters": {...}}]<|END_ACTION|>`.
# Granite 3: `<|tool_call|>[{"name": ..., "arguments": ...}]`; Phi-4 adds `<|/tool_call|>`.
# Nemotron v2: `<TOOLCALL>[...]</TOOLCALL>`. Qwen2.5-Coder: `<tools>{json}</tools>`.
# Firefunction v2: `functools[{...}]`.


def _granite_or_phi(text: str, tools: Collection[str]) -> Parsed:
    closing = "<|/tool_call|>" if "<|/tool_call|>" in text else None
    return _json_between("<|tool_call|>", closing, "granite/phi-4")(text, tools)


# LFM2: `<|tool_call_start|>[Name(p="v"), Other(q=1)]<|tool_call_end|>`.


def _lfm2(text: str, tools: Collection[str]) -> Parsed:
    body, end = _until(text, "<|tool_call_end|>", len("<|tool_call_start|>"))
    body = body.strip()
    try:
        node = ast.parse(body, mode="eval").body
    except SyntaxError:
        return Parsed([], end)
    items = node.elts if isinstance(node, ast.List | ast.Tuple) else [node]
    calls: list[TextCall] = []
    for item in items:
        found = python_calls(ast.unparse(item), tools, format="lfm2")
        if not found:
            return Parsed([], end)
        calls += found
    return Parsed(calls, end)


# Apertus: `<|tools_prefix|>[{"Name": {args}}]<|tools_suffix|>`.


def _apertus(text: str, tools: Collection[str]) -> Parsed:
    body, end = _until(text, "<|tools_suffix|>", len("<|tools_prefix|>"))
    value, repaired = decode_object(body.strip())
    items = value if isinstance(value, list) else [value]
    calls: list[TextCall] = []
    for item in items:
        if not isinstance(item, dict) or len(item) != 1:
            return Parsed([], end)
        [(name, arguments)] = item.items()
        if not isinstance(arguments, dict | str):
            return Parsed([], end)
        calls.append(TextCall(str(name), arguments, "apertus", repaired))
    return Parsed(calls, end)


# Functionary v3.2: `>>>Name\n{json}` (several in a row; `>>>all\ntext` is prose).

_FUNCTIONARY = re.compile(r">>>\s*([\w.-]+)\s*\n", re.S)


def _functionary(text: str, tools: Collection[str]) -> Parsed:
    parsed = Parsed([], 0)
    pos = 0
    while True:
        match = _FUNCTIONARY.match(text, pos)
        if match is None:
            break
        name = match.group(1)
        if name == "all":
            following = text.find(">>>", match.end())
            parsed.text += text[match.end() : following if following >= 0 else len(text)]
            pos = following if following >= 0 else len(text)
            continue
        if not known(name, tools):
            break
        arguments, pos = json_prefix(text, match.end())
        parsed.calls.append(TextCall(name, arguments, "functionary"))
        pos = len(text) - len(text[pos:].lstrip())
    parsed.end = pos
    return parsed


FORMATS: tuple[Format, ...] = (
    Format("hermes", ("<tool_call>",), _hermes),
    Format("qwen3-coder", ("<function=",), _functions),
    Format("mistral", ("[TOOL_CALLS]",), _mistral),
    Format("llama3", ("<|python_tag|>",), _python_tag),
    Format("gpt-oss", ("<|channel|>", "<|start|>"), _harmony),
    Format("kimi-k2", ("<|tool_calls_section_begin|>", "<|tool_call_begin|>"), _kimi),
    Format("deepseek", ("<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>"), _deepseek),
    Format("minimax-m2", ("<minimax:tool_call>",), _minimax),
    Format("seed-oss", ("<seed:tool_call>",), _seed),
    Format("command-r7b", ("<|START_ACTION|>",), _json_between("<|START_ACTION|>", "<|END_ACTION|>", "command-r7b")),
    Format("granite/phi-4", ("<|tool_call|>",), _granite_or_phi),
    Format("nemotron", ("<TOOLCALL>",), _json_between("<TOOLCALL>", "</TOOLCALL>", "nemotron")),
    Format("lfm2", ("<|tool_call_start|>",), _lfm2),
    Format("apertus", ("<|tools_prefix|>",), _apertus),
    Format("qwen2.5-coder", ("<tools>",), _json_between("<tools>", "</tools>", "qwen2.5-coder")),
    Format("functionary", (">>>",), _functionary, strong=False),
    Format("firefunction", ("functools[",), _json_between("functools", None, "firefunction"), strong=False),
)
