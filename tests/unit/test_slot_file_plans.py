"""Planning slot saves and restores (policy/affinity.py with SlotSaving): what is kept, where,
and when a saved prefix is put back. The I/O is tested against real llama-servers in
tests/integration/test_slot_files.py."""

from __future__ import annotations

from router.policy.affinity import FILE_KEEP, SlotSaving, slot_choices, slot_file_name
from router.state.shared import LocalShared

SAVING = SlotSaving(files=2, min_tokens=1000, tag="t")
N0, N1 = (slot_file_name("x", "t", n) for n in range(2))
A = tuple(f"a{i}" for i in range(8))  # conversation A's blocks, growing
B = tuple(f"b{i}" for i in range(8))
C = tuple(f"c{i}" for i in range(8))


def shared() -> LocalShared:
    return LocalShared(clock=iter(range(1, 1000)).__next__)


def test_a_prefix_worth_keeping_is_saved_before_its_slot_is_taken() -> None:
    s = shared()
    s.remember(A[:4], "x", 0, 4000, 4 * 2048)
    best = slot_choices(s.local_view(B[:2]), "x", 1, SAVING)[0]
    assert (best.slot, best.save, best.evicted) == (0, N0, 0)
    assert best.held is not None and best.held.tail == "a3"


def test_a_short_prefix_is_not_worth_a_file() -> None:
    s = shared()
    s.remember(A[:1], "x", 0, 900, 2048)
    best = slot_choices(s.local_view(B[:2]), "x", 1, SAVING)[0]
    assert (best.save, best.evicted) == ("", 900)


def test_without_saving_nothing_is_planned() -> None:
    s = shared()
    s.remember(A[:4], "x", 0, 4000, 4 * 2048)
    best = slot_choices(s.local_view(B[:2]), "x", 1)[0]
    assert (best.save, best.restore, best.evicted) == ("", "", 4000)


def test_a_returning_conversation_gets_its_saved_prefix_back() -> None:
    s = shared()
    s.remember(A[:4], "x", 0, 4000, 4 * 2048)
    s.slot_saved("x", N0, s.local_view(A[:4]).slots[("x", 0)])
    s.remember(B[:3], "x", 0, 3000, 3 * 2048)  # B took the slot
    best = slot_choices(s.local_view(A[:6]), "x", 1, SAVING)[0]
    assert (best.restore, best.reused) == (N0, 4000)
    assert best.restored is not None and best.restored.tail == "a3"
    # B's prefix is saved first, never over the file being restored
    assert best.save == N1 and best.evicted == 0


def test_a_restore_must_beat_what_a_slot_holds_by_min_tokens() -> None:
    s = shared()
    s.remember(A[:4], "x", 0, 4000, 4 * 2048)
    s.slot_saved("x", N0, s.local_view(A[:4]).slots[("x", 0)])
    s.remember(A[:3], "x", 1, 3500, 3 * 2048)  # another slot holds most of it
    choices = slot_choices(s.local_view(A[:6]), "x", 2, SAVING)
    assert all(c.restore == "" for c in choices)


def test_a_busy_slot_is_neither_saved_nor_restored_into() -> None:
    s = shared()
    s.remember(A[:4], "x", 0, 4000, 4 * 2048)
    s.slot_saved("x", N0, s.local_view(A[:4]).slots[("x", 0)])
    s.remember(B[:3], "x", 0, 3000, 3 * 2048)
    end = s.begin("x", 0)
    best = slot_choices(s.local_view(A[:6]), "x", 1, SAVING)[0]
    assert best.busy and (best.save, best.restore) == ("", "")
    end()


def test_files_are_a_bounded_set_reused_least_recently_used() -> None:
    s = shared()
    for blocks in (A, B):  # two saved conversations fill the budget of two
        s.remember(blocks[:4], "x", 0, 4000, 4 * 2048)
        choice = slot_choices(s.local_view(("new",)), "x", 1, SAVING)[0]
        assert choice.save
        assert choice.held is not None
        s.slot_saved("x", choice.save, choice.held)
    assert {name for _, name in s.local_view(()).files} == {N0, N1} == set(SAVING.names("x"))
    s.remember(C[:4], "x", 0, 4000, 4 * 2048)
    choice = slot_choices(s.local_view(("new",)), "x", 1, SAVING)[0]
    # neither A nor B came back yet, and both were saved within FILE_KEEP: C is not saved over
    # them (that would trade one lost conversation for another, and thrash)
    assert (choice.save, choice.evicted) == ("", 4000)
    later = LocalShared(clock=iter(range(int(FILE_KEEP) + 100, int(FILE_KEEP) + 200)).__next__)
    later._files, later._slots = s._files, s._slots
    choice = slot_choices(later.local_view(("new",)), "x", 1, SAVING)[0]
    assert choice.save == N0  # past FILE_KEEP: A's, the older of the two


def test_a_prefix_already_saved_is_not_saved_again() -> None:
    s = shared()
    s.remember(A[:4], "x", 0, 4000, 4 * 2048)
    s.slot_saved("x", N0, s.local_view(A[:4]).slots[("x", 0)])
    best = slot_choices(s.local_view(B[:2]), "x", 1, SAVING)[0]
    assert (best.save, best.evicted) == ("", 0)


def test_a_restored_conversation_that_grew_is_saved_over_its_own_file() -> None:
    s = shared()
    s.remember(A[:4], "x", 0, 4000, 4 * 2048)
    s.slot_saved("x", N1, s.local_view(A[:4]).slots[("x", 0)])
    previous = s.slot_restored("x", 0, N1, s.local_view(()).files[("x", N1)])
    s.remember(A[:6], "x", 0, 6000, 6 * 2048, previous)  # its next turn, on the restored slot
    held = s.local_view(()).slots[("x", 0)]
    assert (held.file, held.file_tail, held.tail) == (N1, "a3", "a5")
    best = slot_choices(s.local_view(B[:2]), "x", 1, SAVING)[0]
    assert best.save == N1  # the longer prefix replaces the shorter one


def test_a_file_since_given_to_another_conversation_is_not_overwritten() -> None:
    s = shared()
    s.remember(A[:4], "x", 0, 4000, 4 * 2048)
    s.slot_saved("x", N0, s.local_view(A[:4]).slots[("x", 0)])
    previous = s.slot_restored("x", 0, N0, s.local_view(()).files[("x", N0)])
    s.remember(A[:6], "x", 0, 6000, 6 * 2048, previous)
    s.remember(B[:4], "x", 1, 4000, 4 * 2048)
    s.slot_saved("x", N0, s.local_view(B[:4]).slots[("x", 1)])  # B's now
    best = slot_choices(s.local_view(C[:2]), "x", 1, SAVING)[0]  # slot 0 (A) goes to C
    assert best.save == N1


def test_a_restore_that_failed_is_not_offered_again() -> None:
    s = shared()
    s.remember(A[:4], "x", 0, 4000, 4 * 2048)
    s.slot_saved("x", N0, s.local_view(A[:4]).slots[("x", 0)])
    s.remember(B[:3], "x", 0, 3000, 3 * 2048)
    s.slot_file_lost("x", N0)
    best = slot_choices(s.local_view(A[:6]), "x", 1, SAVING)[0]
    assert best.restore == ""


def test_file_names_are_plain_whatever_the_backend_is_called() -> None:
    assert slot_file_name("gpu box/../1", "ab12", 3) == "ccgate-gpu_box____1-ab12-3.bin"


def test_files_of_another_model_or_deployment_are_neither_restored_nor_overwritten() -> None:
    s = shared()
    s.remember(A[:4], "x", 0, 4000, 4 * 2048)
    s.slot_saved("x", N0, s.local_view(A[:4]).slots[("x", 0)])  # saved under the old model's tag
    s.remember(B[:3], "x", 0, 3000, 3 * 2048)
    other = SlotSaving(files=2, min_tokens=1000, tag="u")  # the server now runs another model
    best = slot_choices(s.local_view(A[:6]), "x", 1, other)[0]
    assert best.restore == "" and best.save == slot_file_name("x", "u", 0)


def test_the_engine_tags_files_with_deployment_backend_and_model() -> None:
    from router.config import BackendConfig
    from router.policy.engine import _saving
    from router.policy.snapshot import BackendSnapshot

    config = BackendConfig(kind="llamacpp", url="http://a")
    up = BackendSnapshot(slots=2, slot_files=True, model="/m/qwen.gguf")
    tags = {
        _saving("a", config, up, "ccgate:").tag,
        _saving("a", config, BackendSnapshot(slots=2, slot_files=True, model="/m/other.gguf"), "ccgate:").tag,
        _saving("a", config, up, "team2:").tag,
        _saving("b", config, up, "ccgate:").tag,
    }
    assert len(tags) == 4
    assert _saving("a", config, BackendSnapshot(slots=2, slot_files=False), "ccgate:") is None
