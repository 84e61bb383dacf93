"""Saving and restoring llama-server slots (`POST /slots/{id}?action=save|restore`), the I/O
behind a SlotChoice's `save` and `restore` (policy/affinity.py plans them).

A save keeps a prefix another conversation is about to overwrite; a restore puts a returning
conversation's prefix back before its request runs. Either may fail (the file gone, the
server's disk full, the slot emptied by the server first): the request then goes as it would
have without, never fails for it. Files are named per deployment, backend and model (see
slot_file_name), so a server restarted with another model never gets the old one's files.
llama-server reuses only the tokens a restored prefix has in common with the new prompt, so a
file holding something else costs time, never another user's text.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import replace

import msgspec

from router.backends.credentials import own_credentials
from router.backends.http import UpstreamClient, describe
from router.policy.affinity import SlotChoice
from router.protocol.redact import safe_text
from router.state.shared import LocalShared

log = logging.getLogger("ccgate.slots")

# A save or restore waits while its slot is processing (llama-server defers it): past this,
# the request goes without it rather than wait on someone else's answer.
ACTION_WITHIN = 10.0

FILE_NAME = re.compile(r"ccgate-[A-Za-z0-9_-]{1,80}-[0-9]{1,4}\.bin")
Outcome = Callable[[str, str, str, float], None]  # backend, action (save/restore), result (ok/failed), seconds


class SlotFileError(Exception):
    pass


class SlotFileTimeout(SlotFileError):
    """No answer in time: the action may still run on the server (deferred behind a busy slot)."""


async def slot_action(http: UpstreamClient, slot: int, action: str, filename: str) -> dict[str, object]:
    """One save or restore; its answer (n_saved / n_restored, timings), or SlotFileError saying why not."""
    if not FILE_NAME.fullmatch(filename):  # names come from the shared index: only ccgate's own
        raise SlotFileError(f"{filename[:80]!r} is not a name ccgate gives slot files")
    body = msgspec.json.encode({"filename": filename})
    auth = own_credentials(http.config)
    try:
        response = await http.fetch("POST", f"/slots/{slot}?action={action}", auth, body, ACTION_WITHIN)
    except TimeoutError:
        raise SlotFileTimeout(f"no answer within {ACTION_WITHIN:g}s") from None
    except Exception as exc:  # noqa: BLE001 - any failure: the request goes without
        raise SlotFileError(describe(exc)) from None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code != 200 or not isinstance(answer, dict):
        error = answer.get("error") if isinstance(answer, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        said = safe_text(str(message) if message else response.text, auth.values(), 200)
        raise SlotFileError(f"HTTP {response.status_code}: {said}")
    return answer


async def _act(http: UpstreamClient, slot: int, action: str, filename: str, expected: int) -> int:
    """A save or restore that must move at least half the tokens the index expects (a slot
    llama-server already emptied, or a file holding less, is a failure); the tokens it moved."""
    answer = await slot_action(http, slot, action, filename)
    field = "n_saved" if action == "save" else "n_restored"
    moved = answer.get(field)
    if type(moved) is not int or moved < expected // 2:
        raise SlotFileError(f"{field} {moved!r} where {expected} tokens were expected")
    return moved


async def prepare_slot(
    backend: str, http: UpstreamClient, choice: SlotChoice, shared: LocalShared, outcome: Outcome
) -> SlotChoice:
    """Save what the slot holds, then restore the prompt's saved prefix into it, as `choice`
    says. Returns the choice as it now stands: what the slot holds (`held`), the tokens it
    should reuse. What llama-server says it saved or restored is checked against what the
    index expected: a slot already emptied (or a file holding less) is a failure, and the
    index forgets that file rather than promise it."""
    if choice.save and choice.held is not None:
        start = time.perf_counter()
        try:
            saved = await _act(http, choice.slot, "save", choice.save, choice.held.tokens)
        except SlotFileError as exc:
            outcome(backend, "save", "failed", time.perf_counter() - start)
            log.warning("backend %s: saving slot %d to %s failed (%s)", backend, choice.slot, choice.save, exc)
            shared.slot_file_lost(backend, choice.save)  # written over in part, or not at all: unknown
            choice = replace(choice, save="")
        else:
            outcome(backend, "save", "ok", time.perf_counter() - start)
            shared.slot_saved(backend, choice.save, choice.held)
            log.info("backend %s: slot %d saved to %s (%d tokens)", backend, choice.slot, choice.save, saved)
    if choice.restore and choice.restored is not None:
        start = time.perf_counter()
        try:
            restored = await _act(http, choice.slot, "restore", choice.restore, choice.restored.tokens)
        except SlotFileError as exc:
            outcome(backend, "restore", "failed", time.perf_counter() - start)
            log.warning(
                "backend %s: restoring %s into slot %d failed (%s); the prompt is processed whole",
                backend,
                choice.restore,
                choice.slot,
                exc,
            )
            if not isinstance(exc, SlotFileTimeout):  # a restore still deferred may yet succeed
                shared.slot_file_lost(backend, choice.restore)
            # llama-server empties a slot whose restore failed: what it holds is unknown now
            return replace(choice, restore="", restored=None, reused=0, held=None)
        outcome(backend, "restore", "ok", time.perf_counter() - start)
        log.info("backend %s: %s restored into slot %d (%d tokens)", backend, choice.restore, choice.slot, restored)
        held = shared.slot_restored(backend, choice.slot, choice.restore, choice.restored)
        return replace(choice, held=held)
    return choice
