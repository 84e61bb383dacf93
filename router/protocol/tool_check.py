"""Check a tool call against the tools the request offered: known name, JSON arguments, schema.

Arguments that are almost JSON (single quotes, trailing commas, cut off at the end) are repaired
with json-repair; the result must still validate against the tool's `input_schema` (JSON Schema
2020-12 as Claude Code sends it; a schema's own `$schema` picks its draft). A call that fails
any of this is a ToolCallError: it is never passed on to the client.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import json_repair
import msgspec
from jsonschema import validators
from jsonschema.exceptions import SchemaError


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


class ToolBox:
    """The tools of one request, by name; validators are built only for tools actually called."""

    def __init__(self, tools: Iterable[Mapping[str, Any]]) -> None:
        self.schemas: dict[str, Mapping[str, Any]] = {}
        for tool in tools:
            name = tool.get("name")
            if isinstance(name, str):
                schema = tool.get("input_schema")
                self.schemas[name] = schema if isinstance(schema, Mapping) else {}
        self._validators: dict[str, Any] = {}

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
        self._validate(known, schema, value)
        return CheckedCall(known, value, repaired)

    def _validate(self, name: str, schema: Mapping[str, Any], value: dict[str, Any]) -> None:
        validator = self._validators.get(name)
        if validator is None:
            cls = validators.validator_for(schema, default=validators.Draft202012Validator)
            try:
                cls.check_schema(schema)
            except SchemaError:
                return  # a tool whose own schema is invalid cannot be held against the model
            validator = self._validators[name] = cls(schema)
        error = next(iter(validator.iter_errors(value)), None)
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path)
            at = f" at {where}" if where else ""
            raise ToolCallError("schema", f"{name}: {error.message}{at}")


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
        types = set(wanted) if isinstance(wanted, list) else {wanted}
        if "string" in types or not types - {None}:
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
