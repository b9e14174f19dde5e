"""One chat turn is one connected trace across every service it touches (media too, for a turn
with an image), exported over OTLP; and the Prometheus metrics move: after a turn, after a
request refused with 429, after a provider call that failed.

The stack's worker also serves `fake-openai`, the real OpenAI adapter talking to the fake
provider server, which fails a request on demand."""

from __future__ import annotations

import asyncio
import io
import json
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import uvicorn
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from parley_dev.infra import Infra, free_port
from parley_dev.stack import Stack
from tests.support.api import api_client
from tests.support.models import model
from tests.support.polling import eventually
from tests.support.sse import read_all
from tests.support.stacks import own_stack, stack_config

KEY = "pk_test_otel_" + secrets.token_urlsafe(12)
# A second user, for the request-rate test: its 429s leave the first user's requests alone.
LIMITED_KEY = "pk_test_otel_limited_" + secrets.token_urlsafe(12)
REQUESTS_PER_MINUTE = 40
SERVER_KIND = trace_pb2.Span.SpanKind.SPAN_KIND_SERVER


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    failed: bool = False
    kind: int = 0
    end_ns: int = 0


class Collector:
    """A real OTLP/HTTP trace receiver (protobuf), in the test process."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.app = Starlette(routes=[Route("/v1/traces", self.receive, methods=["POST"])])

    async def receive(self, request: Request) -> Response:
        export = trace_service_pb2.ExportTraceServiceRequest()
        export.ParseFromString(await request.body())
        for resource_spans in export.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for s in scope.spans:
                    self.spans.append(
                        Span(
                            attrs.get("service.name", "?"),
                            s.name,
                            s.trace_id.hex(),
                            s.span_id.hex(),
                            s.parent_span_id.hex(),
                            s.status.code == s.status.STATUS_CODE_ERROR,
                            s.kind,
                            s.end_time_unix_nano,
                        )
                    )
        return Response(
            trace_service_pb2.ExportTraceServiceResponse().SerializeToString(),
            media_type="application/x-protobuf",
        )


@pytest.fixture(scope="module")
async def collector() -> AsyncIterator[tuple[Collector, str]]:
    c = Collector()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(c.app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    await eventually(started, 10, "the span collector listening", interval_s=0.02)
    yield c, f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


@pytest.fixture(scope="module")
async def ostack(
    infra: Infra,
    collector: tuple[Collector, str],
    fake: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    registry = {
        "default_model": "demo",
        "providers": {"demo": {"kind": "demo"}, "fake-openai": {"kind": "openai", "base_url": fake + "/v1"}},
        "models": {
            "demo": model("demo", "parley-demo-1", max_output_tokens=256),
            "fake": model("fake-openai", "fake-1", max_output_tokens=256),
        },
    }
    env = {
        "PARLEY_OTLP_ENDPOINT": collector[1],
        "PARLEY_DEMO_FIRST_TOKEN_DELAY_MS": "20",
        "PARLEY_DEMO_TOKENS_PER_S": "500",
        "PARLEY_WORKER_PROVIDERS": '["demo", "fake-openai"]',
        "PARLEY_PROVIDER_API_KEYS": '{"fake-openai": "sk-fake-otel"}',
        "PARLEY_API_KEYS": json.dumps({"limited": LIMITED_KEY}),
        "PARLEY_REQUESTS_PER_MINUTE": str(REQUESTS_PER_MINUTE),
    }
    config = stack_config(infra, tmp_path_factory.mktemp("otel-stack"), "to", KEY, env, registry)
    async with own_stack(config, clean_exit=False) as stack:
        yield stack


def metric(text: str, name: str, labels: str = "") -> float:
    """The value of one Prometheus sample (0 when absent)."""
    pattern = re.escape(name) + (r"\{" + labels + r"\}" if labels else r"(\{[^}]*\})?") + r" ([0-9.e+-]+)"
    match = re.search(pattern, text)
    return float(match.group(match.lastindex or 1)) if match else 0.0


def metric_sum(text: str, name: str, label: str) -> float:
    """The sum of every sample of `name` whose labels include `label` (e.g. `provider="x"`)."""
    total = 0.0
    for labels, value in re.findall(re.escape(name) + r"\{([^}]*)\} ([0-9.e+-]+)", text):
        if label in labels.split(","):
            total += float(value)
    return total


async def turn_spans(spans: list[Span], trace_id: str, wanted: set[str], deadline_s: float = 15) -> list[Span]:
    """The spans of one trace once every wanted service sent some and all of them are connected
    (spans arrive in batches, a parent often after its children)."""

    async def whole() -> list[Span] | None:
        turn = [s for s in spans if s.trace_id == trace_id]
        ids = {s.span_id for s in turn}
        connected = all(s.parent_id in ids for s in turn if s.service != "parley-gateway")
        complete = {s.service for s in turn} >= wanted and any(s.name == "history.persist_response" for s in turn)
        return turn if complete and connected else None

    return await eventually(whole, deadline_s, f"the connected spans of {wanted} in {trace_id}", interval_s=0.1)


async def test_a_chat_turn_is_one_connected_trace_and_the_metrics_move(
    ostack: Stack, collector: tuple[Collector, str]
) -> None:
    spans = collector[0].spans
    worker_metrics = f"http://127.0.0.1:{ostack.metrics_ports['provider-worker']}/metrics"
    orchestrator_metrics = f"http://127.0.0.1:{ostack.metrics_ports['orchestrator']}/metrics"
    async with api_client(ostack.base_url, KEY) as client:
        before_gateway = (await client.get("/metrics")).text
        before_worker = (await client.get(worker_metrics)).text
        conversation = (await client.post("/v1/conversations", json={})).json()["id"]
        trace_id = secrets.token_hex(16)
        async with client.stream(
            "POST",
            f"/v1/conversations/{conversation}/messages",
            json={"content": "trace me"},
            headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
        ) as r:
            frames = await read_all(r)
        assert frames[-1].event == "done"

        wanted = {"parley-gateway", "parley-orchestrator", "parley-history", "parley-provider-worker"}
        turn = await turn_spans(spans, trace_id, wanted)
        ids = {s.span_id for s in turn}
        orphans = [s for s in turn if s.parent_id not in ids and s.service != "parley-gateway"]
        assert not orphans, f"spans not connected to the turn: {orphans}"
        names = {(s.service, s.name) for s in turn}
        assert ("parley-provider-worker", "provider.stream") in names
        assert any(service == "parley-history" and "AppendMessage" in name for service, name in names)
        assert ("parley-orchestrator", "history/AppendMessage") in names

        # The request's own span lasts as long as its stream (the body is served after the
        # route returned: sse_response.DetachedStreams) and did not fail.
        async def request_span() -> Span | None:
            found = [
                s for s in spans if s.trace_id == trace_id and s.service == "parley-gateway" and s.kind == SERVER_KIND
            ]
            assert len(found) <= 1, found
            return found[0] if found else None

        request = await eventually(request_span, 10, "the gateway's request span", interval_s=0.1)
        (provider,) = [s for s in turn if s.name == "provider.stream"]
        assert not request.failed and request.end_ns >= provider.end_ns, (request, provider)

        after_gateway = (await client.get("/metrics")).text
        after_worker = (await client.get(worker_metrics)).text
        assert (await client.get(orchestrator_metrics)).status_code == 200
        for service in ("orchestrator", "provider-worker"):
            ops = f"http://127.0.0.1:{ostack.metrics_ports[service]}"
            assert (await client.get(f"{ops}/healthz")).status_code == 200
            ready = await client.get(f"{ops}/readyz")
            assert ready.status_code == 200 and ready.json()["status"] == "ready", (service, ready.text)
    ttft = "parley_time_to_first_token_seconds_count"
    assert metric(after_gateway, ttft, 'model="demo"') == metric(before_gateway, ttft, 'model="demo"') + 1
    assert "parley_active_streams" in after_gateway
    for name in ("parley_stream_tokens_per_second_count", "parley_queue_wait_seconds_count"):
        assert metric(after_worker, name) == metric(before_worker, name) + 1, name


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(out, format="PNG")
    return out.getvalue()


async def test_a_turn_with_an_image_has_the_media_service_in_its_trace(
    ostack: Stack, collector: tuple[Collector, str]
) -> None:
    spans = collector[0].spans
    async with api_client(ostack.base_url, KEY) as client:
        upload = await client.post("/v1/media", files={"file": ("red.png", png(320, 240), "image/png")})
        assert upload.status_code == 201, upload.text
        media_id = upload.json()["id"]
        conversation = (await client.post("/v1/conversations", json={})).json()["id"]
        trace_id = secrets.token_hex(16)
        async with client.stream(
            "POST",
            f"/v1/conversations/{conversation}/messages",
            json={"content": "what is in this picture?", "media_ids": [media_id]},
            headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
        ) as r:
            assert r.status_code == 200, await r.aread()
            frames = await read_all(r)
        assert frames[-1].event == "done", frames[-1]

    wanted = {"parley-gateway", "parley-orchestrator", "parley-media", "parley-history", "parley-provider-worker"}
    turn = await turn_spans(spans, trace_id, wanted)
    by_id = {s.span_id: s for s in turn}
    media = [s for s in turn if s.service == "parley-media"]
    # Every media span hangs off the turn: its parent is in the trace, and the chain of parents
    # leads up to the gateway's request span.
    for span in media:
        chain, current = [], span
        while current.parent_id in by_id:
            current = by_id[current.parent_id]
            chain.append(current.service)
        assert current.service == "parley-gateway", (span, chain)
    assert any(by_id[s.parent_id].service != "parley-media" for s in media), media


async def test_a_request_refused_with_429_counts_as_a_budget_rejection(ostack: Stack) -> None:
    async with (
        api_client(ostack.base_url, KEY) as me,
        api_client(ostack.base_url, LIMITED_KEY) as limited,
    ):
        name, label = "parley_budget_rejections_total", 'limit="rate_limited"'
        before = metric_sum((await me.get("/metrics")).text, name, label)
        refused = 0
        # One more request than the per-minute limit (a window boundary in between restarts the
        # count, so keep going until refused, within two windows' worth).
        for _ in range(2 * REQUESTS_PER_MINUTE + 2):
            reply = await limited.get("/v1/models")
            if reply.status_code == 429:
                assert reply.json()["error"]["code"] == "rate_limited", reply.text
                assert int(reply.headers["Retry-After"]) >= 1
                refused += 1
                break
            assert reply.status_code == 200, reply.text
        assert refused == 1, "never refused"
        after = metric_sum((await me.get("/metrics")).text, name, label)
    assert after == before + refused


async def test_a_failed_provider_call_counts_as_a_provider_error(ostack: Stack, fake: str) -> None:
    worker_metrics = f"http://127.0.0.1:{ostack.metrics_ports['provider-worker']}/metrics"
    async with api_client(ostack.base_url, KEY) as client:
        name, label = "parley_provider_errors_total", 'provider="fake-openai"'
        before = metric_sum((await client.get(worker_metrics)).text, name, label)
        conversation = (await client.post("/v1/conversations", json={})).json()["id"]
        # The fake provider answers 401 (a wrong API key): not retried, the turn ends in an error.
        directive = '[[fake {"status": 401}]]'
        async with client.stream(
            "POST",
            f"/v1/conversations/{conversation}/messages",
            json={"content": f"hello {directive}", "model": "fake"},
        ) as r:
            assert r.status_code == 200, await r.aread()
            frames = await read_all(r)
        assert frames[-1].event == "error", frames[-1]
        after_text = (await client.get(worker_metrics)).text
    after = metric_sum(after_text, name, label)
    assert after == before + 1, re.findall(re.escape(name) + ".*", after_text)
