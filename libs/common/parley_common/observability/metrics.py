"""Prometheus metrics, named once for every service.

The gateway serves them at /metrics; services without an HTTP server (orchestrator, provider
worker) serve them on their operations port (PARLEY_METRICS_PORT, see ops_server.py) when it
is set. Each process exports the series it moves.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

TIME_TO_FIRST_TOKEN = Histogram(
    "parley_time_to_first_token_seconds",
    "From the gateway accepting a message to the first text of its answer leaving for the client.",
    ["model"],
    buckets=_LATENCY,
)
TOKENS_PER_SECOND = Histogram(
    "parley_stream_tokens_per_second",
    "Output tokens per second of each answer, from its first token to its last.",
    ["model"],
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 5000),
)
QUEUE_WAIT = Histogram(
    "parley_queue_wait_seconds",
    "From the orchestrator publishing a provider job to a worker starting it.",
    ["provider"],
    buckets=_LATENCY,
)
BUDGET_REJECTIONS = Counter(
    "parley_budget_rejections_total",
    "Requests refused or ended by a limit: user budget, provider budget wait, streams, request rate.",
    ["limit"],
)
ACTIVE_STREAMS = Gauge("parley_active_streams", "SSE streams open on this gateway.")
PROVIDER_ERRORS = Counter(
    "parley_provider_errors_total", "Failed provider calls, by provider and error kind.", ["provider", "kind"]
)
WORKER_TAKEOVERS = Counter(
    "parley_worker_takeovers_total",
    "Answers a provider worker went on with after the worker streaming them died, by model.",
    ["model"],
)
