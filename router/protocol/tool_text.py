"""Tool calls that a model wrote as text instead of structured calls, in the formats seen in the wild.

The formats, one table (protocol/tool_formats): Hermes / Qwen `<tool_call>`, Qwen3-Coder and
Llama 3.1 `<function=...>`, GLM 4.5/4.6 `<arg_key>` pairs, Mistral / Devstral / Magistral
`[TOOL_CALLS]`, Llama 3 `<|python_tag|>`, gpt-oss's harmony channels, Kimi K2's sections,
DeepSeek R1 / V3.1's full-width markers, MiniMax M2 `<invoke>`, Seed-OSS, Command R7B's action
block, Granite and Phi-4 `<|tool_call|>`, Nemotron `<TOOLCALL>`, LFM2's call list, Apertus,
Qwen2.5-Coder `<tools>`, Functionary v3.2 `>>>`, Firefunction `functools[`; and, outside the
table, Gemma's ```` ```tool_code ```` block of Python calls and a JSON object (or array) naming an
offered tool, in a fence or as the whole text. Reasoning written as text around them (`<think>`,
...) becomes thinking.

`extract` finds them; `hold_from` tells a stream which part of the text so far may still turn
out to be a call (or markup) and must be held back.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field

from router.protocol.tool_check import ToolCallError
from router.protocol.tool_formats import FORMATS, REASONING, WRAPPERS, Format
from router.protocol.tool_syntax import TextCall, json_calls, python_calls

FENCE = "```"
CALL_FENCES = ("tool_code", "tool_call", "json", "")  # fence languages that may hold a call
LINE_START_ONLY = (">>>",)  # markers that only open a call at the start of a line
OPENERS: dict[str, Format] = {opener: f for f in FORMATS for opener in f.openers}
TAG_MARKERS = tuple(OPENERS) + tuple(o for o, _ in REASONING) + WRAPPERS
_PREFIXES = frozenset(m[:k] for m in (*TAG_MARKERS, FENCE) for k in range(1, len(m)))
_FIRST_CHARS = frozenset(m[0] for m in (*TAG_MARKERS, FENCE))
_LONGEST = max(len(m) for m in TAG_MARKERS)

__all__ = ["Extraction", "TextCall", "extract", "hold_from"]


@dataclass(slots=True)
class Extraction:
    before: str
    calls: list[TextCall] = field(default_factory=list)
    after: str = ""
    thinking: list[str] = field(default_factory=list)  # reasoning written as text, in order


def extract(text: str, tools: Collection[str]) -> Extraction | None:
    """The calls written in `text`, with the prose around them; None when it holds no call and
    no markup. A marker that announces a call (`<tool_call>`, `[TOOL_CALLS]`, ...) but does not
    hold a readable one raises ToolCallError; JSON that does not name an offered tool is just text.
    """
    thinking: list[str] = []
    cleaned = _without_reasoning(text, thinking)
    found = _tagged(cleaned, tools) or _fenced(cleaned, tools)
    if found is not None:
        found.thinking = thinking + found.thinking
        return found
    if cleaned != text:  # reasoning or wrappers, and no call: the answer without its markup
        return Extraction(cleaned, [], "", thinking)
    return None


def _without_reasoning(text: str, thinking: list[str]) -> str:
    if not any(m in text for m, _ in REASONING) and not any(w in text for w in WRAPPERS):
        return text
    for opening, closing in REASONING:
        while opening in text:
            at = text.find(opening)
            inner, end = _section(text, at + len(opening), closing)
            if inner.strip():
                thinking.append(inner.strip())
            text = text[:at] + text[end:].lstrip("\n") if end < len(text) else text[:at]
    for wrapper in WRAPPERS:
        text = text.replace(wrapper, "")
    return text


def _section(text: str, start: int, closing: str) -> tuple[str, int]:
    at = text.find(closing, start)
    return (text[start:], len(text)) if at < 0 else (text[start:at], at + len(closing))


def _tagged(text: str, tools: Collection[str]) -> Extraction | None:
    for at, marker in _openers_in(text):
        form = OPENERS[marker]
        parsed = form.parse(text[at:], tools)
        if parsed.calls or parsed.thinking or parsed.text:
            return Extraction(text[:at], parsed.calls, parsed.text + text[at + parsed.end :], parsed.thinking)
        if form.strong:
            raise ToolCallError("unparsable", f"{marker} without a readable call: {text[at : at + 120]!r}")
    return None


def _openers_in(text: str) -> list[tuple[int, str]]:
    """Every opener in `text`, first first (a weak one that is prose gives way to the next)."""
    found = []
    for marker in OPENERS:
        at = text.find(marker)
        while at >= 0:
            if marker not in LINE_START_ONLY or at == 0 or text[at - 1] == "\n":
                found.append((at, marker))
                break
            at = text.find(marker, at + 1)
    return sorted(found)


def _fenced(text: str, tools: Collection[str]) -> Extraction | None:
    for match in re.finditer(r"```([\w-]*)[ \t]*\n(.*?)(?:```|$)", text, re.S):
        language, body = match.group(1).lower(), match.group(2)
        if language not in CALL_FENCES:
            continue
        calls = python_calls(body, tools) if language == "tool_code" else json_calls(body, tools)
        if calls:
            return Extraction(text[: match.start()], calls, text[match.end() :])
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        calls = json_calls(stripped, tools)
        if calls:
            return Extraction(text[: len(text) - len(text.lstrip())], calls, "")
    return None


def hold_from(text: str, at_block_start: bool) -> tuple[int, bool] | None:
    """Where a call may begin in streamed text: (index, sure) or None when all of it is prose.

    `sure`: a call marker is there, so everything from the index on waits for the block's end;
    otherwise the tail is only a possible beginning (`<tool_c`, a fence whose language is not
    known yet) and the next delta decides.
    """
    if at_block_start:
        stripped = text.lstrip()
        if not stripped:
            return (0, False) if text else None
        if stripped[0] in "{[":
            return 0, True
    best: tuple[int, bool] | None = None
    if any(c in text for c in _FIRST_CHARS):
        for marker in TAG_MARKERS:
            at = text.find(marker)
            if at >= 0 and (best is None or at < best[0]):
                if marker in LINE_START_ONLY and at > 0 and text[at - 1] != "\n":
                    continue
                best = (at, True)
    start = 0
    while True:
        at = text.find(FENCE, start)
        if at < 0 or (best is not None and at >= best[0]):
            break
        verdict = _fence_verdict(text, at)
        if verdict is not None:
            best = (at, verdict)
            break
        start = at + len(FENCE)
    partial = _partial_marker(text)
    if partial is not None and (best is None or partial < best[0]):
        best = (partial, False)
    return best


def _fence_verdict(text: str, at: int) -> bool | None:
    """True: a fence that may hold a call; False: undecided yet; None: an ordinary code fence."""
    rest = text[at + len(FENCE) :]
    newline = rest.find("\n")
    if newline < 0:
        info = rest.strip().lower()
        return False if any(lang.startswith(info) for lang in CALL_FENCES) else None
    language = rest[:newline].strip().lower()
    if language in ("tool_code", "tool_call"):
        return True
    if language not in CALL_FENCES:
        return None
    body = rest[newline + 1 :].lstrip()
    if not body:
        return False
    return True if body[0] in "{[" else None


def _partial_marker(text: str) -> int | None:
    """Start of a tail that is the beginning of a marker or a fence (`<tool_c`, "``")."""
    window = text[-_LONGEST:]
    if not any(c in window for c in _FIRST_CHARS):
        return None  # the common case: no marker can be starting
    for size in range(min(len(text), _LONGEST - 1), 0, -1):
        if text[-size:] in _PREFIXES:
            return len(text) - size
    return None
