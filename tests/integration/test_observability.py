"""One chat turn is one connected trace across every service it touches, exported over OTLP;
and the Prometheus metrics move after a turn."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from parley_dev.infra import Infra, free_port
from parley_dev.stack import Stack, StackConfig, running

from .sse import read_all

KEY = "pk_test_otel_" + secrets.token_urlsafe(12)


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str


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
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.02)
    yield c, f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


@pytest.fixture(scope="module")
async def ostack(
    infra: Infra, collector: tuple[Collector, str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    config = StackConfig(
        infra=infra,
        namespace="to" + uuid.uuid4().hex[:10],
        workdir=tmp_path_factory.mktemp("otel-stack"),
        dev_api_key=KEY,
        extra_env={
            "PARLEY_OTLP_ENDPOINT": collector[1],
            "PARLEY_DEMO_FIRST_TOKEN_DELAY_MS": "20",
            "PARLEY_DEMO_TOKENS_PER_S": "500",
        },
    )
    async with running(config) as stack:
        yield stack


def metric(text: str, name: str, labels: str = "") -> float:
    """The value of one Prometheus sample (0 when absent)."""
    pattern = re.escape(name) + (r"\{" + labels + r"\}" if labels else r"(\{[^}]*\})?") + r" ([0-9.e+-]+)"
    match = re.search(pattern, text)
    return float(match.group(match.lastindex or 1)) if match else 0.0


async def test_a_chat_turn_is_one_connected_trace_and_the_metrics_move(
    ostack: Stack, collector: tuple[Collector, str]
) -> None:
    spans = collector[0].spans
    worker_metrics = f"http://127.0.0.1:{ostack.metrics_ports['provider-worker']}/metrics"
    orchestrator_metrics = f"http://127.0.0.1:{ostack.metrics_ports['orchestrator']}/metrics"
    async with httpx.AsyncClient(
        base_url=ostack.base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
    ) as client:
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
        deadline = time.monotonic() + 15
        while True:
            turn = [s for s in spans if s.trace_id == trace_id]
            ids = {s.span_id for s in turn}
            # Spans arrive in batches, a parent often after its children: wait until all are here.
            connected = all(s.parent_id in ids for s in turn if s.service != "parley-gateway")
            if (
                {s.service for s in turn} >= wanted
                and any(s.name == "history.persist_response" for s in turn)
                and connected
            ):
                break
            assert time.monotonic() < deadline, f"spans of the turn: {sorted({(s.service, s.name) for s in turn})}"
            await asyncio.sleep(0.1)
        ids = {s.span_id for s in turn}
        orphans = [s for s in turn if s.parent_id not in ids and s.service != "parley-gateway"]
        assert not orphans, f"spans not connected to the turn: {orphans}"
        names = {(s.service, s.name) for s in turn}
        assert ("parley-provider-worker", "provider.stream") in names
        assert any(service == "parley-history" and "AppendMessage" in name for service, name in names)
        assert ("parley-orchestrator", "history/AppendMessage") in names

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
