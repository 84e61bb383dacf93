"""The pure engine: rules top-down, targets filtered with a reason for each one skipped."""

from __future__ import annotations

import pytest

from router.policy.engine import Engine
from router.policy.features import Features
from router.policy.loader import PolicyError, parse_policy
from router.policy.snapshot import BackendSnapshot

POLICY = """
backends:
  local: {kind: llamacpp, url: "http://a", capabilities: {images: false}}
  small: {kind: llamacpp, url: "http://s", context_window: 8000, max_concurrent: 1}
  fallback: {kind: anthropic, url: "http://b"}
rules:
  - name: background
    when: {model: "*haiku*"}
    to: [small, fallback]
  - name: long
    when: {any: [{tokens: {gt: 48000}}, {tools: {gte: 40}}]}
    to: [fallback]
  - name: spill
    when: {backend: {local: {busy: true}}, not: {thinking: true}}
    to: [fallback]
  - name: default
    to: [local, fallback]
"""
ENGINE = Engine(parse_policy(POLICY, "p.yaml", {}))


def feats(**kw: object) -> Features:
    return Features(**{"tokens": 1000, "model": "claude-opus-4-8", **kw})  # type: ignore[arg-type]


def test_default_rule_keeps_order() -> None:
    d = ENGINE.decide(feats(), {})
    assert (d.rule, d.candidates, d.skipped) == ("default", ("local", "fallback"), {})


def test_model_glob_picks_background_rule() -> None:
    assert ENGINE.decide(feats(model="claude-haiku-4-5"), {}).rule == "background"


@pytest.mark.parametrize("kw", [{"tokens": 60000}, {"tool_count": 41}])
def test_any_combinator(kw: dict) -> None:
    assert ENGINE.decide(feats(**kw), {}).candidates == ("fallback",)


def test_live_state_condition_and_not() -> None:
    busy = {"local": BackendSnapshot(slots=2, foreign=2)}
    assert ENGINE.decide(feats(), busy).rule == "spill"
    assert ENGINE.decide(feats(thinking=True), busy).rule == "default"


def test_skip_reasons() -> None:
    state = {
        "local": BackendSnapshot(slots=1, in_flight=1, foreign=1),
        "small": BackendSnapshot(healthy=False, detail="connection refused"),
    }
    d = ENGINE.decide(feats(thinking=True), state)  # thinking: past the spill rule, to default
    assert (d.rule, d.candidates) == ("default", ("fallback",))
    assert d.skipped == {"local": "busy 2/1"}
    d = ENGINE.decide(feats(model="haiku", tokens=9000), {})
    assert d.skipped == {"small": "context 9k > window 8k"}
    d = ENGINE.decide(feats(model="haiku"), state)
    assert d.skipped == {"small": "unhealthy: connection refused"}
    d = ENGINE.decide(feats(images=True), {})
    assert d.skipped == {"local": "no image support"}
    d = ENGINE.decide(feats(), {"local": BackendSnapshot(breaker="open"), "fallback": BackendSnapshot(n_ctx=500)})
    assert d.candidates == () and d.skipped == {"local": "breaker open", "fallback": "context 1k > window 500"}


def test_half_open_breaker_lets_a_request_through() -> None:
    assert ENGINE.decide(feats(), {"local": BackendSnapshot(breaker="half_open")}).candidates[0] == "local"


def test_queue_depth_is_ours_plus_other_clients() -> None:
    assert BackendSnapshot(in_flight=3, foreign=2).queue_depth == 5
    assert BackendSnapshot(slots=4, in_flight=1).free_slots == 3


def test_a_stale_report_does_not_count_our_finished_requests() -> None:
    from router.backends.base import Probe
    from router.state.store import MemoryState

    store = MemoryState(["local"])
    first, second = store.begin("local"), store.begin("local")
    store.observe("local", Probe(True, processing=2, deferred=1, slots=2))  # ours (2) + one other client
    assert store.snapshot()["local"].queue_depth == 3
    first()
    second()
    assert store.snapshot()["local"].queue_depth == 1  # only the other client, until the next poll


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("{tokenz: 5}", "p.yaml:5: rules[0].when.tokenz: unknown condition `tokenz`"),
        ("{tokens: {more: 5}}", "p.yaml:5: rules[0].when.tokens.more: expected one of gt, gte, lt, lte, eq"),
        ("{tokens: big}", "rules[0].when.tokens: expected a number"),
        ("{thinking: yes please}", "rules[0].when.thinking: expected true or false"),
        ("{backend: {gpu9: {busy: true}}}", "rules[0].when.backend.gpu9: unknown backend 'gpu9'"),
        ("{backend: {a: {load: 1}}}", "rules[0].when.backend.a.load: unknown backend state `load`"),
        ("{any: []}", "rules[0].when.any: `any` takes a non-empty list"),
        ("[1]", "rules[0].when: Expected `object | null`, got `array`"),
    ],
)
def test_condition_errors_name_file_line_and_path(when: str, message: str) -> None:
    text = f"backends:\n  a: {{kind: llamacpp, url: 'http://a'}}\nrules:\n  - name: r\n    when: {when}\n    to: [a]\n"
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "p.yaml", {})
    assert message in str(caught.value)


def test_metrics_parsing_survives_anything() -> None:
    from router.backends.llama_probe import parse_metrics

    text = (
        "# HELP x\nllamacpp:requests_processing 2\nllamacpp:requests_deferred 1 1700000000\n"
        '{"status":"ok"}\nbad\n\nx y z'
    )
    assert parse_metrics(text) == {"llamacpp:requests_processing": 2.0, "llamacpp:requests_deferred": 1.0}


def test_counting_tokens_needs_neither_room_nor_a_free_slot() -> None:
    """count_tokens only tokenizes: a prompt larger than the window, or a busy backend, is still counted there."""
    big = ENGINE.decide(
        feats(model="claude-haiku", tokens=9000, counting=True), {"small": BackendSnapshot(in_flight=1)}
    )
    assert big.candidates[0] == "small" and big.skipped == {}
    assert ENGINE.decide(feats(model="claude-haiku", tokens=9000), {}).skipped["small"].startswith("context")


def test_a_key_only_reaches_the_backends_it_may_use() -> None:
    from router.policy.identity import Identity, Limits

    local_only = Identity("ann", "infra", Limits(backends=["local"]))
    d = ENGINE.decide(feats(identity=local_only), {"local": BackendSnapshot(slots=1, in_flight=1)})
    assert d.candidates == () and d.skipped["fallback"] == "not for key ann" and d.skip_kinds["fallback"] == "forbidden"


def test_a_key_over_its_share_of_the_box_goes_where_busy_would_send_it() -> None:
    from router.policy.identity import Identity, Limits

    bob = Identity("bob", "app", Limits(local_share=1))
    free = {"local": BackendSnapshot(slots=2, in_flight=1)}
    own = {"client_credentials": True}  # the fallback has no api_key: it sends the developer's own
    assert ENGINE.decide(feats(identity=bob, local_in_flight=0, **own), free).candidates[0] == "local"
    over = ENGINE.decide(feats(identity=bob, local_in_flight=1, **own), free)
    assert over.candidates == ("fallback",) and over.skip_kinds["local"] == "share"


def test_a_cloud_without_api_key_is_skipped_for_a_request_whose_only_credential_is_its_team_key() -> None:
    from router.policy.identity import Identity

    busy = {"local": BackendSnapshot(slots=1, in_flight=1)}
    only_the_team_key = ENGINE.decide(feats(thinking=True, identity=Identity("e", "t")), busy)
    assert only_the_team_key.candidates == () and only_the_team_key.skip_kinds["fallback"] == "credentials"
    assert "no api_key" in only_the_team_key.skipped["fallback"]
    own_key = ENGINE.decide(feats(thinking=True, identity=Identity("e", "t"), client_credentials=True), busy)
    assert own_key.candidates == ("fallback",)
    assert ENGINE.decide(feats(thinking=True), busy).candidates == ("fallback",)  # auth open: the client's own


def test_when_busy_wait_waits_for_the_box_and_reject_goes_nowhere() -> None:
    from router.policy.identity import Identity, Limits

    busy = {"local": BackendSnapshot(slots=1, in_flight=1)}  # (thinking on: the `spill` rule does not match)
    waits = ENGINE.decide(feats(thinking=True, identity=Identity("c", "t", Limits(when_busy="wait"))), busy)
    assert waits.wait_for == "local" and waits.candidates == ()
    rejects = ENGINE.decide(feats(thinking=True, identity=Identity("d", "t", Limits(when_busy="reject"))), busy)
    assert rejects.rejected_busy and rejects.candidates == ()
    falls = ENGINE.decide(
        feats(thinking=True, identity=Identity("e", "t", Limits(when_busy="fallback")), client_credentials=True), busy
    )
    assert falls.candidates == ("fallback",) and falls.wait_for is None


def test_a_keys_limits_over_its_teams() -> None:
    from router.policy.identity import Limits

    team = Limits(rpm=60, tpm=100_000, backends=["local"], when_busy="wait")
    key = Limits(rpm=10, local_share=1)
    merged = key.over(team)
    assert (merged.rpm, merged.tpm, merged.backends, merged.local_share, merged.when_busy) == (
        10,
        100_000,
        ["local"],
        1,
        "wait",
    )
