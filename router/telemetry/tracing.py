"""OpenTelemetry traces, configured by the standard OTEL_* variables.

Spans are exported when an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTLP over HTTP); without one they are still made, for the
trace id in logs and headers, and dropped. OTEL_SDK_DISABLED=true turns all of it off.
Spans: one SERVER span per request, a `ccgate.route` span for the policy decision, and one
CLIENT span per backend attempt following the GenAI semantic conventions (`gen_ai.*`),
fallbacks being sibling attempts. Prompt and completion text are never recorded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanProcessor


def provider_from_env(env: Mapping[str, str] | None = None) -> TracerProvider | None:
    """An exporting provider when an OTLP endpoint is set; otherwise one that exports nothing but
    still gives every request a trace id (logs, x-ccgate-trace-id). None when the SDK is disabled."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    exporting = env.get("OTEL_TRACES_EXPORTER") != "none" and (
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
    if not exporting:
        return make_provider()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return make_provider(BatchSpanProcessor(OTLPSpanExporter()))


def make_provider(processor: SpanProcessor | None = None) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "ccgate")}))
    if processor is not None:
        provider.add_span_processor(processor)
    return provider


def tracer_of(provider: TracerProvider | None) -> trace.Tracer:
    return provider.get_tracer("ccgate") if provider is not None else trace.NoOpTracer()


def trace_id(span: trace.Span) -> str | None:
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
