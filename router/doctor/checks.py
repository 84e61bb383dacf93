"""The checks doctor runs against one backend, each with a verdict and, when it fails, a fix."""

from __future__ import annotations

import json
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import msgspec

from router.backends.credentials import credentials, own_credentials
from router.backends.http import TransportError, UpstreamClient, describe
from router.backends.llama_probe import allows_slot_files
from router.config import BackendConfig
from router.doctor import probe_requests as req
from router.doctor.answers import (
    Answer,
    error_answer,
    read_anthropic,
    read_anthropic_stream,
    read_openai,
    read_openai_stream,
    read_responses,
    read_responses_stream,
)
from router.policy.model_families import Family, family_of, family_of_template
from router.protocol.tool_check import ToolBox, ToolCallError
from router.protocol.tool_text import extract

Status = Literal["ok", "fail", "warn", "skip"]
Dialect = Literal["anthropic", "openai", "responses"]
PATHS: dict[Dialect, str] = {
    "anthropic": "/v1/messages",
    "openai": "/v1/chat/completions",
    "responses": "/v1/responses",
}
BODIES = {"anthropic": req.anthropic_body, "openai": req.openai_body, "responses": req.responses_body}
READERS = {
    "anthropic": (read_anthropic, read_anthropic_stream),
    "openai": (read_openai, read_openai_stream),
    "responses": (read_responses, read_responses_stream),
}
TEMPLATE_FIX = (
    "start llama-server with --jinja and the chat template made for your model "
    "(--chat-template-file model.jinja, or a GGUF whose embedded template renders tools)"
)


@dataclass(slots=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass(slots=True)
class Facts:
    """What the backend said about itself."""

    model: str | None = None
    n_ctx: int | None = None
    slots: int | None = None
    template_tools: bool | None = None  # does its chat template render tools?
    template: str = ""


@dataclass(slots=True)
class Report:
    backend: str
    kind: str
    url: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.status != "fail" for check in self.checks)


async def examine(name: str, config: BackendConfig, probe_timeout: float, keys: bool = False) -> Report:
    """`keys`: the gateway runs with team keys (CCGATE_AUTH=keys or `auth: keys`)."""
    report = Report(name, config.kind, _safe_url(config.url))
    try:
        http = UpstreamClient(name, config)
    except ValueError as exc:  # a TLS file it cannot use
        report.checks.append(Check("egress", "fail", str(exc), "fix the path, or the file's contents"))
        return report
    report.checks.append(Check("egress", "ok", _egress(http, config)))
    if keys and config.needs_client_credentials:
        report.checks.append(
            Check(
                "credentials",
                "warn",
                "no api_key: a request whose only credential is its team key brings none for it, and gets a 403 "
                "when nothing else can take it (the local box busy)",
                "set api_key (api_key: ${ANTHROPIC_API_KEY}), or have developers send their own key as x-api-key "
                "and the team key as x-ccgate-key",
            )
        )
    try:
        reachable = await _reachable(http, config, report)
        if not reachable:
            return report
        facts = await _facts(http, config, report)
        _judge_family(facts, report)
        _judge_context(facts, report)
        _judge_template(facts, report)
        if config.kind == "llamacpp":
            await _judge_slot_files(http, config, facts, report)
        for dialect in _dialects(config):
            dropped: bool | None = None
            for stream in (False, True):
                answer = await _probe(http, config, facts, dialect, stream, probe_timeout)
                if not answer.error and not answer.calls and dropped is None:
                    dropped = await _tools_dropped(http, config, facts, dialect, answer, probe_timeout)
                report.checks.append(_judge_probe(dialect, stream, answer, facts, bool(dropped)))
    finally:
        await http.aclose()
    return report


def _egress(http: UpstreamClient, config: BackendConfig) -> str:
    said = http.egress.describe()
    if http.egress.tls is not None:
        trusted = "the system's CA store" + (f" and {config.ca_file}" if config.ca_file else "")
        said += f"; TLS trusting {trusted}" + (
            f", client certificate {config.client_cert}" if config.client_cert else ""
        )
    return said


def _dialects(config: BackendConfig) -> list[Dialect]:
    if config.kind == "llamacpp":
        # llama-server speaks all three; ccgate sends `dialect` (anthropic or openai), and the
        # Responses probe says whether Codex CLI's own dialect works there too
        return ["anthropic", "openai", "responses"]
    return ["openai"] if config.kind == "openai" else ["anthropic"]


async def _reachable(http: UpstreamClient, config: BackendConfig, report: Report) -> bool:
    if config.kind == "anthropic" and not config.api_key:
        report.checks.append(
            Check(
                "reachable",
                "skip",
                "no api_key: ccgate sends each client's own credentials here, so doctor cannot probe it",
                "set api_key (e.g. ${ANTHROPIC_API_KEY}) to let doctor test this backend",
            )
        )
        return False
    path = "/health" if config.kind == "llamacpp" else config.health_path or "/v1/models"
    headers = _headers(config)
    try:
        response = await http.fetch("GET", path, headers)
    except (TimeoutError, TransportError) as exc:
        fix = (
            f"start it: llama-server -m your-model.gguf --jinja -c 65536 --port {_port(config.url)}"
            if config.kind == "llamacpp"
            else "check the url in the policy file and that the server is running"
        )
        report.checks.append(Check("reachable", "fail", f"{describe(exc)} ({path})", fix))
        return False
    if response.status_code == 503 and config.kind == "llamacpp":
        report.checks.append(
            Check("reachable", "fail", "llama-server is still loading the model", "wait, then run doctor again")
        )
        return False
    if response.status_code in (401, 403):
        report.checks.append(
            Check("reachable", "fail", f"{path} refused the credentials (HTTP {response.status_code})", "check api_key")
        )
        return False
    if response.status_code >= 500:
        report.checks.append(Check("reachable", "fail", f"{path} answered HTTP {response.status_code}"))
        return False
    report.checks.append(Check("reachable", "ok", f"up ({path})"))
    return True


async def _facts(http: UpstreamClient, config: BackendConfig, report: Report) -> Facts:
    facts = Facts()
    if config.kind == "llamacpp":
        props = await _get_json(http, config, "/props")
        refused = await _refuses(http, config, "/props")
        if refused:
            key = "the configured api_key" if config.api_key else "requests without an api_key"
            report.checks.append(
                Check(
                    "credentials",
                    "fail",
                    f"/props refused {key} (HTTP {refused}): llama-server runs with --api-key, so ccgate "
                    "can neither read its slots, context and load nor send it requests",
                    "set the backend's api_key to the key llama-server was started with (LOCAL_LLAMA_API_KEY)",
                )
            )
        if isinstance(props, dict):
            model = props.get("model_alias") or props.get("model_path")
            facts.model = model if isinstance(model, str) else None
            facts.n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx")
            facts.slots = props.get("total_slots")
            facts.template = props.get("chat_template") or ""
            caps = props.get("chat_template_caps")
            if isinstance(caps, dict) and "supports_tools" in caps:
                facts.template_tools = bool(caps["supports_tools"])
            elif facts.template:
                facts.template_tools = "tools" in facts.template
    if facts.model is None:
        listed = await _get_json(http, config, "/v1/models")
        ids = (
            [m.get("id") for m in (listed or {}).get("data", []) if isinstance(m, dict)]
            if isinstance(listed, dict)
            else []
        )
        facts.model = config.model_names[0] if config.model_names else (ids[0] if ids else None)
    if facts.model:
        size = f", {facts.slots} slot(s) × {facts.n_ctx} tokens" if facts.slots and facts.n_ctx else ""
        report.checks.append(Check("model", "ok", f"{_short(facts.model)}{size}"))
    else:
        report.checks.append(Check("model", "skip", "the server does not say which model it runs"))
    return facts


def family_of_facts(facts: Facts) -> Family | None:
    """The model's family by its name, else by what its chat template writes."""
    return family_of(facts.model) or family_of_template(facts.template)


def _judge_family(facts: Facts, report: Report) -> None:
    family = family_of_facts(facts)
    if family is None:
        report.checks.append(Check("model family", "skip", "not in ccgate's table: the probe calls below decide"))
    elif family.tools:
        report.checks.append(Check("model family", "ok", f"{family.name}: tool calling ({family.note})"))
    else:
        report.checks.append(Check("model family", "fail", f"{family.name}: no tool calling", family.note))


def _judge_context(facts: Facts, report: Report) -> None:
    n_ctx = facts.n_ctx
    if not n_ctx:
        return
    per_slot = f"{n_ctx} tokens per slot" if facts.slots and facts.slots > 1 else f"{n_ctx} tokens"
    if n_ctx < req.CLAUDE_CODE_PROMPT_TOKENS:
        fix = "raise -c (it is shared by the -np slots: -c 65536 -np 1, or -c 131072 -np 2)"
        report.checks.append(Check("context", "fail", f"context {n_ctx} < Claude Code's ~20k-token prompt", fix))
    elif n_ctx < req.COMFORTABLE_CONTEXT:
        fix = "raise -c so a conversation has room to grow (32k per slot or more)"
        report.checks.append(Check("context", "warn", f"{per_slot}: Claude Code's prompt alone takes ~20k", fix))
    else:
        report.checks.append(Check("context", "ok", f"{per_slot} ≥ Claude Code's ~20k-token prompt"))


async def _judge_slot_files(http: UpstreamClient, config: BackendConfig, facts: Facts, report: Report) -> None:
    """Slot files (--slot-save-path): with more sessions than slots, what keeps a returning
    session from having its whole prompt processed again."""
    if config.slot_files.files == 0:
        report.checks.append(Check("slot files", "skip", "off in the policy (slot_files.files: 0)"))
        return
    allowed = await allows_slot_files(http, own_credentials(config))
    if allowed is None:
        report.checks.append(Check("slot files", "skip", "POST /slots did not say whether slots may be saved"))
    elif not allowed:
        detail = "not allowed: with more sessions than slots, a session back after losing its slot is processed again"
        fix = "start llama-server with --slot-save-path DIR (ccgate then keeps at most slot_files.files files there)"
        report.checks.append(Check("slot files", "warn", detail, fix))
    elif (family := family_of_facts(facts)) is not None and family.sliding_window:
        detail = f"allowed, but {family.name} (sliding-window attention) reuses a restored slot only with --swa-full"
        fix = "start llama-server with --swa-full too (ccgate turns slot files off when restores give nothing back)"
        report.checks.append(Check("slot files", "warn", detail, fix))
    else:
        budget = config.slot_files.budget(facts.slots if isinstance(facts.slots, int) else None)
        report.checks.append(Check("slot files", "ok", f"saved and restored (up to {budget} files)"))


def _judge_template(facts: Facts, report: Report) -> None:
    family = family_of_facts(facts)
    if family and family.marker and facts.template and family.marker not in facts.template:
        detail = (
            f"not {family.name}'s own template{template_kind(facts.template)}: the model never sees the tools, "
            "and writes this template's end-of-turn markup as text (the GGUF carries no chat template of "
            "its own, so llama-server fell back to a generic one, or another was given)"
        )
        fix = f"start llama-server with {family.name}'s own template: --chat-template-file <from its repo>"
        report.checks.append(Check("chat template", "fail", detail, fix))
        return
    if facts.template_tools is None:
        return
    if facts.template_tools:
        report.checks.append(Check("chat template", "ok", "renders tools"))
        return
    detail = f"this template ignores tools{template_kind(facts.template)}: the model never sees them"
    report.checks.append(Check("chat template", "fail", detail, TEMPLATE_FIX))


# What a chat template is, told by the turn markers it writes: the family's own template, or a
# generic one llama-server falls back to. Gemma's own template has no place for tools at all.
TEMPLATE_KINDS = (
    ("<start_of_turn>", "a Gemma template, which has no place for tools"),
    ("<|start_header_id|>", "a Llama 3 template"),
    ("[INST]", "a Mistral template"),
    ("<|im_start|>", "generic ChatML"),
)


def template_kind(template: str) -> str:
    """` (what it is)` for a doctor line, or "" when the markers say nothing."""
    return next((f" ({kind})" for marker, kind in TEMPLATE_KINDS if marker in template), "")


async def _probe(
    http: UpstreamClient,
    config: BackendConfig,
    facts: Facts,
    dialect: Dialect,
    stream: bool,
    probe_timeout: float,
    tools: bool = True,
) -> Answer:
    model = config.upstream_model(facts.model or "claude-sonnet-4-5")
    body = msgspec.json.encode(BODIES[dialect](model, stream, tools))
    headers = {"content-type": "application/json", **_headers(config)}
    for attempt in (1, 2):
        try:
            response = await http.fetch("POST", PATHS[dialect], headers, body, within=probe_timeout)
            break
        except aiohttp.ServerDisconnectedError as exc:
            # a kept-alive connection the server had just closed: the probe changes nothing, so
            # it is sent once more on a new connection before it counts as the server's answer
            if attempt == 2:
                return Answer(0, describe(exc))
        except TimeoutError:
            return Answer(0, f"no answer within {probe_timeout:g}s")
        except TransportError as exc:
            return Answer(0, describe(exc))
    if response.status_code >= 400:
        return error_answer(response.status_code, response.content)
    whole, streamed = READERS[dialect]
    return streamed(response.content) if stream else whole(response.content)


async def _tools_dropped(
    http: UpstreamClient, config: BackendConfig, facts: Facts, dialect: Dialect, answer: Answer, probe_timeout: float
) -> bool:
    """Did the server leave the tools out of the prompt? Then the prompt is no longer with them."""
    if answer.input_tokens is None:
        return False
    bare = await _probe(http, config, facts, dialect, False, probe_timeout, tools=False)
    return bare.input_tokens is not None and abs(bare.input_tokens - answer.input_tokens) <= 2


def _judge_probe(dialect: Dialect, stream: bool, answer: Answer, facts: Facts, dropped: bool) -> Check:
    name = f"tool call {dialect}{' stream' if stream else ''}"
    if answer.error:
        return Check(name, "fail", f"{PATHS[dialect]}: {_clip(answer.error, 110)}", _fix_for_error(answer.error))
    tools = ToolBox([req.READ_TOOL])
    for call_name, arguments in answer.calls:
        try:
            checked = tools.check(call_name, arguments)
        except ToolCallError as exc:
            fix = "use a model that calls tools reliably (ccgate's tool guard rejects or reroutes these calls)"
            return Check(name, "fail", f"malformed call: {exc.message}", fix)
        if checked.repaired:
            detail = f"call needed repair ({call_name}: {_clip(str(arguments), 60)}); ccgate's tool guard fixes it"
            return Check(name, "warn", detail, "prefer a model or quantisation that emits clean JSON")
    if answer.calls:
        return Check(name, "ok", f"{answer.calls[0][0]}({_clip(_args(answer.calls[0][1]), 60)})")
    found = None
    with suppress(ToolCallError):  # a marker without a readable call: judged as prose below
        found = extract(answer.text, tools.names)
    if found is not None and found.calls:
        detail = f"the call came back as text ({found.calls[0].format} format), not as a tool call"
        note = "; ccgate's tool guard converts it on the fly (tool_guard: on)"
        family = family_of_facts(facts)
        fix = f"make llama-server parse it itself: {family.name}: {family.note}" if family else TEMPLATE_FIX
        return Check(name, "fail", detail + note, fix)
    family = family_of_facts(facts)
    if family is not None and not family.tools:
        fix = family.note
    elif facts.template_tools is False:
        fix = TEMPLATE_FIX
    elif dropped:
        return Check(
            name,
            "fail",
            "no tool call returned: the endpoint dropped the tools parameter (same prompt size with and without them)",
            "the server or a proxy in front of it ignores `tools`: enable tool support there (llama-server: --jinja)",
        )
    else:
        fix = "use a model with tool calling (Qwen3-Coder, Devstral, gpt-oss, ...) and start llama-server with --jinja"
    return Check(name, "fail", f"no tool call returned; the model wrote: {_clip(answer.text, 70)!r}", fix)


def _fix_for_error(error: str) -> str:
    lowered = error.lower()
    if "jinja" in lowered:
        return "start llama-server with --jinja"
    if "grammar" in lowered:
        return (
            "the model's call broke llama-server's tool-call grammar (a malformed call): use a model with tool "
            "calling and its own template (--chat-template-file); ccgate reroutes such requests to the fallback"
        )
    if "context" in lowered or "exceed" in lowered:
        return "raise -c"
    if "401" in lowered or "auth" in lowered or "api key" in lowered or "api_key" in lowered:
        return "check api_key"
    return ""


async def _refuses(http: UpstreamClient, config: BackendConfig, path: str) -> int | None:
    """The status when `path` refuses ccgate's credentials (401, 403), else None."""
    try:
        response = await http.fetch("GET", path, _headers(config))
    except (TimeoutError, TransportError):
        return None
    return response.status_code if response.status_code in (401, 403) else None


async def _get_json(http: UpstreamClient, config: BackendConfig, path: str) -> Any:
    try:
        response = await http.fetch("GET", path, _headers(config))
        return response.json() if response.status_code == 200 else None
    except (TimeoutError, TransportError, ValueError):
        return None


def _headers(config: BackendConfig) -> dict[str, str]:
    headers = credentials(config, {})
    if config.kind == "anthropic":
        headers["anthropic-version"] = "2023-06-01"
    return headers


def _safe_url(url: str) -> str:
    parsed = urlsplit(url)
    if parsed.username is None and parsed.password is None:
        return url
    netloc = parsed.netloc.rpartition("@")[2]
    return urlunsplit((parsed.scheme, netloc, parsed.path, parsed.query, parsed.fragment))


def _port(url: str) -> int:
    parsed = urlsplit(url)
    return parsed.port or (443 if parsed.scheme == "https" else 80)


def _short(model: str) -> str:
    return model.replace("\\", "/").rsplit("/", 1)[-1]


def _args(arguments: str | dict[str, Any]) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def _clip(text: str, size: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= size else text[: size - 1] + "…"
