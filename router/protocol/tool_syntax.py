"""Reading the pieces tool calls are written with: JSON that may need repair, Python call
syntax, balanced JSON prefixes. Shared by the formats in protocol/tool_formats (pure)."""

from __future__ import annotations

import ast
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from router.protocol.tool_check import decode_lenient, resolve_name

NAME_KEYS = ("name", "tool", "tool_name", "function")
ARGUMENT_KEYS = ("arguments", "parameters", "input", "args")


@dataclass(slots=True)
class TextCall:
    name: str
    arguments: str | dict[str, Any]  # a string still to be decoded (and maybe repaired)
    format: str
    repaired: bool = False  # the JSON around the arguments had to be repaired to be read


def json_calls(text: str, tools: Collection[str]) -> list[TextCall]:
    """Calls from a JSON object or array whose objects name offered tools; [] otherwise."""
    calls = named_calls(decode_object(text.strip()), "json", require_arguments=True)
    return calls if calls and all(known(c.name, tools) for c in calls) else []


def named_calls(decoded: tuple[Any, bool], format: str, require_arguments: bool) -> list[TextCall]:
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


def python_calls(code: str, tools: Collection[str], format: str = "gemma") -> list[TextCall]:
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
        if name is None or not known(name, tools):
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


def known(name: str, tools: Collection[str]) -> bool:
    return resolve_name(name, tools) is not None


def decode_object(text: str) -> tuple[Any, bool]:
    """(JSON value, whether it had to be repaired); (None, False) when nothing object-like comes out."""
    decoded = decode_lenient(text)
    return decoded if decoded is not None and isinstance(decoded[0], dict | list) else (None, False)


def json_prefix(text: str, pos: int) -> tuple[str, int]:
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


def split_top_level(text: str, separator: str) -> list[str]:
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


def strip_one_newline(value: str) -> str:
    value = value[1:] if value.startswith("\n") else value
    return value[:-1] if value.endswith("\n") else value
