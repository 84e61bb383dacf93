"""Policy files: interpolation, validation with file:line, the shipped default."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.policy.loader import PolicyError, default_policy_path, interpolate, load_policy, parse_policy

GOOD = """\
backends:
  local:
    kind: llamacpp
    url: ${LLAMA:-http://127.0.0.1:8080}
rules:
  - name: default
    to: [local]
"""


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("${A}", {}, ""),
        ("${A:-d}", {}, "d"),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A:-d}", {"A": "set"}, "set"),
        ("pre-${A:-http://h:1}/v1", {}, "pre-http://h:1/v1"),
        ("$A stays", {"A": "x"}, "$A stays"),
    ],
)
def test_interpolation(text: str, env: dict, expected: str) -> None:
    assert interpolate(text, env) == expected


def test_default_policy_reads_the_documented_variables() -> None:
    env = {"LOCAL_LLAMA_URL": "http://gpu:9000", "FALLBACK_URL": "http://fb:1", "ANTHROPIC_API_KEY": "sk-x"}
    policy = load_policy(default_policy_path(), env)
    assert policy.backends["local"].url == "http://gpu:9000"
    assert policy.backends["local"].kind == "llamacpp"
    assert policy.backends["fallback"].url == "http://fb:1"
    assert policy.backends["fallback"].api_key == "sk-x"
    assert policy.rules[0].to == ["local", "fallback"]
    defaults = load_policy(default_policy_path(), {})
    assert defaults.backends["local"].url == "http://127.0.0.1:8080"
    assert defaults.backends["fallback"].url == "https://api.anthropic.com"
    assert defaults.backends["fallback"].effective_auth == "auto"
    assert defaults.backends["local"].effective_auth == "key"


def test_good_policy() -> None:
    policy = parse_policy(GOOD, "p.yaml", {})
    assert policy.backends["local"].wire_dialect == "anthropic"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            GOOD.replace("kind: llamacpp", "kind: llamacpp\n    colour: red"),
            "p.yaml:4: backends.local: Object contains unknown field `colour`",
        ),
        (GOOD.replace("kind: llamacpp", "kind: vllm"), "p.yaml:3: backends.local.kind: Invalid enum value 'vllm'"),
        (
            GOOD.replace("to: [local]", "to: [local, gpu2]"),
            "p.yaml:7: rules[0].to: unknown backend 'gpu2' (defined: local)",
        ),
        (
            GOOD.replace("${LLAMA:-http://127.0.0.1:8080}", "localhost:8080"),
            "p.yaml:4: backends.local.url: expected an http(s) URL",
        ),
        (GOOD.replace("to: [local]", "to: []"), "rules[0].to: name at least one backend"),
        ("backends: {}\nrules: [\n", "p.yaml:3: not valid YAML"),
        ("- a\n", "expected a mapping"),
        (GOOD.replace("rules:", "rulez:"), "unknown field `rulez`"),
    ],
)
def test_errors_say_where_and_what(text: str, expected: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "p.yaml", {})
    assert expected in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("value", "guarded"), [("on", True), ("off", False), ("'off'", False), ("true", True), ("false", False)]
)
def test_tool_guard_takes_yaml_on_off_as_written(value: str, guarded: bool) -> None:
    text = (
        f"backends:\n  l: {{kind: llamacpp, url: 'http://x', tool_guard: {value}}}\nrules:\n  - {{name: d, to: [l]}}\n"
    )
    assert parse_policy(text, "p.yaml", {}).backends["l"].guards_tools is guarded


def test_tool_guard_defaults_on_for_local_kinds_only() -> None:
    text = (
        "backends:\n  l: {kind: llamacpp, url: 'http://x'}\n  c: {kind: anthropic, url: 'http://y'}\n"
        "rules:\n  - {name: d, to: [l, c]}\n"
    )
    backends = parse_policy(text, "p.yaml", {}).backends
    assert backends["l"].guards_tools and not backends["c"].guards_tools
