"""Slot choice from the prefix index, and pools in the engine: affinity, least busy, round robin."""

from __future__ import annotations

from router.policy.affinity import PrefixView, slot_choices
from router.policy.engine import Engine
from router.policy.features import Features
from router.policy.loader import parse_policy
from router.policy.snapshot import BackendSnapshot
from router.state.shared import LocalShared

HASHES = tuple(f"h{i}" for i in range(10))


def test_the_slot_holding_the_conversation_wins() -> None:
    shared = LocalShared(clock=iter(range(100)).__next__)
    shared.remember(HASHES[:6], "a", 1, 6000, 6 * 2048)  # turn 1 of this conversation on a/1
    shared.remember(("x0", "x1", "x2"), "a", 0, 3000, 3 * 2048)  # someone else on a/0
    best = slot_choices(shared.local_view(HASHES), "a", 2)[0]
    assert (best.slot, best.reused, best.evicted) == (1, 6000, 0)


def test_a_new_conversation_takes_an_empty_slot_not_someone_elses() -> None:
    shared = LocalShared(clock=iter(range(100)).__next__)
    shared.remember(("c0", "c1", "s1-a", "s1-b"), "a", 0, 4000, 4 * 2048)  # c0, c1: a common system prompt
    new = ("c0", "c1", "s2-a")
    choices = slot_choices(shared.local_view(new), "a", 2)
    assert choices[0].slot == 1 and choices[0].score == 0
    assert choices[1].slot == 0 and choices[1].reused == 2000 and choices[1].evicted == 2000


def test_a_busy_slot_comes_last() -> None:
    shared = LocalShared(clock=iter(range(100)).__next__)
    shared.remember(HASHES, "a", 0, 9000, 10 * 2048)
    end = shared.begin("a", 0)
    assert slot_choices(shared.local_view(HASHES), "a", 2)[0].slot == 1
    end()
    assert slot_choices(shared.local_view(HASHES), "a", 2)[0].slot == 0


def test_the_least_recently_used_slot_is_evicted_first() -> None:
    shared = LocalShared(clock=iter(range(100)).__next__)
    shared.remember(("o0",), "a", 0, 1000, 2048)
    shared.remember(("p0",), "a", 1, 1000, 2048)
    assert slot_choices(shared.local_view(("n0",)), "a", 2)[0].slot == 0


POOL = """
backends:
  a: {kind: llamacpp, url: "http://a"}
  b: {kind: llamacpp, url: "http://b"}
  cloud: {kind: anthropic, url: "http://c"}
rules:
  - name: default
    to: [[a, b], cloud]
    pick: PICK
"""


def engine(pick: str) -> Engine:
    return Engine(parse_policy(POOL.replace("PICK", pick), "p.yaml", {}))


def feats() -> Features:
    return Features(tokens=1000, model="claude-opus-4-8")


IDLE = {"a": BackendSnapshot(slots=2), "b": BackendSnapshot(slots=2)}


def test_affinity_sends_the_conversation_back_to_its_backend_and_slot() -> None:
    shared = LocalShared(clock=iter(range(100)).__next__)
    shared.remember(HASHES[:5], "b", 1, 5000, 5 * 2048)
    decision = engine("affinity").decide(feats(), IDLE, shared.local_view(HASHES))
    assert decision.candidates == ("b", "a", "cloud")
    assert decision.slots["b"].slot == 1 and decision.slots["b"].reused == 5000


def test_affinity_gives_way_when_its_backend_is_busy() -> None:
    shared = LocalShared(clock=iter(range(100)).__next__)
    shared.remember(HASHES[:5], "b", 1, 5000, 5 * 2048)
    busy = {**IDLE, "b": BackendSnapshot(slots=2, in_flight=2)}
    decision = engine("affinity").decide(feats(), busy, shared.local_view(HASHES))
    assert decision.candidates == ("a", "cloud") and decision.skipped["b"].startswith("busy")


def test_without_a_known_prefix_affinity_is_least_busy() -> None:
    loaded = {"a": BackendSnapshot(slots=2, in_flight=1), "b": BackendSnapshot(slots=2)}
    assert engine("affinity").decide(feats(), loaded, PrefixView(HASHES)).candidates == ("b", "a", "cloud")


def test_least_busy_and_round_robin() -> None:
    loaded = {"a": BackendSnapshot(slots=2, in_flight=1), "b": BackendSnapshot(slots=2)}
    assert engine("least_busy").decide(feats(), loaded).candidates == ("b", "a", "cloud")
    rr = engine("round_robin")
    assert [rr.decide(feats(), IDLE, sequence=n).candidates[0] for n in range(4)] == ["a", "b", "a", "b"]


def test_a_growing_conversation_writes_only_its_new_blocks() -> None:
    shared = LocalShared(clock=iter(range(100)).__next__)
    written, state = shared.remember(HASHES[:4], "a", 0, 4000, 4 * 2048)
    assert len(written) == 4
    written, state = shared.remember(HASHES[:7], "a", 0, 7000, 7 * 2048, previous=state)
    assert [h for h, _ in written] == list(HASHES[4:7])
    best = slot_choices(shared.local_view(HASHES), "a", 2)[0]
    assert (best.slot, best.reused, best.evicted) == (0, 7000, 0)
    # Another conversation sharing the first two blocks still sees what the slot holds of it.
    other = slot_choices(shared.local_view((*HASHES[:2], "z2")), "a", 2)
    assert next(c for c in other if c.slot == 0).reused == 2000
