"""OpenTelemetry: one trace per chat turn, across HTTP, AMQP and gRPC.

The W3C trace context travels in AMQP message headers (envelope) and gRPC metadata
(HistoryClient and the servicers' `grpc_errors`); FastAPI opens the HTTP server span itself.
Spans are exported over OTLP/HTTP only when PARLEY_OTLP_ENDPOINT is set, so the default costs no
network. Without an endpoint no span is recorded (the sampler says no), but every span still has
its trace and span ids, carried across services and written in log lines: recording spans that
go nowhere cost each open stream 4-6 KB of the gateway's memory and each turn CPU in every
service (bench/streams.py's memory profile).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

_provider: TracerProvider | None = None


def setup_telemetry(service: str, otlp_endpoint: str = "") -> None:
    """Install the tracer provider of this process; export to `otlp_endpoint` when given."""
    global _provider
    if _provider is not None:
        return
    resource = Resource.create({"service.name": f"parley-{service}"})
    # With an endpoint, the SDK's default sampler (parent-based, always on).
    _provider = TracerProvider(resource=resource, sampler=None if otlp_endpoint else ALWAYS_OFF)
    if otlp_endpoint:
        # Imported only when exporting: it pulls in an HTTP stack the default does not need.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=otlp_endpoint.rstrip("/") + "/v1/traces", timeout=5)
        _provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    trace.set_tracer_provider(_provider)


def shutdown_telemetry() -> None:
    """Export what is still buffered (at shutdown)."""
    if _provider is not None:
        _provider.shutdown()


_tracers: dict[str, trace.Tracer] = {}


def tracer(name: str) -> trace.Tracer:
    """The tracer of one module, made once: a span is opened per message and per provider call,
    and `trace.get_tracer` builds a new tracer (and its instrumentation scope) at each call. A
    tracer got before `setup_telemetry` is a proxy that follows the provider once installed."""
    found = _tracers.get(name)
    if found is None:
        found = _tracers[name] = trace.get_tracer(name)
    return found


def inject_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """Add `traceparent` (and `tracestate`) of the current span to message headers."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    headers.update(carrier)
    return headers


def extract_context(headers: Mapping[str, Any] | None) -> context.Context:
    carrier = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in (headers or {}).items()}
    return propagate.extract(carrier)


def consumer_span(scope: str, name: str, headers: Mapping[str, Any] | None) -> AbstractContextManager[trace.Span]:
    """The span of handling one message, a child of the trace its headers carry."""
    return tracer(scope).start_as_current_span(name, context=extract_context(headers), kind=trace.SpanKind.CONSUMER)


def grpc_metadata() -> list[tuple[str, str]]:
    """The current trace context as gRPC call metadata."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())


def context_from_metadata(metadata: Sequence[tuple[str, str | bytes]] | None) -> context.Context:
    return extract_context(dict(metadata or ()))
