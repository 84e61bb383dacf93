"""The live state of one backend as the pure engine sees it: a plain, frozen snapshot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Breaker = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class BackendSnapshot:
    healthy: bool = True
    detail: str = ""
    breaker: Breaker = "closed"
    breaker_detail: str = ""  # "breaker open since 12:03:04 after 3 failures (last: ...)"
    in_flight: int = 0  # this gateway's own requests in progress on the backend
    processing: int | None = None  # llama-server: requests being generated (/slots, /metrics)
    deferred: int | None = None  # llama-server: requests waiting for a slot (/metrics)
    slots: int | None = None  # llama-server: parallel slots (-np)
    n_ctx: int | None = None  # llama-server: context size of one slot
    kv_cache: float | None = None  # llama-server: KV-cache use, 0..1
    model: str | None = None  # llama-server: the model file it runs (for `tools: auto`)
    slot_files: bool | None = None  # llama-server: started with --slot-save-path
    slot_files_unused: bool = False  # restored slots gave nothing back (a sliding-window model)
    pinning_useless: bool = False  # slots pinned to gave nothing back (llama-server clears idle slots)
    # Requests from other clients: what llama-server reported (processing + deferred) beyond
    # ours at that moment. Kept apart so a report a second old does not count ours twice.
    foreign: int = 0

    @property
    def available(self) -> bool:
        """Can take requests now: reachable, and its breaker not open (half-open lets one try)."""
        return self.healthy and self.breaker != "open"

    @property
    def queue_depth(self) -> int:
        """Requests on the backend now: ours (exact) plus other clients' (as of the last poll)."""
        return self.in_flight + self.foreign

    @property
    def free_slots(self) -> int | None:
        if self.slots is None:
            return None
        return max(0, self.slots - self.queue_depth)
