"""`when:` conditions, compiled once from the policy file into plain predicates.

A condition is a mapping whose keys must all hold. Keys on the request: `tokens`, `tools`,
`max_tokens` (a number or `{gt|gte|lt|lte|eq: n}`), `tool_names`, `model`, `client`, `team`
(a glob or a list of globs, any may match), `thinking`, `images` (true/false), `header`
(`{name: glob}`). On live state: `backend: {NAME: {healthy, breaker, busy, in_flight,
queue_depth, free_slots, kv_cache}}`. Combinators: `all: [...]`, `any: [...]`, `not: {...}`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from typing import Any

from router.policy.features import Features
from router.policy.snapshot import BackendSnapshot

State = Mapping[str, BackendSnapshot]
Condition = Callable[[Features, State], bool]
BusyTest = Callable[[str, BackendSnapshot], bool]

COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
    "eq": lambda a, b: a == b,
}
NUMERIC_FEATURES = {"tokens": "tokens", "tools": "tool_count", "max_tokens": "max_tokens"}
GLOB_FEATURES = {"model": "model", "client": "client", "team": "team"}
FLAG_FEATURES = {"thinking": "thinking", "images": "images"}
STATE_NUMBERS = ("in_flight", "queue_depth", "free_slots", "kv_cache")


class ConditionError(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


def always(_: Features, __: State) -> bool:
    return True


def compile_when(spec: Any, path: str, backends: set[str], busy: BusyTest) -> Condition:
    if spec is None:
        return always
    if not isinstance(spec, dict) or not spec:
        raise ConditionError(path, "expected a mapping of conditions, e.g. {tokens: {gt: 48000}}")
    parts = [_one(key, value, f"{path}.{key}", backends, busy) for key, value in spec.items()]
    if len(parts) == 1:
        return parts[0]
    return lambda f, s: all(p(f, s) for p in parts)


def _one(key: str, value: Any, path: str, backends: set[str], busy: BusyTest) -> Condition:
    if key in ("all", "any"):
        if not isinstance(value, list) or not value:
            raise ConditionError(path, f"`{key}` takes a non-empty list of conditions")
        parts = [compile_when(v, f"{path}[{i}]", backends, busy) for i, v in enumerate(value)]
        combine = all if key == "all" else any
        return lambda f, s: combine(p(f, s) for p in parts)
    if key == "not":
        inner = compile_when(value, path, backends, busy)
        return lambda f, s: not inner(f, s)
    if key in NUMERIC_FEATURES:
        test = _comparison(value, path)
        attr = NUMERIC_FEATURES[key]
        return lambda f, s: test(getattr(f, attr))
    if key in GLOB_FEATURES:
        patterns = _globs(value, path)
        attr = GLOB_FEATURES[key]
        return lambda f, s: _matches(getattr(f, attr), patterns)
    if key in FLAG_FEATURES:
        if not isinstance(value, bool):
            raise ConditionError(path, "expected true or false")
        attr = FLAG_FEATURES[key]
        return lambda f, s: getattr(f, attr) is value
    if key == "tool_names":
        patterns = _globs(value, path)
        return lambda f, s: any(_matches(name, patterns) for name in f.tool_names)
    if key == "header":
        if not isinstance(value, dict) or not value:
            raise ConditionError(path, "expected {header-name: glob}")
        wanted = {str(k).lower(): _globs(v, f"{path}.{k}") for k, v in value.items()}
        return lambda f, s: all(_matches(f.headers.get(k), p) for k, p in wanted.items())
    if key == "backend":
        return _backend_state(value, path, backends, busy)
    known = sorted(
        [*NUMERIC_FEATURES, *GLOB_FEATURES, *FLAG_FEATURES, "tool_names", "header", "backend", "all", "any", "not"]
    )
    raise ConditionError(path, f"unknown condition `{key}` (known: {', '.join(known)})")


def _backend_state(value: Any, path: str, backends: set[str], busy: BusyTest) -> Condition:
    if not isinstance(value, dict) or not value:
        raise ConditionError(path, "expected {backend-name: {queue_depth: {gte: 2}, ...}}")
    tests: list[Condition] = []
    for name, spec in value.items():
        where = f"{path}.{name}"
        if name not in backends:
            raise ConditionError(where, f"unknown backend {name!r} (defined: {', '.join(sorted(backends))})")
        if not isinstance(spec, dict) or not spec:
            raise ConditionError(where, "expected state conditions, e.g. {busy: true}")
        for key, want in spec.items():
            tests.append(_state_test(str(name), key, want, f"{where}.{key}", busy))
    return lambda f, s: all(t(f, s) for t in tests)


def _state_test(name: str, key: str, want: Any, path: str, busy: BusyTest) -> Condition:
    def snap(s: State) -> BackendSnapshot:
        return s.get(name, BackendSnapshot())

    if key in ("healthy", "busy"):
        if not isinstance(want, bool):
            raise ConditionError(path, "expected true or false")
        if key == "healthy":
            return lambda f, s: snap(s).healthy is want
        return lambda f, s: busy(name, snap(s)) is want
    if key == "breaker":
        if want not in ("closed", "open", "half_open"):
            raise ConditionError(path, "expected closed, open or half_open")
        return lambda f, s: snap(s).breaker == want
    if key in STATE_NUMBERS:
        test = _comparison(want, path)

        def check(f: Features, s: State) -> bool:
            value = getattr(snap(s), key)
            return value is not None and test(value)

        return check
    raise ConditionError(
        path, f"unknown backend state `{key}` (known: healthy, busy, breaker, {', '.join(STATE_NUMBERS)})"
    )


def _comparison(value: Any, path: str) -> Callable[[float], bool]:
    if isinstance(value, bool) or not isinstance(value, int | float | dict):
        raise ConditionError(path, "expected a number or {gt|gte|lt|lte|eq: number}")
    if not isinstance(value, dict):
        return lambda x: x == value
    if not value:
        raise ConditionError(path, "expected at least one of gt, gte, lt, lte, eq")
    tests = []
    for op, bound in value.items():
        if op not in COMPARISONS:
            raise ConditionError(f"{path}.{op}", "expected one of gt, gte, lt, lte, eq")
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            raise ConditionError(f"{path}.{op}", "expected a number")
        tests.append((COMPARISONS[op], bound))
    return lambda x: all(compare(x, bound) for compare, bound in tests)


def _globs(value: Any, path: str) -> tuple[str, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) for v in values):
        raise ConditionError(path, "expected a glob or a list of globs")
    return tuple(v.lower() for v in values)


def _matches(value: str | None, patterns: tuple[str, ...]) -> bool:
    return value is not None and any(fnmatch.fnmatchcase(value.lower(), p) for p in patterns)
