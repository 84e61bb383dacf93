"""What llama-server says about its load: /health, /props (slots, n_ctx), /metrics or /slots."""

from __future__ import annotations

from contextlib import suppress

from router.backends.base import Probe
from router.backends.credentials import own_credentials
from router.backends.http import Fetched, UpstreamClient, describe


class LlamaProbe:
    """Polls one llama-server. `/metrics` (needs --metrics) gives processing and deferred
    requests; without it `/slots` gives the processing count; `/props` gives the slot count and
    per-slot context, read again whenever the server comes back (it may have restarted with -np/-c).

    With `--api-key`, llama-server leaves only `/health` open: the others get the backend's own
    key, and a 401 there is said in the probe's detail (slots, context and load are unknown
    then, which costs slot pinning), never silently ignored."""

    def __init__(self, http: UpstreamClient) -> None:
        self.http = http
        self._props: tuple[int | None, int | None, str | None] | None = None
        self._slot_files: bool | None = None  # started with --slot-save-path (None: unknown)
        # The server's work so far (/metrics prompt_tokens_total, or /slots' newest id_task):
        # it never goes down while the process lives, so going down means it restarted.
        self._progress: tuple[str, float] | None = None
        self._metrics = True  # until the server says it has none
        self._auth = own_credentials(http.config)
        self._refused: str | None = None  # the last path that refused our credentials

    async def __call__(self) -> Probe:
        try:
            health = await self.http.fetch("GET", "/health")
        except Exception as exc:  # noqa: BLE001 - any failure means "down"
            self._props = None
            return Probe(False, describe(exc))
        if health.status_code != 200:
            self._props = None
            return Probe(False, f"/health answered HTTP {health.status_code}")
        self._refused = None
        if self._props is None:
            self._props = await self._read_props()
            self._slot_files = await allows_slot_files(self.http, self._auth) if self._props is not None else None
        slots, n_ctx, model = self._props or (None, None, None)
        processing, deferred, progress = await self._load()
        before = self._progress
        restarted = progress is not None and before is not None and before[0] == progress[0] and progress[1] < before[1]
        if progress is not None:
            self._progress = progress
        detail = "up"
        if self._refused:
            key = "the configured api_key" if self._auth else "no api_key (llama-server runs with --api-key)"
            detail = f"up, but {self._refused} refused {key}: no slots, context or load known"
        return Probe(
            True,
            detail,
            processing=processing,
            deferred=deferred,
            slots=slots,
            n_ctx=n_ctx,
            model=model,
            slot_files=self._slot_files,
            restarted=restarted,
        )

    async def _get(self, path: str) -> Fetched | None:
        with suppress(Exception):
            response = await self.http.fetch("GET", path, self._auth)
            if response.status_code in (401, 403) and self._refused is None:
                self._refused = path
            return response
        return None

    async def _read_props(self) -> tuple[int | None, int | None, str | None] | None:
        """Slots, context per slot and model; None when /props could not be read (asked again)."""
        response = await self._get("/props")
        if response is None or response.status_code in (401, 403):
            return None
        if response.status_code != 200:
            return None, None, None  # this server has no /props
        try:
            props = response.json()
            n_ctx = props.get("default_generation_settings", {}).get("n_ctx")
            slots = props.get("total_slots")
            model = props.get("model_path") or props.get("model_alias")
        except (ValueError, AttributeError):
            return None, None, None
        return (
            slots if isinstance(slots, int) else None,
            n_ctx if isinstance(n_ctx, int) else None,
            model if isinstance(model, str) else None,
        )

    async def _load(self) -> tuple[int | None, int | None, tuple[str, float] | None]:
        """Requests processing and deferred, and the server's progress (see _progress)."""
        if self._metrics:
            response = await self._get("/metrics")
            if response is not None and response.status_code == 200:
                values = parse_metrics(response.text)
                processing = values.get("llamacpp:requests_processing")
                deferred = values.get("llamacpp:requests_deferred")
                total = values.get("llamacpp:prompt_tokens_total")
                return _int(processing), _int(deferred), ("metrics", total) if total is not None else None
            if response is not None and response.status_code in (404, 501):
                self._metrics = False
        response = await self._get("/slots")
        if response is None or response.status_code != 200:
            return None, None, None
        with suppress(ValueError, TypeError, AttributeError):
            slots = response.json()
            tasks = [s.get("id_task") for s in slots]
            newest = max((t for t in tasks if type(t) is int), default=-1)
            return sum(1 for s in slots if s.get("is_processing")), None, ("slots", float(newest))
        return None, None, None


async def allows_slot_files(http: UpstreamClient, auth: dict[str, str]) -> bool | None:
    """Whether slots may be saved to files: an action no server knows is refused as an
    "Invalid action" (400) by a server started with --slot-save-path, as "not supported" (501)
    by one without; it saves, restores or erases nothing either way. None: it did not say."""
    with suppress(Exception):
        response = await http.fetch("POST", "/slots/0?action=ccgate-probe", auth, b"{}")
        if response.status_code == 501:
            return False
        if response.status_code == 400 and "invalid action" in response.text.lower():
            return True
    return None


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format, just the unlabelled samples llama-server exports."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition(" ")
        with suppress(ValueError, IndexError):
            values[name] = float(value.split()[0])
    return values


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)
