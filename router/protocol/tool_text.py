"""Tool calls that a model wrote as text instead of structured calls, in the formats seen in the wild.

- Hermes / Qwen: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
- Qwen3-Coder: `<tool_call><function=Name><parameter=p>value</parameter></function></tool_call>`,
  with or without the `<tool_call>` wrapper; Llama 3.1's `<function=Name>{json}</function>`
- Mistral / Devstral: `[TOOL_CALLS][{"name": ..., "arguments": {...}}]` and
  `[TOOL_CALLS]Name[ARGS]{json}` (optionally `[CALL_ID]id` before `[ARGS]`)
- Llama 3: `<|python_tag|>{"name": ..., "parameters": {...}}` (several joined by `;`)
- Gemma: a ```` ```tool_code ```` block of Python calls, `Name(p="v")` or `print(default_api.Name(...))`
- a JSON object (or array of them) naming an offered tool, in a ```` ```json ```` fence or as
  the whole text

`extract` finds them; `hold_from` tells a stream which part of the text so far may still turn
out to be a call and must be held back.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from router.protocol.tool_check import ToolCallError, decode_lenient, resolve_name

TAG_MARKERS = ("<tool_call>", "<function=", "[TOOL_CALLS]", "<|python_tag|>")
FENCE = "```"
CALL_FENCES = ("tool_code", "tool_call", "json", "")  # fence languages that may hold a call
NAME_KEYS = ("name", "tool", "tool_name", "function")
ARGUMENT_KEYS = ("arguments", "parameters", "input", "args")

_FUNCTION = re.compile(r"<function=([^>\s]+)>(.*?)(?:</function>|$)", re.S)
_PARAMETER = re.compile(r"<parameter=([^>\s]+)>(.*?)(?:</parameter>|(?=<parameter=)|(?=</function>)|$)", re.S)
_MISTRAL_NAMED = re.compile(r"\s*([A-Za-z_][\w.-]*)\s*(?:\[CALL_ID\]\s*\S+?\s*)?\[ARGS\]", re.S)


@dataclass(slots=True)
class TextCall:
    name: str
    arguments: str | dict[str, Any]  # a string still to be decoded (and maybe repaired)
    format: str
    repaired: bool = False  # the JSON around the arguments had to be repaired to be read


@dataclass(slots=True)
class Extraction:
    before: str
    calls: list[TextCall] = field(default_factory=list)
    after: str = ""


def extract(text: str, tools: Collection[str]) -> Extraction | None:
    """The calls written in `text`, with the prose around them; None when it holds no call.

    A tag that announces a call (`<tool_call>`, `[TOOL_CALLS]`, ...) but does not hold a
    readable one raises ToolCallError; JSON that does not name an offered tool is just text.
    """
    tag = _first_tag(text)
    if tag is not None:
        at, marker = tag
        calls, end = _parse_tagged(text[at:], marker, tools)
        if not calls:
            raise ToolCallError("unparsable", f"{marker} without a readable call: {text[at : at + 120]!r}")
        return Extraction(text[:at], calls, text[at + end :])
    for match in re.finditer(r"```([\w-]*)[ \t]*\n(.*?)(?:```|$)", text, re.S):
        language, body = match.group(1).lower(), match.group(2)
        if language not in CALL_FENCES:
            continue
        calls = _python_calls(body, tools) if language == "tool_code" else _json_calls(body, tools)
        if calls:
            return Extraction(text[: match.start()], calls, text[match.end() :])
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        calls = _json_calls(stripped, tools)
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
    for marker in TAG_MARKERS:
        at = text.find(marker)
        if at >= 0 and (best is None or at < best[0]):
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
    """Start of a tail that is the beginning of a tag or a fence (`<tool_c`, "``")."""
    window = text[-max(map(len, TAG_MARKERS)) :]
    if "<" not in window and "[" not in window and "`" not in window:
        return None  # the common case: no marker can be starting
    for size in range(min(len(text), max(map(len, TAG_MARKERS))), 0, -1):
        tail = text[-size:]
        if any(marker.startswith(tail) and marker != tail for marker in (*TAG_MARKERS, FENCE)):
            return len(text) - size
    return None


def _first_tag(text: str) -> tuple[int, str] | None:
    found = [(text.find(marker), marker) for marker in TAG_MARKERS if marker in text]
    return min(found) if found else None


def _parse_tagged(text: str, marker: str, tools: Collection[str]) -> tuple[list[TextCall], int]:
    """Calls from `text`, which starts with `marker`, and how many characters they took."""
    if marker == "<tool_call>":
        return _hermes(text)
    if marker == "<function=":
        return _functions(text, "qwen3-coder")
    if marker == "[TOOL_CALLS]":
        return _mistral(text)
    return _python_tag(text, tools)


def _hermes(text: str) -> tuple[list[TextCall], int]:
    calls: list[TextCall] = []
    end = 0
    for match in re.finditer(r"<tool_call>(.*?)(?:</tool_call>|$)", text, re.S):
        if text[end : match.start()].strip():
            break  # prose between calls: the calls so far are the answer, the rest is text
        body = match.group(1).strip()
        if body.startswith("<function="):
            found, _ = _functions(body, "qwen3-coder")
            calls += found
        else:
            calls += _named(_decode(body), "hermes", require_arguments=False)
        end = match.end()
    return calls, end


def _functions(text: str, format: str) -> tuple[list[TextCall], int]:
    calls: list[TextCall] = []
    end = 0
    for match in _FUNCTION.finditer(text):
        if text[end : match.start()].replace("</tool_call>", "").replace("<tool_call>", "").strip():
            break
        name, body = match.group(1), match.group(2)
        if "<parameter=" in body:
            params = {key: _strip_one_newline(value) for key, value in _PARAMETER.findall(body)}
            calls.append(TextCall(name, params, format))
        else:
            calls.append(TextCall(name, body.strip(), "llama3-function"))
        end = match.end()
    closing = re.match(r"\s*</tool_call>", text[end:])
    return calls, end + (closing.end() if closing else 0)


def _mistral(text: str) -> tuple[list[TextCall], int]:
    calls: list[TextCall] = []
    pos = 0
    while text.startswith("[TOOL_CALLS]", pos):
        pos += len("[TOOL_CALLS]")
        named = _MISTRAL_NAMED.match(text, pos)
        if named:
            arguments, pos = _json_prefix(text, named.end())
            calls.append(TextCall(named.group(1), arguments, "mistral"))
        else:
            value, pos = _json_prefix(text, pos)
            calls += _named(_decode(value), "mistral", require_arguments=False)
        following = len(text) - len(text[pos:].lstrip())
        if text.startswith("[TOOL_CALLS]", following):
            pos = following
    return calls, pos


def _python_tag(text: str, tools: Collection[str]) -> tuple[list[TextCall], int]:
    body = text[len("<|python_tag|>") :]
    end_tag = re.search(r"<\|eom_id\|>|<\|eot_id\|>", body)
    body = body[: end_tag.start()] if end_tag else body
    calls: list[TextCall] = []
    for part in _split_top_level(body, ";"):
        part = part.strip()
        if not part:
            continue
        if part.startswith("{"):
            calls += _named(_decode(part), "llama3", require_arguments=False)
        else:
            calls += _python_calls(part, tools, format="llama3")
    consumed = len("<|python_tag|>") + (end_tag.end() if end_tag else len(body))
    return calls, consumed


def _json_calls(text: str, tools: Collection[str]) -> list[TextCall]:
    """Calls from a JSON object or array whose objects name offered tools; [] otherwise."""
    calls = _named(_decode(text.strip()), "json", require_arguments=True)
    return calls if calls and all(_known(c.name, tools) for c in calls) else []


def _named(decoded: tuple[Any, bool], format: str, require_arguments: bool) -> list[TextCall]:
    value, repaired = decoded
    items = value if isinstance(value, list) else [value]
    calls: list[TextCall] = []
    for item in items:
        if not isinstance(item, dict):
            return []
        if isinstance(item.get("function"), dict):  # OpenAI's own shape
            item = item["function"]
        name = next((item[k] for k in NAME_KEYS if isinstance(item.get(k), str)), None)
        key = next((k for k in ARGUMENT_KEYS if k in item), None)
        if name is None or (require_arguments and key is None):
            return []
        arguments = item.get(key, {}) if key else {}
        if not isinstance(arguments, str | dict):
            return []
        calls.append(TextCall(name, arguments, format, repaired))
    return calls


def _python_calls(code: str, tools: Collection[str], format: str = "gemma") -> list[TextCall]:
    try:
        tree = ast.parse(code.strip())
    except SyntaxError:
        return []
    calls: list[TextCall] = []
    for statement in tree.body:
        node = statement.value if isinstance(statement, ast.Expr) else None
        if isinstance(node, ast.Call) and _callee(node) == "print" and len(node.args) == 1:
            node = node.args[0]
        if not isinstance(node, ast.Call) or node.args:
            return []
        name = _callee(node)
        if name is None or not _known(name, tools):
            return []
        try:
            arguments = {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg}
        except ValueError:
            return []
        calls.append(TextCall(name, arguments, format))
    return calls


def _callee(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


_NAMED_CONSTANTS = {"true": True, "false": False, "null": None, "none": None}


def _literal(node: ast.expr) -> Any:
    if isinstance(node, ast.Name) and node.id.lower() in _NAMED_CONSTANTS:
        return _NAMED_CONSTANTS[node.id.lower()]
    if isinstance(node, ast.List | ast.Tuple):
        return [_literal(item) for item in node.elts]
    if isinstance(node, ast.Dict):
        return {
            _literal(k) if k is not None else None: _literal(v) for k, v in zip(node.keys, node.values, strict=True)
        }
    return ast.literal_eval(node)


def _known(name: str, tools: Collection[str]) -> bool:
    return resolve_name(name, tools) is not None


def _decode(text: str) -> tuple[Any, bool]:
    """(JSON value, whether it had to be repaired); (None, False) when nothing object-like comes out."""
    decoded = decode_lenient(text)
    return decoded if decoded is not None and isinstance(decoded[0], dict | list) else (None, False)


def _json_prefix(text: str, pos: int) -> tuple[str, int]:
    """The JSON value starting at `pos` (balanced braces, strings respected) and where it ends."""
    start = len(text) - len(text[pos:].lstrip())
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return text[start : i + 1], i + 1
    return text[start:], len(text)  # cut off: json-repair may still close it


def _split_top_level(text: str, separator: str) -> list[str]:
    parts, depth, current, in_string = [], 0, [], False
    for ch in text:
        if ch == '"':
            in_string = not in_string
        elif not in_string and ch in "{[(":
            depth += 1
        elif not in_string and ch in "}])":
            depth -= 1
        if ch == separator and depth == 0 and not in_string:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _strip_one_newline(value: str) -> str:
    value = value[1:] if value.startswith("\n") else value
    return value[:-1] if value.endswith("\n") else value
