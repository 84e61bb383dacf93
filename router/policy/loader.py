"""Load a policy file: YAML, `${VAR:-default}` interpolation, validation with file:line errors."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import yaml

from router.config import BackendConfig
from router.policy.conditions import ConditionError
from router.policy.engine import Engine
from router.policy.schema import Policy

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")
BUILTIN_DEFAULT = "default.yaml"
T = TypeVar("T")


class PolicyError(ValueError):
    """A policy file that cannot be used; the message says where and what is expected."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """`${VAR}` → its value or ""; `${VAR:-default}` → the default when VAR is unset or empty."""

    def value(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = env.get(name, "")
        return found if found else (default or "")

    return _VAR.sub(value, text)


def default_policy_path() -> Path:
    """`policies/default.yaml` of a source checkout, else the copy shipped inside the package."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package.parent / "policies" / BUILTIN_DEFAULT, package / "policies" / BUILTIN_DEFAULT):
        if candidate.is_file():
            return candidate
    raise PolicyError(f"the built-in policy {BUILTIN_DEFAULT} is missing from this installation")


def load_policy(path: Path | None = None, env: Mapping[str, str] | None = None) -> Policy:
    path = path or default_policy_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read policy file: {exc.strerror}") from None
    return parse_policy(text, str(path), os.environ if env is None else env)


def parse_policy(text: str, source: str, env: Mapping[str, str]) -> Policy:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise PolicyError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: expected a mapping with `backends:` and `rules:`")
    data = _yaml11_spellings(_interpolate_tree(data, env))
    backends = data.get("backends")
    if isinstance(backends, dict):
        # msgspec names a dict value `backends[...]`; convert each on its own to name it.
        data = {
            **data,
            "backends": {k: _convert(v, BackendConfig, f"$.backends.{k}", source, node) for k, v in backends.items()},
        }
    policy = _convert(data, Policy, "$", source, node)
    _check_references(policy, source, node)
    try:
        Engine(policy)  # compiles every `when:`
    except ConditionError as exc:
        line = _line_of(node, exc.path)
        raise PolicyError(f"{source}:{line}: {str(exc).removeprefix('$.')}") from None
    return policy


def _convert(value: Any, kind: type[T], at: str, source: str, node: yaml.Node | None) -> T:
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `")
        path = at + where.rstrip("`").removeprefix("$") if where else at
        unknown = re.search(r"unknown field `([^`]+)`", message)
        line = _line_of(node, f"{path}.{unknown.group(1)}" if unknown else path)
        raise PolicyError(f"{source}:{line}: {path.removeprefix('$').lstrip('.') or 'policy'}: {message}") from None


def _yaml11_spellings(data: dict[str, Any]) -> dict[str, Any]:
    """What YAML 1.1 makes of natural spellings, read as meant: the key `on:` is the boolean
    true, and `on: [429, 529]` holds numbers; `fallback.on` wants names."""
    fallback = data.get("fallback")
    if isinstance(fallback, dict) and True in fallback:
        fallback = {("on" if k is True else k): v for k, v in fallback.items()}
    if isinstance(fallback, dict) and isinstance(fallback.get("on"), list):
        fallback = {**fallback, "on": [str(v) if type(v) is int else v for v in fallback["on"]]}
    return {**data, "fallback": fallback} if fallback is not None else data


def _interpolate_tree(value: Any, env: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return interpolate(value, env)
    if isinstance(value, list):
        return [_interpolate_tree(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate_tree(v, env) for k, v in value.items()}
    return value


def _check_references(policy: Policy, source: str, node: yaml.Node | None) -> None:
    if not policy.rules:
        raise PolicyError(f"{source}: rules: at least one rule is required")
    for i, rule in enumerate(policy.rules):
        if not rule.to:
            raise PolicyError(
                f"{source}:{_line_of(node, f'$.rules[{i}].to')}: rules[{i}].to: name at least one backend"
            )
        where = f"{source}:{_line_of(node, f'$.rules[{i}].to')}: rules[{i}].to"
        if any(not group for group in rule.groups):
            raise PolicyError(f"{where}: an empty pool: name at least one backend in it")
        twice = sorted({n for n in rule.targets if rule.targets.count(n) > 1})
        if twice:
            raise PolicyError(f"{where}: {', '.join(twice)} listed twice")
        for j, name in enumerate(rule.targets):
            if name not in policy.backends:
                known = ", ".join(sorted(policy.backends)) or "none"
                line = _line_of(node, f"$.rules[{i}].to[{j}]")
                raise PolicyError(f"{source}:{line}: rules[{i}].to: unknown backend {name!r} (defined: {known})")
    for team, limits in policy.teams.items():
        for name in limits.backends or ():
            if name not in policy.backends:
                line = _line_of(node, f"$.teams.{team}.backends")
                raise PolicyError(f"{source}:{line}: teams.{team}.backends: unknown backend {name!r}")
    for name, backend in policy.backends.items():
        if not backend.url.startswith(("http://", "https://")):
            line = _line_of(node, f"$.backends.{name}.url")
            raise PolicyError(f"{source}:{line}: backends.{name}.url: expected an http(s) URL, got {backend.url!r}")


_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def _line_of(node: yaml.Node | None, path: str) -> int:
    """1-based line of the deepest YAML node along a msgspec path such as `$.rules[0].to`."""
    line = node.start_mark.line + 1 if node is not None else 1
    for match in _STEP.finditer(path.removeprefix("$")):
        key, index = match.group(1), match.group(2)
        if isinstance(node, yaml.MappingNode) and key is not None:
            found = next(((k, v) for k, v in node.value if getattr(k, "value", None) == key), None)
            if found is None:
                break
            line, node = found[0].start_mark.line + 1, found[1]
        elif isinstance(node, yaml.SequenceNode) and index is not None and int(index) < len(node.value):
            node = node.value[int(index)]
            line = node.start_mark.line + 1
        else:
            break
    return line
