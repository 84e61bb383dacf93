"""Spans of a request that falls back: in-memory exporter in-process, and a real OTLP/HTTP receiver."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import yaml
from litestar.testing import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from router.config import Settings
from router.policy.loader import load_policy
from router.server.app import create_app
from router.telemetry.tracing import make_provider
from tests.harness.procs import Process, start_gateway
from tests.integration.test_passthrough import ask


def fallback_policy(path: Path, broken: Process, text: Process) -> Path:
    backends = {"local": {"kind": "llamacpp", "url": broken.url}, "fallback": {"kind": "anthropic", "url": text.url}}
    rules = [
        {"name": "doomed", "when": {"model": "*doomed*"}, "to": ["local"]},
        {"name": "default", "to": ["local", "fallback"]},
    ]
    path.write_text(yaml.safe_dump({"backends": backends, "rules": rules}))
    return path


def test_spans_of_a_fallback(tmp_path: Path, start_llama_server, text_llama: Process) -> None:
    broken = start_llama_server("broken", "-np", "1")
    exporter = InMemorySpanExporter()
    settings = Settings(health_interval=0, reload_interval=0)
    app = create_app(
        settings,
        load_policy(fallback_policy(tmp_path / "p.yaml", broken, text_llama)),
        make_provider(SimpleSpanProcessor(exporter)),
    )
    with TestClient(app) as client:
        r = client.post("/v1/messages", json={**ask(), "stream": True}, headers={"user-agent": "claude-cli/2.1.197"})
        assert r.status_code == 200 and r.headers["x-ccgate-backend"] == "fallback"
        trace_id = r.headers["x-ccgate-trace-id"]
        assert len(trace_id) == 32
        doomed = client.post("/v1/messages", json={**ask(), "model": "doomed"})
        assert doomed.status_code == 502  # the upstream's 500: a bad gateway, said as such
        assert len(doomed.headers["x-ccgate-trace-id"]) == 32  # failed answers name their trace too

    spans = exporter.get_finished_spans()
    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    [failed_request] = [s for s in servers if s.status.status_code == StatusCode.ERROR]
    assert failed_request.attributes["http.response.status_code"] == 502
    assert format(failed_request.context.trace_id, "032x") == doomed.headers["x-ccgate-trace-id"]
    spans = [s for s in spans if s.context.trace_id != failed_request.context.trace_id]
    server = [s for s in spans if s.kind == SpanKind.SERVER]
    assert len(server) == 1 and format(server[0].context.trace_id, "032x") == trace_id
    assert server[0].attributes["ccgate.backend"] == "fallback"
    route = next(s for s in spans if s.name == "ccgate.route")
    assert route.attributes["ccgate.rule"] == "default"
    assert list(route.attributes["ccgate.candidates"]) == ["local", "fallback"]
    attempts = sorted((s for s in spans if s.kind == SpanKind.CLIENT), key=lambda s: s.attributes["ccgate.attempt"])
    assert [a.attributes["ccgate.backend"] for a in attempts] == ["local", "fallback"]
    assert all(a.parent.span_id == server[0].context.span_id for a in [route, *attempts])  # siblings
    failed, answered = attempts
    assert failed.status.status_code == StatusCode.ERROR and failed.attributes["error.type"] == "5xx"
    assert answered.attributes["gen_ai.operation.name"] == "chat"
    assert answered.attributes["gen_ai.provider.name"] == "anthropic"
    assert answered.attributes["gen_ai.request.model"] == "claude-opus-4-8"
    assert answered.attributes["gen_ai.usage.output_tokens"] == 2
    assert answered.attributes["gen_ai.usage.input_tokens"] > 10
    assert answered.attributes["gen_ai.response.model"].endswith("text.gguf")  # what llama-server says it ran
    assert list(answered.attributes["gen_ai.response.finish_reasons"]) == ["end_turn"]
    assert [e.name for e in answered.events] == ["first_byte"]
    assert not any("read a.txt" in str(dict(s.attributes or {})) for s in spans)  # no prompt text


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[ExportTraceServiceRequest]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        _Receiver.received.append(request)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_otlp_http_export(tmp_path: Path, logdir: Path, owned, start_llama_server, text_llama: Process) -> None:
    broken = start_llama_server("broken", "-np", "1")
    receiver = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_port}",
        "OTEL_SERVICE_NAME": "ccgate-test",
    }
    gw = owned(start_gateway(fallback_policy(tmp_path / "p.yaml", broken, text_llama), logdir, env))
    try:
        r = httpx.post(gw.url + "/v1/messages", json=ask(), timeout=30)
        assert r.status_code == 200
    finally:
        gw.stop()  # shutdown flushes the batch processor
        receiver.shutdown()
    spans = [
        (span, resource)
        for request in _Receiver.received
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    names = {span.name for span, _ in spans}
    assert {"POST /v1/messages", "ccgate.route"} <= names
    attrs = [{a.key: a.value for a in span.attributes} for span, _ in spans]
    providers = {a["gen_ai.provider.name"].string_value for a in attrs if "gen_ai.provider.name" in a}
    assert providers == {"llama.cpp", "anthropic"}
    service = {a.key: a.value.string_value for a in spans[0][1].resource.attributes}["service.name"]
    assert service == "ccgate-test"
    assert any(
        r.headers.get("x-ccgate-trace-id", "") == format(int.from_bytes(span.trace_id, "big"), "032x")
        for span, _ in spans
    )
