"""Saving and restoring llama-server slots (`POST /slots/{id}?action=save|restore`), the I/O
behind a SlotChoice's `save` and `restore` (policy/affinity.py plans them).

A save keeps a prefix another conversation is about to overwrite; a restore puts a returning
conversation's prefix back before its request runs. Either may fail (the file gone, the server
restarted with another model, its disk full): the request then goes as it would have without,
never fails for it. llama-server reuses only the tokens a restored prefix has in common with
the new prompt, so a file holding something else costs time, never another user's text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

from router.backends.credentials import own_credentials
from router.backends.http import UpstreamClient, describe
from router.policy.affinity import SlotChoice
from router.policy.schema import BackendConfig
from router.policy.snapshot import BackendSnapshot
from router.state.shared import LocalShared

log = logging.getLogger("ccgate.slots")

# A save or restore waits while its slot is processing (llama-server defers it): past this,
# the request goes without it rather than wait on someone else's answer.
ACTION_WITHIN = 30.0

Outcome = Callable[[str, str, str, float], None]  # backend, action (save/restore), result (ok/failed), seconds


def slot_files_state(config: BackendConfig | None, snapshot: BackendSnapshot) -> str | None:
    """Whether ccgate saves and restores this backend's slots, and if not why, for a person
    (start-up line, /readyz, the doctor); None for what is not llama-server."""
    if config is None or config.kind != "llamacpp":
        return None
    if config.slot_files.files == 0:
        return "off (the policy's slot_files.files is 0)"
    if snapshot.slot_files is None:
        return "unknown until llama-server answers (POST /slots)"
    if not snapshot.slot_files:
        return "off: llama-server was started without --slot-save-path"
    if snapshot.slot_files_unused:
        return (
            "off: restored slots gave nothing back (a sliding-window model such as Gemma 3 or gpt-oss "
            "reuses a restored slot only with llama-server's --swa-full)"
        )
    budget = config.slot_files.budget(snapshot.slots)
    if not budget:
        return "off: llama-server reports no slots (/props total_slots)"
    return f"on: up to {budget} files, prefixes of {config.slot_files.min_tokens}+ tokens"


class SlotFileError(Exception):
    pass


async def slot_action(http: UpstreamClient, slot: int, action: str, filename: str) -> dict[str, object]:
    """One save or restore; its answer (n_saved / n_restored, timings), or SlotFileError saying why not."""
    body = b'{"filename": "%s"}' % filename.encode()  # ccgate's own names: [A-Za-z0-9_.-] only
    try:
        response = await http.fetch(
            "POST", f"/slots/{slot}?action={action}", own_credentials(http.config), body, ACTION_WITHIN
        )
    except TimeoutError:
        raise SlotFileError(f"no answer within {ACTION_WITHIN:g}s") from None
    except Exception as exc:  # noqa: BLE001 - any failure: the request goes without
        raise SlotFileError(describe(exc)) from None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code != 200 or not isinstance(answer, dict):
        error = answer.get("error") if isinstance(answer, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        said = str(message)[:200] if message else response.text[:200]
        said = "".join(ch if ch.isprintable() else " " for ch in said)
        raise SlotFileError(f"HTTP {response.status_code}: {said}")
    return answer


async def prepare_slot(
    backend: str, http: UpstreamClient, choice: SlotChoice, shared: LocalShared, outcome: Outcome
) -> SlotChoice:
    """Save what the slot holds, then restore the prompt's saved prefix into it, as `choice`
    says. Returns the choice as it now stands: what the slot holds (`held`), the tokens it
    should reuse."""
    if choice.save and choice.held is not None:
        start = time.perf_counter()
        try:
            await slot_action(http, choice.slot, "save", choice.save)
        except SlotFileError as exc:
            outcome(backend, "save", "failed", time.perf_counter() - start)
            log.warning("backend %s: saving slot %d to %s failed (%s)", backend, choice.slot, choice.save, exc)
            choice = replace(choice, save="")
        else:
            outcome(backend, "save", "ok", time.perf_counter() - start)
            shared.slot_saved(backend, choice.save, choice.held)
            held = choice.held.tokens
            log.info("backend %s: slot %d saved to %s (%d tokens)", backend, choice.slot, choice.save, held)
    if choice.restore and choice.restored is not None:
        start = time.perf_counter()
        try:
            await slot_action(http, choice.slot, "restore", choice.restore)
        except SlotFileError as exc:
            outcome(backend, "restore", "failed", time.perf_counter() - start)
            log.warning(
                "backend %s: restoring %s into slot %d failed (%s); the prompt is processed whole",
                backend,
                choice.restore,
                choice.slot,
                exc,
            )
            shared.slot_file_lost(backend, choice.restore)
            # llama-server empties a slot whose restore failed
            return replace(choice, restore="", restored=None, reused=0, held=None)
        outcome(backend, "restore", "ok", time.perf_counter() - start)
        log.info(
            "backend %s: %s restored into slot %d (%d tokens)", backend, choice.restore, choice.slot, choice.reused
        )
        held = shared.slot_restored(backend, choice.slot, choice.restore, choice.restored)
        return replace(choice, held=held)
    return choice
