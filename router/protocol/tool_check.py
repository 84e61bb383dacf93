"""Check a tool call against the tools the request offered: known name, JSON arguments, schema.

Arguments that are almost JSON (single quotes, trailing commas, cut off at the end) are repaired
with json-repair; the result must still validate against the tool's `input_schema` (JSON Schema
2020-12 as Claude Code sends it; a schema's own `$schema` picks its draft). A call that fails
any of this is a ToolCallError: it is never passed on to the client.

The schemas come from the client, so checking them must cost little and reach nothing: no `$ref`
is ever fetched (network or file), regular expressions run on an engine without catastrophic
backtracking (linear, or a bounded number of steps for lookarounds), and the validator is Rust
code. A schema that cannot be used that way (a ref to elsewhere, a meta-schema nobody knows, an
invalid schema) cannot be held against the model: its calls pass unchecked, and say so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any

import json_repair
import jsonschema_rs
import msgspec

# Patterns without lookarounds run on Rust's linear-time `regex`; the rest on `fancy-regex`,
# stopped after this many backtracking steps (then treated as not matching).
PATTERNS = jsonschema_rs.FancyRegexOptions(backtrack_limit=20_000)
UNCHECKED = "unchecked"


class ToolCallError(Exception):
    """A tool call that cannot be passed on. `kind`: unparsable, unknown_tool or schema."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True, slots=True)
class CheckedCall:
    name: str
    input: dict[str, Any]
    repaired: bool  # the arguments or the name had to be fixed
    checked: bool = True  # False: the tool's schema could not be used, the arguments passed unchecked


class ToolBox:
    """The tools of one request, by name; validators are built only for tools actually called."""

    def __init__(self, tools: Iterable[Mapping[str, Any]]) -> None:
        self.schemas: dict[str, Mapping[str, Any]] = {}
        for tool in tools:
            name = tool.get("name")
            if isinstance(name, str):
                schema = tool.get("input_schema")
                self.schemas[name] = schema if isinstance(schema, Mapping) else {}
        self._validators: dict[str, jsonschema_rs.Validator | None] = {}

    def __bool__(self) -> bool:
        return bool(self.schemas)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.schemas)

    def check(self, name: str, arguments: str | Mapping[str, Any] | None) -> CheckedCall:
        known = resolve_name(name, self.schemas)
        if known is None:
            offered = ", ".join(sorted(self.schemas)[:12])
            raise ToolCallError(
                "unknown_tool", f"the model called {name!r}, which is not among the offered tools ({offered})"
            )
        repaired = known != name
        if isinstance(arguments, Mapping):
            value: Any = dict(arguments)
        else:
            value, fixed = parse_arguments(arguments or "")
            repaired = repaired or fixed
        if not isinstance(value, dict):
            raise ToolCallError("unparsable", f"{known}: the arguments are not a JSON object ({type(value).__name__})")
        schema = self.schemas[known]
        coerced = coerce_strings(value, schema)
        if coerced != value:
            value, repaired = coerced, True
        return CheckedCall(known, value, repaired, self._validate(known, schema, value))

    def _validate(self, name: str, schema: Mapping[str, Any], value: dict[str, Any]) -> bool:
        """Raise for arguments against the schema; False when the schema cannot be used."""
        if name not in self._validators:
            self._validators[name] = compile_schema(schema)
        validator = self._validators[name]
        if validator is None:
            return False
        try:
            errors = list(islice(validator.iter_errors(value), 3))
        except ValueError:  # a $ref only reached by this value, that nothing can resolve
            return False
        if errors:
            said = []
            for error in errors:
                where = "/".join(str(p) for p in error.instance_path)
                said.append(f"{error.message[:200]}{f' at {where}' if where else ''}")
            raise ToolCallError("schema", f"{name}: {'; '.join(said)}")
        return True


def compile_schema(schema: Mapping[str, Any]) -> jsonschema_rs.Validator | None:
    """A validator that never reaches the network or the disk; None when the schema is unusable."""
    try:
        return jsonschema_rs.validator_for(schema, offline=True, pattern_options=PATTERNS)
    except ValueError:
        pass
    if "$schema" in schema:  # a meta-schema nobody here knows: read it as 2020-12, as Claude Code's are
        try:
            rest = {k: v for k, v in schema.items() if k != "$schema"}
            return jsonschema_rs.Draft202012Validator(rest, offline=True, pattern_options=PATTERNS)
        except ValueError:
            pass
    return None


def resolve_name(name: str, names: Iterable[str]) -> str | None:
    """The offered tool a model meant: exact, else the one that matches ignoring case."""
    known = list(names)
    if name in known:
        return name
    folded = [k for k in known if k.casefold() == name.strip().casefold()]
    return folded[0] if len(folded) == 1 else None


def decode_lenient(text: str) -> tuple[Any, bool] | None:
    """JSON, repaired with json-repair if it must be: (value, repaired); None when hopeless."""
    try:
        return msgspec.json.decode(text), False
    except msgspec.DecodeError:
        pass
    try:
        value = json_repair.repair_json(text, return_objects=True, skip_json_loads=True)
    except Exception:  # noqa: BLE001 - json-repair raises assorted errors on hopeless input
        return None
    return None if value == "" or value is None else (value, True)


def parse_arguments(text: str) -> tuple[Any, bool]:
    """Decode JSON arguments; (value, repaired). An empty string is an empty object."""
    if not text.strip():
        return {}, False
    decoded = decode_lenient(text)
    if decoded is None:
        raise ToolCallError("unparsable", f"arguments are not JSON and cannot be repaired: {text[:80]!r}")
    return decoded


def coerce_strings(value: dict[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Turn string values into the scalar or JSON type the schema asks for ("3" → 3, "true" → True).

    Formats that carry parameters as text (Qwen3-Coder's XML, Python-call syntax) need this; a
    value that does not convert is left for the validator to reject.
    """
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return value
    out = dict(value)
    for key, item in value.items():
        spec = properties.get(key)
        if not isinstance(item, str) or not isinstance(spec, Mapping):
            continue
        wanted = spec.get("type")
        types = {t for t in (wanted if isinstance(wanted, list) else [wanted]) if isinstance(t, str)}
        if "string" in types or not types:
            continue
        converted = _convert(item.strip(), types)
        if converted is not None:
            out[key] = converted
    return out


def _convert(text: str, types: set[Any]) -> Any:
    if "boolean" in types and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if types & {"integer", "number"}:
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is not None:
            if number.is_integer() and ("integer" in types or "." not in text):
                return int(number)
            return number
    if types & {"object", "array"}:
        try:
            parsed = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return None
        if isinstance(parsed, dict | list):
            return parsed
    return None
