"""Which tracer provider the OTEL_* variables give: exporting, id-only, or none."""

from __future__ import annotations

from router.telemetry.tracing import provider_from_env, trace_id


def test_without_endpoint_spans_still_carry_a_trace_id() -> None:
    provider = provider_from_env({})
    assert provider is not None
    span = provider.get_tracer("t").start_span("x")
    assert len(trace_id(span)) == 32 and int(trace_id(span), 16) != 0
    span.end()


def test_endpoint_adds_an_exporter() -> None:
    provider = provider_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert provider is not None
    assert provider._active_span_processor._span_processors
    provider.shutdown()


def test_traces_exporter_none_keeps_ids_but_exports_nothing() -> None:
    provider = provider_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_TRACES_EXPORTER": "none"})
    assert provider is not None and not provider._active_span_processor._span_processors


def test_sdk_disabled_turns_tracing_off() -> None:
    assert provider_from_env({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}) is None
