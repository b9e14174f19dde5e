"""The floor of this design: what one short chat turn must cost, step by step, with the libraries
Parley uses, measured on this machine in this run, next to what a turn costs today.

A short turn (the native endpoint, a follow-up message in a conversation this gateway already
knows, a 10-token answer: five frames) takes, read from the services and checked once with
Redis MONITOR on a running stack (see TURN below): one HTTP request with an SSE response; three
confirmed AMQP publishes (ChatRequest, ProviderJob, ResponseCompleted) and four acked deliveries
from quorum queues (ResponseCompleted goes to history and to the orchestrator); five frames
published unconfirmed and consumed no-ack; 11 Redis round trips carrying 24 commands, 6 of them
EVALSHA (2 single commands, 2 scripts alone, 3 pipelines with scripts, pipelines of 2, 3, 3 and
5); one gRPC call (AppendMessage); two SQLite commits; one streaming
httpx request to the provider.

Each step is measured alone, as CPU per operation of the client process (this one, read with
`time.process_time`) and of the server: uvicorn and the gRPC server run as child processes that
report their own `process_time`; redis-server's from `INFO cpu` (microseconds); RabbitMQ's from
/proc/<beam pid>/stat (10 ms ticks, so its bursts are long). RabbitMQ and Redis serve the whole
machine: their CPU in a burst includes other sessions' load, so each burst is repeated
(BENCH_FLOOR_REPEATS, 3) and the background rate measured in idle windows is subtracted: for
them the median burst counts, for every process of this benchmark's own the least disturbed one.
The client side runs on uvloop, as the services do.

The floor per turn is Σ count x unit cost. It is printed next to the CPU per turn of the whole
system measured in the same run: BENCH_FLOOR_TURNS (150) short turns on 50 lanes through the five
services, idle to idle as in bench/profile.py (0 skips it; then bench/results/peer.json's figure is
used, which `make bench` wrote minutes before). Where other sessions' load on RabbitMQ or Redis
was more than half of what they did during that batch, their per-turn figure comes from
peer.json, and the output says so. The difference is Parley's own code, which could still go. The
same units at concurrency 1 give a floor for the latency a first token waits through, and the
per-token and per-frame costs give the most tokens/s one worker (and the two cores) can carry.
Knobs: BENCH_FLOOR_REPEATS (3), BENCH_FLOOR_AMQP_N (600 messages a burst), BENCH_FLOOR_TURNS.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parley_dev.infra import provide

from .peer import stop_process_group
from .stats import RESULTS, percentile, write

REPEATS = int(os.environ.get("BENCH_FLOOR_REPEATS", "3"))
AMQP_URL = os.environ.get("BENCH_FLOOR_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("BENCH_FLOOR_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = "floor-" + secrets.token_hex(4)
# Short turns through the whole system in the same run (0: read bench/results/peer.json instead).
SYSTEM_TURNS = int(os.environ.get("BENCH_FLOOR_TURNS", "150"))
SHARED = ("rabbitmq", "redis")

# ---- what one short turn does ---------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    unit: str  # a key of the measured units
    count: int
    process: str  # whose CPU the client side of the unit is
    where: str


# The native endpoint, a follow-up message (the gateway remembers the conversation is the user's
# for 60 s, so no GetConversation), a 10-token answer from an OpenAI-format provider, which the
# worker sends as five frames (meta+delta, delta, usage, done: meta with the first text, the
# rest with the end). Redis round trips as MONITOR showed them (commands inside a script are not
# round trips). Servers (the broker, redis-server, the gRPC server, uvicorn) are charged from
# the unit's server column.
TURN: tuple[Step, ...] = (
    Step("http_fastapi", 1, "gateway", "POST …/messages, an SSE response of 5 events (uvicorn + FastAPI)"),
    Step("amqp_publish_confirmed", 1, "gateway", "ChatRequest → orchestrator.requests (confirms, mandatory)"),
    Step("amqp_consume_acked", 1, "orchestrator", "ChatRequest delivered from a quorum queue, acked"),
    Step("amqp_publish_confirmed", 1, "orchestrator", "ProviderJob → provider.<name>"),
    Step("amqp_consume_acked", 1, "provider-worker", "ProviderJob delivered, acked"),
    Step("amqp_frame_publish", 5, "provider-worker", "StreamEvent frames → the gateway's reply queue, unconfirmed"),
    Step("amqp_frame_consume", 5, "gateway", "frames consumed no-ack"),
    Step("amqp_publish_confirmed", 1, "provider-worker", "ResponseCompleted → events exchange"),
    Step("amqp_consume_acked", 1, "history", "ResponseCompleted → history (stores the answer)"),
    Step("amqp_consume_acked", 1, "orchestrator", "ResponseCompleted → orchestrator (settles budgets)"),
    Step("redis_evalsha_pipe2", 1, "gateway", "request rate INCR + EXPIRE, monthly usage state (EVALSHA)"),
    Step("redis_evalsha2", 1, "gateway", "user budget hold and stream slot: two EVALSHA, one round trip"),
    Step("redis_cmd", 2, "gateway", "claim the response (SET NX), give the connection's slot back (ZREM)"),
    Step("redis_evalsha", 2, "orchestrator", "turn order (returns the previous turn's log), charge + job record"),
    Step("redis_evalsha_pipe2", 1, "orchestrator", "cancelled? (GET) + worst-case hold writing the job record"),
    Step("redis_pipe3", 1, "provider-worker", "lease SET NX + log XRANGE + cancelled? GET"),
    Step("redis_pipe2", 1, "provider-worker", "at the end: slot ZREM + lease DEL"),
    Step("redis_pipe3", 1, "provider-worker", "frames meta+delta: XADD x2 + EXPIRE"),
    Step("redis_pipe5", 1, "provider-worker", "frames delta, usage, done: XADD x3 + EXPIRE x2"),
    Step("grpc_unary", 1, "orchestrator", "AppendMessage (+ the context back)"),
    Step("sqlite_commit", 2, "history", "the question (in AppendMessage), the answer (on ResponseCompleted)"),
    Step("httpx_short_stream", 1, "provider-worker", "the provider request: a 10-token SSE stream"),
)

# Which server each unit's server column belongs to.
SERVER_OF = {
    "http_bare": "gateway",
    "http_fastapi": "gateway",
    "amqp_publish_confirmed": "rabbitmq",
    "amqp_publish_unconfirmed": "rabbitmq",
    "amqp_consume_acked": "rabbitmq",
    "amqp_frame_publish": "rabbitmq",
    "amqp_frame_consume": "rabbitmq",
    "redis_cmd": "redis",
    "redis_pipe2": "redis",
    "redis_pipe3": "redis",
    "redis_pipe5": "redis",
    "redis_evalsha": "redis",
    "redis_evalsha_pipe2": "redis",
    "redis_evalsha2": "redis",
    "grpc_unary": "history",
}

# Waits in sequence before the first token reaches the client (concurrency 1): the gateway's
# request, its three Redis round trips (rate + state, claim, hold + slot), the ChatRequest hop,
# the orchestrator's two Redis round trips (turn order, hold), AppendMessage with its commit,
# the ProviderJob hop, the worker's one (lease and checks), the first frames' log write and the
# frame's hop. The provider's own
# time is the direct call's too, so it is not added.
FIRST_TOKEN_PATH: dict[str, int] = {
    "http_fastapi": 1,
    "redis_cmd": 1,
    "redis_evalsha": 1,
    "redis_evalsha_pipe2": 2,
    "redis_evalsha2": 1,
    "redis_pipe3": 2,
    "amqp_hop_confirmed": 2,
    "amqp_hop_frame": 1,
    "grpc_unary": 1,
    "sqlite_commit": 1,
}


def turn_counts(steps: tuple[Step, ...] = TURN) -> dict[str, int]:
    """How many of each unit one turn takes."""
    counts: dict[str, int] = {}
    for step in steps:
        counts[step.unit] = counts.get(step.unit, 0) + step.count
    return counts


def floor_per_turn(units: Mapping[str, Mapping[str, float]], steps: tuple[Step, ...] = TURN) -> dict[str, Any]:
    """Σ count x unit cost, in ms per turn, by process: each step's client CPU to the process
    making it, its server CPU to the server (SERVER_OF)."""
    by_process: dict[str, float] = {}
    by_unit: dict[str, float] = {}
    for step in steps:
        unit = units[step.unit]
        client = step.count * unit["client_us"] / 1000
        server = step.count * unit.get("server_us", 0.0) / 1000
        by_process[step.process] = by_process.get(step.process, 0.0) + client
        if server:
            owner = SERVER_OF[step.unit]
            by_process[owner] = by_process.get(owner, 0.0) + server
        by_unit[step.unit] = by_unit.get(step.unit, 0.0) + client + server
    total = sum(by_process.values())
    parley = sum(v for k, v in by_process.items() if k not in ("rabbitmq", "redis"))
    return {
        "total_ms": round(total, 3),
        "parley_processes_ms": round(parley, 3),
        "by_process_ms": {k: round(v, 3) for k, v in sorted(by_process.items())},
        "by_unit_ms": {k: round(v, 3) for k, v in sorted(by_unit.items(), key=lambda kv: -kv[1])},
        "turns_per_s_on_2_cores": round(2000 / total, 1) if total else None,
    }


def first_token_floor(
    latency_p50_ms: Mapping[str, float], path: Mapping[str, int] = FIRST_TOKEN_PATH
) -> dict[str, Any]:
    """Σ count x p50 at concurrency 1 of the waits a first token goes through in sequence."""
    parts = {unit: round(count * latency_p50_ms[unit], 3) for unit, count in path.items()}
    return {"total_ms": round(sum(parts.values()), 3), "by_unit_ms": parts}


def tokens_per_s_floor(per_token_us: float, per_frame_us: float, tokens_per_frame: float, cores: float = 1) -> float:
    """Tokens a second that `cores` of CPU carry when each token costs `per_token_us` and each
    frame (a replay-log write and a publish, `tokens_per_frame` tokens to a frame) `per_frame_us`."""
    return cores * 1e6 / (per_token_us + per_frame_us / tokens_per_frame)


def direct_tokens_per_s(providers: Mapping[str, Any] | None) -> float | None:
    """Tokens/s read straight from the fake provider in bench/providers.py's last run."""
    if not providers:
        return None
    value = providers.get("direct", {}).get("tokens_per_s")
    return float(value) if value else None


def parse_info_cpu(info: str | Mapping[str, Any]) -> float:
    """redis-server's CPU seconds (user + sys, every thread) from `INFO cpu`: its text, or the
    mapping redis-py makes of it."""
    if isinstance(info, str):
        lines = (line.strip() for line in info.splitlines())
        info = dict(line.split(":", 1) for line in lines if ":" in line and not line.startswith("#"))
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def net_per_op(cpu_ms: float, seconds: float, background_ms_per_s: float, ops: int) -> float:
    """µs of a shared server's CPU per operation of a burst, net of its background load."""
    return max(0.0, cpu_ms - background_ms_per_s * seconds) * 1000 / ops


def best(values: list[float]) -> float:
    """The burst least disturbed by the rest of the machine: the minimum."""
    return min(values)


def measured_turn(peer: Mapping[str, Any], endpoint: str = "parley_native") -> dict[str, Any] | None:
    """The CPU per turn the whole system measured (bench/peer.py's result), by process."""
    entry = peer.get("saturation", {}).get(endpoint)
    if not entry or entry.get("side_cpu_ms_per_turn") is None:
        return None
    per = entry["cpu_ms_per_turn"]
    net = entry.get("shared_cpu_ms_per_turn_net_of_background", {})
    by_process = {name.removeprefix("parley:"): per[name] for name in entry["side_processes"]}
    by_process.update({k: v for k, v in net.items()})
    return {
        "source": f"bench/results/peer.json, {endpoint}, saturation at {peer.get('concurrency')} lanes",
        "measured_at": peer.get("measured_at"),
        "total_ms": entry.get("total_with_shared_cpu_ms_per_turn"),
        "parley_processes_ms": entry["side_cpu_ms_per_turn"],
        "by_process_ms": by_process,
        "turns_per_s": entry.get("turns_per_s"),
        "first_token_added_p50_ms_c1": peer.get("first_token_ms", {}).get(endpoint, {}).get("1", {}).get("added_p50"),
    }


def turn_from_batch(
    cpu_ms: Mapping[str, float], turns: int, seconds: float, background_ms_per_s: Mapping[str, float]
) -> dict[str, Any]:
    """CPU ms per turn by process from a batch of `turns` that took `seconds`, idle to idle; the
    shared servers net of their background."""
    by_process = {}
    drowned = []
    for name, ms in cpu_ms.items():
        if name in background_ms_per_s:
            background = background_ms_per_s[name] * seconds
            if background > ms / 2:
                # Most of it was other sessions' load, which moves by more than this side's share.
                drowned.append(name)
            ms = max(0.0, ms - background)
        by_process[name] = round(ms / turns, 2)
    parley = sum(v for k, v in by_process.items() if k not in background_ms_per_s)
    return {
        "total_ms": round(sum(by_process.values()), 2),
        "parley_processes_ms": round(parley, 2),
        "by_process_ms": by_process,
        "drowned_in_background": drowned,
    }


# ---- servers in child processes ---------------------------------------------------------------

HTTP_SERVER = textwrap.dedent(
    """
    import sys, time
    from typing import Annotated
    import uvicorn
    from fastapi import Depends, FastAPI, Request
    from fastapi.responses import PlainTextResponse, StreamingResponse
    from pydantic import BaseModel

    MODE, PORT = sys.argv[1], int(sys.argv[2])
    EVENTS = [b'id: %d\\nevent: delta\\ndata: {"text":"token %d"}\\n\\n' % (i, i) for i in range(1, 6)]
    HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]

    async def bare(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] == "/cpu":
            body = repr(time.process_time()).encode()
            length = [(b"content-length", b"%d" % len(body))]
            await send({"type": "http.response.start", "status": 200, "headers": length})
            await send({"type": "http.response.body", "body": body})
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        for event in EVENTS:
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    app = FastAPI()

    class Body(BaseModel):
        content: str
        model: str | None = None

    async def current_user(request: Request) -> str:
        return request.headers.get("authorization", "")[7:] or "anonymous"

    @app.post("/v1/conversations/{conversation_id}/messages")
    async def send_message(conversation_id: str, body: Body, user: Annotated[str, Depends(current_user)]):
        async def events():
            for event in EVENTS:
                yield event
        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/cpu")
    async def cpu():
        return PlainTextResponse(repr(time.process_time()))

    uvicorn.run(bare if MODE == "bare" else app, host="127.0.0.1", port=PORT, loop="uvloop", http="httptools",
                lifespan="off", log_level="warning", access_log=False)
    """
)

GRPC_SERVER = textwrap.dedent(
    """
    import asyncio, sys, time
    import grpc, uvloop

    REPLY = b"c" * 2048  # AppendMessage answers with the conversation's latest context

    async def echo(request, context):
        return REPLY

    async def cpu(request, context):
        return repr(time.process_time()).encode()

    async def main():
        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler("floor.Floor", {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Cpu": grpc.unary_unary_rpc_method_handler(cpu),
        })
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(port, flush=True)
        await server.wait_for_termination()

    uvloop.run(main())
    """
)

UPSTREAM_SERVER = textwrap.dedent(
    """
    import asyncio, sys
    PORT = int(sys.argv[1])

    def chunk(data):
        return b"%x\\r\\n%s\\r\\n" % (len(data), data)

    TOKEN = chunk(b'data: {"id":"chatcmpl-floor","object":"chat.completion.chunk","model":"m",'
                  b'"choices":[{"index":0,"delta":{"content":" word"},"finish_reason":null}]}\\n\\n')
    END = chunk(b"data: [DONE]\\n\\n") + b"0\\r\\n\\r\\n"
    HEAD = (b"HTTP/1.1 200 OK\\r\\ncontent-type: text/event-stream\\r\\ntransfer-encoding: chunked\\r\\n\\r\\n")

    async def serve(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\\r\\n\\r\\n")
                length = 0
                for line in head.split(b"\\r\\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                tokens = int(body.split(b'"tokens":')[1].split(b"}")[0])
                writer.write(HEAD)
                for _ in range(tokens):
                    writer.write(TOKEN)
                    await asyncio.sleep(0.001)  # token by token, as a model sends them
                writer.write(END)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main():
        server = await asyncio.start_server(serve, "127.0.0.1", PORT)
        print("ready", flush=True)
        await server.serve_forever()

    asyncio.run(main())
    """
)


@contextlib.contextmanager
def child(code: str, *args: str, ready: Callable[[str], bool] | None = None) -> Any:
    """A server in a process of its own; yields (process, first line it printed)."""
    errors = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=errors, start_new_session=True
    )
    try:
        line = ""
        if ready is not None:
            assert process.stdout is not None
            line = process.stdout.readline().decode().strip()
            if not line:
                errors.seek(0)
                raise RuntimeError(f"server did not start: {errors.read().decode(errors='replace')[-2000:]}")
        yield process, line
    finally:
        stop_process_group(process, grace_s=10)
        errors.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def http_get(port: int, path: str) -> bytes:
    """The body of a GET on a connection of its own (Connection: close)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"GET {path}: {head[:100]!r}")
    return body


async def wait_http(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {port}") from None
            await asyncio.sleep(0.1)


# ---- measuring --------------------------------------------------------------------------------


class Shared:
    """The machine's RabbitMQ and Redis: CPU readers and their background rate."""

    def __init__(self, beam_pid: int, redis: Any) -> None:
        from .cpu import read_stat

        self._read_stat = read_stat
        self.beam_pid = beam_pid
        self.redis = redis
        self.background: dict[str, float] = {}

    def beam_ms(self) -> float:
        stat = self._read_stat(self.beam_pid)
        if stat is None:
            raise RuntimeError(f"RabbitMQ's process {self.beam_pid} is gone")
        return stat.cpu_ms

    async def redis_ms(self) -> float:
        return parse_info_cpu(await self.redis.info("cpu")) * 1000

    async def measure_background(self, seconds: float = 1.0, windows: int = 2) -> None:
        """CPU per second of each in idle windows (this benchmark sending nothing): the median."""
        beam, redis = [], []
        for _ in range(windows):
            b0, r0, t0 = self.beam_ms(), await self.redis_ms(), time.perf_counter()
            await asyncio.sleep(seconds)
            b1, r1, t1 = self.beam_ms(), await self.redis_ms(), time.perf_counter()
            beam.append((b1 - b0) / (t1 - t0))
            redis.append((r1 - r0) / (t1 - t0))
        self.background = {"rabbitmq": statistics.median(beam), "redis": statistics.median(redis)}


@dataclass
class Burst:
    client_ms: float
    server_ms: float
    seconds: float
    ops: int


async def burst(run: Callable[[], Awaitable[int]], server: Callable[[], Awaitable[float]] | None = None) -> Burst:
    """`run()` does some operations and says how many; the CPU of this process and of the server
    over it."""
    s0 = await server() if server else 0.0
    c0, t0 = time.process_time(), time.perf_counter()
    ops = await run()
    c1, t1 = time.process_time(), time.perf_counter()
    s1 = await server() if server else 0.0
    return Burst((c1 - c0) * 1000, s1 - s0, t1 - t0, ops)


def unit_result(bursts: list[Burst], background_ms_per_s: float | None = None, note: str = "") -> dict[str, Any]:
    client = [b.client_ms * 1000 / b.ops for b in bursts]
    out: dict[str, Any] = {
        "client_us": round(best(client), 2),
        "client_us_median": round(statistics.median(client), 2),
        "ops_per_burst": bursts[0].ops,
        "bursts": len(bursts),
    }
    if background_ms_per_s is not None or any(b.server_ms for b in bursts):
        server = [net_per_op(b.server_ms, b.seconds, background_ms_per_s or 0.0, b.ops) for b in bursts]
        # A child server's own CPU: other load only adds to it, the least is the truest. A shared
        # server's net of a background that moves both ways: the median.
        out["server_us"] = round(best(server) if background_ms_per_s is None else statistics.median(server), 2)
        out["server_us_median"] = round(statistics.median(server), 2)
        if background_ms_per_s is not None:
            out["server_raw_us"] = [round(b.server_ms * 1000 / b.ops, 2) for b in bursts]
    if note:
        out["note"] = note
    return out


async def lanes(total: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> int:
    """`total` calls of `one(lane)` over `concurrency` lanes."""
    counter = iter(range(total))

    async def lane(i: int) -> None:
        for _ in counter:
            await one(i)

    await asyncio.gather(*(lane(i) for i in range(concurrency)))
    return total


async def latencies(n: int, one: Callable[[], Awaitable[Any]]) -> float:
    """p50 ms of `one()` called one after the other."""
    seconds = []
    for _ in range(n):
        t0 = time.perf_counter()
        await one()
        seconds.append(time.perf_counter() - t0)
    return percentile([s * 1000 for s in seconds], 50)


# ---- the units --------------------------------------------------------------------------------


async def http_units(units: dict[str, Any], latency: dict[str, float]) -> None:
    """One POST with a small JSON body and a 5-event SSE response over a keep-alive connection;
    the server's CPU per request (the client is the load generator, not the gateway)."""
    for mode in ("bare", "fastapi"):
        units[f"http_{mode}"], latency[f"http_{mode}"] = await http_unit(mode)


async def http_unit(mode: str) -> tuple[dict[str, Any], float]:
    from .rawhttp import Connection

    first, end = re.compile(rb"event: delta"), b"id: 5\n"
    body = json.dumps({"content": "Turn 1: answer briefly.", "model": "local"}).encode()
    headers = {"Authorization": "Bearer pk_floor", "Content-Type": "application/json"}
    port = free_port()
    with child(HTTP_SERVER, mode, str(port)):
        await wait_http(port)
        pool = [Connection("127.0.0.1", port) for _ in range(10)]

        async def server_cpu() -> float:
            return float(await http_get(port, "/cpu")) * 1000

        async def one(lane: int) -> None:
            reply = await pool[lane].request("/v1/conversations/c_1/messages", body, headers, first, end)
            if reply.status != 200 or not reply.ended:
                raise RuntimeError(f"http {mode}: {reply.status} {reply.tail!r}")

        await lanes(200, 10, one)  # warm
        bursts = [await burst(lambda: lanes(600, 10, one), server_cpu) for _ in range(REPEATS)]
        p50 = await latencies(100, lambda: one(0))
        for connection in pool:
            await connection.close()
    note = "uvicorn (uvloop, httptools), " + ("a bare ASGI app" if mode == "bare" else "FastAPI route + 1 dependency")
    return unit_result(bursts, note=note + "; server = uvicorn's process, client = the load generator"), p50


async def amqp_units(units: dict[str, Any], latency: dict[str, float], shared: Shared) -> None:
    import aio_pika

    from parley.v1 import chat_pb2
    from parley_common.messaging.amqp import envelope

    request = chat_pb2.ChatRequest(
        version=1,
        response_id="r_" + "0" * 32,
        user_id="dev",
        conversation_id="c_" + "0" * 32,
        client_message_id="m_" + "0" * 32,
        content="Turn 1: answer briefly, in one line please.",
        model="local",
        reply_to="amq.gen-floor",
    )
    frame = chat_pb2.StreamEvent(
        response_id="r_" + "0" * 32, conversation_id="c_" + "0" * 32, seq=3, delta=chat_pb2.StreamDelta(text=" word")
    )
    connection = await aio_pika.connect(AMQP_URL)
    bg = shared.background["rabbitmq"]
    try:
        confirmed = await connection.channel(publisher_confirms=True)
        unconfirmed = await connection.channel(publisher_confirms=False)
        consume_channel = await connection.channel()
        await consume_channel.set_qos(prefetch_count=256)
        name = f"{PREFIX}.commands"
        arguments: Any = {"x-queue-type": "quorum", "x-delivery-limit": 5}
        queue = await consume_channel.declare_queue(name, durable=True, arguments=arguments)
        # Not auto-delete (the bursts consume it and stop); exclusive, it goes with the connection.
        replies = await consume_channel.declare_queue(exclusive=True, auto_delete=False)
        n_cmd, n_frame = int(os.environ.get("BENCH_FLOOR_AMQP_N", "600")), 2000

        def command(i: int) -> Any:
            return envelope(request, message_type="parley.v1.ChatRequest", idempotency_key=f"{PREFIX}:{i}")

        def frame_message(i: int) -> Any:
            key = f"r:{i}"
            return envelope(
                frame, message_type="parley.v1.StreamEvent", idempotency_key=key, persistent=False, traced=False
            )

        async def holds(source: str, n: int) -> None:
            """Until the broker has taken every message published (unconfirmed ones too)."""
            while True:
                declared = await consume_channel.declare_queue(source, passive=True)
                if (declared.declaration_result.message_count or 0) >= n:
                    return
                await asyncio.sleep(0.01)

        async def publish(channel: aio_pika.abc.AbstractChannel, n: int, confirm: bool) -> int:
            async def one(i: int) -> None:
                await channel.default_exchange.publish(command(i), routing_key=name, mandatory=confirm)

            await lanes(n, 20, one)
            await holds(name, n)
            return n

        async def publish_frames(n: int) -> int:
            exchange = unconfirmed.default_exchange
            for i in range(n):
                await exchange.publish(frame_message(i), routing_key=replies.name, mandatory=False)
            await holds(replies.name, n)
            return n

        async def drain(source: aio_pika.abc.AbstractQueue, n: int, ack: bool) -> int:
            done = asyncio.get_running_loop().create_future()
            seen = 0

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                nonlocal seen
                if ack:
                    await message.ack()
                seen += 1
                if seen == n and not done.done():
                    done.set_result(None)

            tag = await source.consume(on_message, no_ack=not ack)
            await done
            await source.cancel(tag)
            if ack:
                await asyncio.sleep(0.05)  # the last acks reach the broker
            return n

        async def beam() -> float:
            return shared.beam_ms()

        await publish(confirmed, 200, True)
        await drain(queue, 200, True)
        results: dict[str, list[Burst]] = {k: [] for k in ("pc", "pu", "ca", "fp", "fc")}
        for _ in range(REPEATS):
            results["pc"].append(await burst(lambda: publish(confirmed, n_cmd, True), beam))
            results["ca"].append(await burst(lambda: drain(queue, n_cmd, True), beam))
            results["pu"].append(await burst(lambda: publish(unconfirmed, n_cmd, False), beam))
            await drain(queue, n_cmd, True)
            results["fp"].append(await burst(lambda: publish_frames(n_frame), beam))
            results["fc"].append(await burst(lambda: drain(replies, n_frame, False), beam))
        note = "quorum queue, persistent, Parley's envelope; 20 publishes in flight, prefetch 256"
        units["amqp_publish_confirmed"] = unit_result(results["pc"], bg, note + "; publisher confirms, mandatory")
        units["amqp_publish_unconfirmed"] = unit_result(
            results["pu"], bg, note + "; no confirms (not what Parley does)"
        )
        units["amqp_consume_acked"] = unit_result(results["ca"], bg, note + "; consumed and acked one by one")
        frame_note = "classic exclusive queue, transient, no confirms (the reply queue)"
        units["amqp_frame_publish"] = unit_result(results["fp"], bg, frame_note)
        units["amqp_frame_consume"] = unit_result(results["fc"], bg, frame_note + "; consumed no-ack")

        # Latency of one hop at concurrency 1: publish → delivered to a consumer.
        latency["amqp_hop_confirmed"] = await hop(confirmed, queue, command, True)
        latency["amqp_hop_frame"] = await hop(unconfirmed, replies, frame_message, False)
    finally:
        # Whatever happened, the quorum queue goes (the exclusive one goes with the connection).
        with contextlib.suppress(Exception):
            cleanup = await connection.channel()
            await cleanup.queue_delete(f"{PREFIX}.commands")
        await connection.close()


async def hop(channel: Any, source: Any, make: Callable[[int], Any], persistent: bool, n: int = 150) -> float:
    """p50 ms from a publish to its delivery to a consumer, one message at a time."""
    arrived: asyncio.Queue[float] = asyncio.Queue()

    async def on_arrival(message: Any) -> None:
        arrived.put_nowait(time.perf_counter())
        if persistent:
            await message.ack()

    tag = await source.consume(on_arrival, no_ack=not persistent)
    hops = []
    for i in range(n):
        message = make(i)
        t0 = time.perf_counter()
        await channel.default_exchange.publish(message, routing_key=source.name, mandatory=persistent)
        hops.append((await arrived.get()) - t0)
    await source.cancel(tag)
    return percentile([h * 1000 for h in hops], 50)


REDIS_SCRIPT = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 3600000)
redis.call('HMGET', KEYS[1], 'tokens', 'cost_micros')
redis.call('HMGET', KEYS[2], '#tokens', '#cost')
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('HINCRBY', KEYS[2], '#tokens', ARGV[3])
redis.call('HINCRBY', KEYS[2], '#cost', 0)
redis.call('ZADD', KEYS[3], now, ARGV[2])
redis.call('PEXPIRE', KEYS[2], 3600000)
redis.call('PEXPIRE', KEYS[3], 3600000)
return 1
"""


async def redis_units(units: dict[str, Any], latency: dict[str, float], shared: Shared) -> None:
    from redis.exceptions import NoScriptError

    from parley_common.clients.redis_pools import command_client

    client = command_client(REDIS_URL, max_connections=32)
    bg = shared.background["redis"]
    keys = [f"{PREFIX}:usage", f"{PREFIX}:holds", f"{PREFIX}:expiry"]
    stream = f"{PREFIX}:replay"
    script = client.register_script(REDIS_SCRIPT)
    payload = b"\x0a\x22" + b"r" * 34 + b"\x12\x22" + b"c" * 34 + b"\x18\x03\x2a\x07\x0a\x05 word"

    async def cmd(lane: int) -> None:
        await client.set(f"{PREFIX}:owner:{lane}", '["dev", "c_1"]', ex=60)

    def piped(size: int) -> Callable[[int], Awaitable[None]]:
        async def run(lane: int) -> None:
            async with client.pipeline(transaction=False) as pipe:
                for _ in range(size - (2 if size >= 5 else 1)):
                    pipe.xadd(stream, {"e": payload}, maxlen=1000, approximate=True)
                pipe.expire(stream, 60)
                if size >= 5:
                    pipe.expire(f"{PREFIX}:owner:{lane}", 60)
                await pipe.execute()

        return run

    async def evalsha(lane: int) -> None:
        await script(keys=keys, args=[int(time.time() * 1000), f"r{lane % 100}", 100])

    def evalsha_piped(with_get: bool) -> Callable[[int], Awaitable[None]]:
        # EVALSHA itself in the pipeline, as Parley sends it (a Script object would ask SCRIPT
        # EXISTS first); the script is cached by the warm-up's single calls.
        async def run(lane: int) -> None:
            args = [int(time.time() * 1000), f"r{lane % 100}", 100]
            async with client.pipeline(transaction=False) as pipe:
                if with_get:
                    pipe.get(f"{PREFIX}:owner:{lane}")
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                if not with_get:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                replies = await pipe.execute(raise_on_error=False)
            if any(isinstance(reply, NoScriptError) for reply in replies):
                await client.script_load(REDIS_SCRIPT)  # another session flushed the scripts

        return run

    ops: dict[str, Callable[[int], Awaitable[None]]] = {
        "redis_cmd": cmd,
        "redis_pipe2": piped(2),
        "redis_pipe3": piped(3),
        "redis_pipe5": piped(5),
        "redis_evalsha": evalsha,
        "redis_evalsha_pipe2": evalsha_piped(True),
        "redis_evalsha2": evalsha_piped(False),
    }
    notes = {
        "redis_cmd": "SET … EX (one command, one round trip)",
        "redis_pipe2": "XADD + EXPIRE in one round trip",
        "redis_pipe3": "XADD x2 + EXPIRE",
        "redis_pipe5": "XADD x3 + EXPIRE x2",
        "redis_evalsha": "a cached script of 9 calls (Parley's hold script makes 11, its six scripts 7.5 on average)",
        "redis_evalsha_pipe2": "GET + that script in one round trip",
        "redis_evalsha2": "that script twice in one round trip",
    }
    try:
        for key, one in ops.items():
            await lanes(200, 10, one)
            bursts = [await burst(functools.partial(lanes, 1000, 10, one), shared.redis_ms) for _ in range(REPEATS)]
            units[key] = unit_result(bursts, bg, notes[key] + "; redis.asyncio, 10 lanes")
            latency[key] = await latencies(200, functools.partial(one, 0))
    finally:
        await client.delete(*keys, stream, *(f"{PREFIX}:owner:{i}" for i in range(10)))
        await client.aclose()


async def grpc_units(units: dict[str, Any], latency: dict[str, float]) -> None:
    import grpc

    with child(GRPC_SERVER, ready=bool) as (_, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            echo = channel.unary_unary("/floor.Floor/Echo")
            cpu = channel.unary_unary("/floor.Floor/Cpu")
            request = b"m" * 512  # a user message and its ids

            async def server_cpu() -> float:
                return float(await cpu(b"")) * 1000

            async def one(_: int) -> None:
                await echo(request, timeout=10)

            await lanes(200, 10, one)
            bursts = [await burst(lambda: lanes(1000, 10, one), server_cpu) for _ in range(REPEATS)]
            units["grpc_unary"] = unit_result(bursts, note="grpc.aio both sides, 512 B request, 2 KB reply, 10 lanes")
            latency["grpc_unary"] = await latencies(200, lambda: one(0))


def sqlite_units(units: dict[str, Any], latency: dict[str, float]) -> None:
    """One write transaction as history makes it: BEGIN IMMEDIATE, the message row, the
    conversation's updated time, the change row, COMMIT, in WAL with synchronous=FULL."""
    with tempfile.TemporaryDirectory(prefix="parley-floor-") as folder:
        db = sqlite3.connect(Path(folder) / "floor.db", isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE conversations (id TEXT PRIMARY KEY, updated_at_ms INTEGER)")
        db.execute(
            "CREATE TABLE messages (seq INTEGER PRIMARY KEY, id TEXT UNIQUE, conversation_id TEXT, role TEXT,"
            " content TEXT, created_at_ms INTEGER)"
        )
        db.execute(
            "CREATE TABLE changes (seq INTEGER PRIMARY KEY, conversation_id TEXT, message_id TEXT, at_ms INTEGER)"
        )
        db.execute("INSERT INTO conversations VALUES ('c_1', 0)")
        content = "x" * 416
        counter = iter(range(1 << 40))

        def commit() -> None:
            i = next(counter)
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.execute(
                    "INSERT INTO messages (id, conversation_id, role, content, created_at_ms)"
                    " VALUES (?, 'c_1', 'user', ?, ?)",
                    (f"m_{i}", content, i),
                )
                db.execute("UPDATE conversations SET updated_at_ms = MAX(updated_at_ms, ?) WHERE id = 'c_1'", (i,))
                db.execute(
                    "INSERT INTO changes (conversation_id, message_id, at_ms) VALUES ('c_1', ?, ?)", (f"m_{i}", i)
                )

        for _ in range(50):
            commit()
        samples, times = [], []
        for _ in range(REPEATS):
            c0 = time.process_time()
            for _ in range(300):
                t0 = time.perf_counter()
                commit()
                times.append(time.perf_counter() - t0)
            samples.append(Burst((time.process_time() - c0) * 1000, 0.0, 0.0, 300))
        db.close()
    units["sqlite_commit"] = unit_result(
        samples, note="WAL, synchronous=FULL, 3 statements, 416-byte message, in-process"
    )
    latency["sqlite_commit"] = percentile([t * 1000 for t in times], 50)


async def stream_units(units: dict[str, Any]) -> dict[str, Any]:
    """A provider's SSE stream (OpenAI chunks, each token its own write 1 ms apart) read with
    the worker's httpx client (parley_worker.providers.http.upstream_client), and with a bare
    asyncio socket: per token (100-token streams)
    and per short stream (10 tokens), 20 streams at once."""
    from parley_worker.providers.http import upstream_client

    port = free_port()
    out: dict[str, Any] = {}
    with child(UPSTREAM_SERVER, str(port), ready=bool):
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        # The worker's own client: httpx over its ShardedTransport, sized as for 100 streams.
        async with upstream_client(total_timeout_s=900, connect_timeout_s=10, max_streams=100) as client:

            def httpx_stream(tokens: int) -> Callable[[int], Awaitable[None]]:
                async def one(_: int) -> None:
                    seen = 0
                    async with client.stream("POST", url, json={"stream": True, "tokens": tokens}) as response:
                        async for chunk in response.aiter_bytes():
                            seen += chunk.count(b"data: ")
                    if seen != tokens + 1:
                        raise RuntimeError(f"httpx read {seen} events of {tokens + 1}")

                return one

            sockets: dict[int, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}

            def raw_stream(tokens: int) -> Callable[[int], Awaitable[None]]:
                body = json.dumps({"stream": True, "tokens": tokens}).encode()
                head = (
                    f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(body)}\r\n\r\n"
                ).encode()

                async def one(lane: int) -> None:
                    if lane not in sockets:
                        sockets[lane] = await asyncio.open_connection("127.0.0.1", port)
                    reader, writer = sockets[lane]
                    writer.write(head + body)
                    seen, tail = 0, b""
                    while not tail.endswith(b"0\r\n\r\n"):
                        data = await reader.read(65536)
                        if not data:
                            raise RuntimeError("upstream closed")
                        seen += data.count(b"data: ")
                        tail = (tail + data)[-8:]
                    if seen != tokens + 1:
                        raise RuntimeError(f"raw read {seen} events of {tokens + 1}")

                return one

            for name, make in (("raw", raw_stream), ("httpx", httpx_stream)):
                await lanes(40, 20, make(10))
                long_bursts = [await burst(functools.partial(lanes, 40, 20, make(100))) for _ in range(REPEATS)]
                short_bursts = [await burst(functools.partial(lanes, 100, 20, make(10))) for _ in range(REPEATS)]
                per_token = [b.client_ms * 1000 / (b.ops * 100) for b in long_bursts]
                out[f"{name}_us_per_token"] = round(best(per_token), 2)
                out[f"{name}_us_per_token_median"] = round(statistics.median(per_token), 2)
                units[f"{name}_short_stream"] = unit_result(
                    short_bursts, note=f"{name}: one 10-token stream (request, headers, 11 events), 20 at once"
                )
            for _, writer in sockets.values():
                writer.close()
    return out


# ---- the run ----------------------------------------------------------------------------------


def beam_pid() -> int:
    from .cpu import pid_listening_on

    pid = pid_listening_on(5672)
    if pid is None:
        found = subprocess.run(["pgrep", "-o", "beam.smp"], capture_output=True, text=True, check=False).stdout.split()
        if not found:
            raise RuntimeError("no RabbitMQ (beam.smp) on this machine; the floor benchmark needs the local one")
        pid = int(found[0])
    return pid


async def _measure() -> dict[str, Any]:
    from parley_common.clients.redis_pools import command_client

    units: dict[str, Any] = {}
    latency: dict[str, float] = {}
    info = command_client(REDIS_URL, max_connections=2)
    shared = Shared(beam_pid(), info)
    try:
        await shared.measure_background()
        started = time.perf_counter()
        sections: dict[str, float] = {}
        steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("http", lambda: http_units(units, latency)),
            ("amqp", lambda: amqp_units(units, latency, shared)),
            ("redis", lambda: redis_units(units, latency, shared)),
            ("grpc", lambda: grpc_units(units, latency)),
            ("sqlite", lambda: asyncio.to_thread(sqlite_units, units, latency)),
        ]
        for name, step in steps:
            t0 = time.perf_counter()
            await step()
            sections[name] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        tokens = await stream_units(units)
        sections["streams"] = round(time.perf_counter() - t0, 1)
        elapsed = time.perf_counter() - started
        await shared.measure_background()  # again: how much the machine moved meanwhile
    finally:
        await info.aclose()
    return {
        "units": units,
        "latency_p50_ms_c1": {k: round(v, 3) for k, v in latency.items()},
        "tokens": tokens,
        "background_after_ms_per_s": shared.background,
        "seconds": round(elapsed, 1),
        "sections_s": sections,
    }


def _run_on_uvloop() -> dict[str, Any]:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_measure())


async def idle_rate(meter: Any, seconds: float = 1.5) -> dict[str, float]:
    """The shared servers' CPU ms per second while no turn runs."""
    b0, t0 = meter.read(), time.perf_counter()
    await asyncio.sleep(seconds)
    b1, t1 = meter.read(), time.perf_counter()
    return {name: (b1[name] - b0[name]) / (t1 - t0) for name in SHARED}


async def system_turns(turns: int, beam: int) -> dict[str, Any]:
    """`turns` short turns (10 tokens) on 50 lanes through the five services on the native
    endpoint, from the fake OpenAI-format upstream, as bench/profile.py's batch: every process's
    CPU from before the first turn to a second after the last."""
    from parley_dev.fake_providers import fake_provider_process

    from .cpu import CpuMeter, pid_listening_on
    from .peer import _models_file, _one, parley_env, parley_targets
    from .profile import batch
    from .system import system

    redis_pid = pid_listening_on(6379)
    if redis_pid is None:
        raise RuntimeError("no redis-server listens on 6379")
    key = "pk_bench_" + secrets.token_urlsafe(18)
    workdir = Path(tempfile.mkdtemp(prefix="parley-bench-floor-"))
    with fake_provider_process(workdir / "fake.log") as upstream:
        models = workdir / "models.json"
        _models_file(models, upstream)
        async with system("floor", key, parley_env(models)) as stack:
            target = (await parley_targets(stack, key))["parley_native"]
            # Warm: connections, imports, caches.
            await asyncio.gather(*(_one(target, lane, 10) for lane in range(50)))
            groups = {name: [process.pid] for name, process in stack.processes.items()}
            meter = CpuMeter({**groups, "rabbitmq": [beam], "redis": [redis_pid]})
            idle = [await idle_rate(meter)]
            started = time.perf_counter()
            done = await batch(target, 10, None, turns, 50, meter)
            seconds = time.perf_counter() - started
            idle.append(await idle_rate(meter))
            # The shared servers' background: the mean of the idle windows before and after.
            background = {name: (idle[0][name] + idle[1][name]) / 2 for name in SHARED}
            for connection in target.pool:
                await connection.close()
    out = turn_from_batch(done["cpu_ms"], turns, seconds, background)
    out.update(
        source=f"this run: {turns} short turns on 50 lanes, native endpoint, idle to idle",
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        turns_per_s=done["turns_per_s"],
        shared_background_ms_per_s={k: round(v, 1) for k, v in background.items()},
    )
    return out


def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


def read_json(name: str) -> dict[str, Any] | None:
    try:
        data = json.loads((RESULTS / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_peer() -> dict[str, Any] | None:
    peer = read_json("peer")
    return measured_turn(peer) if peer else None


async def main() -> None:
    # The broker and Redis on loopback, started here when they are not running (a fresh
    # machine): the broker's CPU is read from its process, so never from a container.
    with provide(AMQP_URL, REDIS_URL, prefer_containers=False):
        load_before = os.getloadavg()
        measured = await asyncio.to_thread(_run_on_uvloop)
        t0 = time.perf_counter()
        real = await system_turns(SYSTEM_TURNS, beam_pid()) if SYSTEM_TURNS else None
        system_s = time.perf_counter() - t0
    units = measured["units"]
    floor = floor_per_turn(units)
    first = first_token_floor(measured["latency_p50_ms_c1"])
    tokens = measured["tokens"]
    # A frame in the worker: its replay-log write (XADD + EXPIRE) and its publish; on the whole
    # machine also the broker's side, redis-server's, and the gateway's consume.
    frame_worker = units["amqp_frame_publish"]["client_us"] + units["redis_pipe2"]["client_us"]
    frame_machine = frame_worker + units["amqp_frame_consume"]["client_us"]
    frame_machine += sum(
        units[u].get("server_us", 0.0) for u in ("amqp_frame_publish", "amqp_frame_consume", "redis_pipe2")
    )
    direct = direct_tokens_per_s(read_json("providers"))
    httpx_token = tokens["httpx_us_per_token"]
    worker: dict[str, Any] = {
        "raw_us_per_token": tokens["raw_us_per_token"],
        "httpx_us_per_token": httpx_token,
        "frame_worker_us": round(frame_worker, 1),
        "frame_machine_us": round(frame_machine, 1),
        "direct_tokens_per_s_providers_json": direct,
        "needed_tokens_per_s": round(0.9 * direct) if direct else None,
        "floor_tokens_per_s": {
            str(k): {
                "worker_one_core": round(tokens_per_s_floor(httpx_token, frame_worker, k)),
                "machine_two_cores": round(tokens_per_s_floor(httpx_token, frame_machine, k, cores=2)),
            }
            for k in (1, 2, 5)
        },
    }
    peer = read_peer()
    if real is not None and peer is not None:
        for name in real["drowned_in_background"]:
            # Not measurable here and now: the figure of peer's run, said so in the output.
            real["by_process_ms"][name] = peer["by_process_ms"].get(name)
            real.setdefault("from_peer_json", []).append(name)
        real["total_ms"] = round(sum(v or 0.0 for v in real["by_process_ms"].values()), 2)
    result: dict[str, Any] = {
        "commit": git_commit(),
        "turn": {
            "what": "native endpoint, follow-up message, 10-token answer (5 frames)",
            "counts": turn_counts(),
            "steps": [{"unit": s.unit, "count": s.count, "process": s.process, "where": s.where} for s in TURN],
        },
        "units": units,
        "floor_per_turn": floor,
        "first_token_path": FIRST_TOKEN_PATH,
        "first_token_floor_ms": first,
        "latency_p50_ms_c1": measured["latency_p50_ms_c1"],
        "worker_tokens": worker,
        "measured_turn": real or peer,
        "peer_json_turn": peer,
        "shared_background_ms_per_s_after": {k: round(v, 1) for k, v in measured["background_after_ms_per_s"].items()},
        "seconds": {"units": measured["seconds"], "system": round(system_s, 1), **measured["sections_s"]},
        "load_average": [load_before, os.getloadavg()],
    }
    print_report(result)
    print(f"wrote {write('floor', result)}")


def print_report(result: Mapping[str, Any]) -> None:
    units, counts = result["units"], result["turn"]["counts"]
    print(f"\nunit costs (µs CPU per operation, best of {REPEATS} bursts; shared servers net of background):")
    print(f"  {'unit':26} {'client':>8} {'server':>8} {'p50 ms c=1':>10}  per turn")
    for name, unit in units.items():
        lat = result["latency_p50_ms_c1"].get(name)
        server = unit.get("server_us")
        print(
            f"  {name:26} {unit['client_us']:8.1f} {'' if server is None else f'{server:8.1f}':>8} "
            f"{'' if lat is None else f'{lat:10.3f}':>10}  {counts.get(name, '')}"
        )
    for name in ("amqp_hop_confirmed", "amqp_hop_frame"):
        print(f"  {name:26} {'':8} {'':8} {result['latency_p50_ms_c1'][name]:10.3f}")
    floor, real = result["floor_per_turn"], result["measured_turn"]
    print("\nCPU ms per short turn: the floor of this design (Σ count x unit) vs measured through the system:")
    print(f"  {'process':16} {'floor':>7} {'measured':>9}")
    names = sorted(set(floor["by_process_ms"]) | set(real["by_process_ms"] if real else {}))
    for name in names:
        got = real["by_process_ms"].get(name) if real else None
        print(f"  {name:16} {floor['by_process_ms'].get(name, 0.0):7.2f} {'' if got is None else f'{got:9.2f}':>9}")
    total = real["total_ms"] if real else None
    print(f"  {'all':16} {floor['total_ms']:7.2f} {'' if total is None else f'{total:9.2f}':>9}")
    if real:
        print(f"  (measured: {real['source']}, {real['measured_at']}, {real.get('turns_per_s')} turns/s)")
        if real.get("from_peer_json"):
            when = result["peer_json_turn"]["measured_at"]
            print(
                f"  ({', '.join(real['from_peer_json'])}: other sessions' load on the shared server was more than "
                f"half of its CPU in this run's batch; the figure is peer.json's, {when})"
            )
    print(f"  largest shares of the floor: {list(floor['by_unit_ms'].items())[:5]}")
    print(
        f"  turns/s on 2 cores at the floor: {floor['turns_per_s_on_2_cores']}; load average {result['load_average']}"
    )
    first = result["first_token_floor_ms"]
    print(f"first token, added, floor at concurrency 1: {first['total_ms']} ms ({first['by_unit_ms']})")
    w = result["worker_tokens"]
    print(
        f"tokens: raw socket {w['raw_us_per_token']} µs/token, the worker's httpx {w['httpx_us_per_token']} µs/token; "
        f"a frame {w['frame_worker_us']} µs in the worker, {w['frame_machine_us']} µs on the machine"
    )
    floors = "; ".join(
        f"{k} a frame: {v['worker_one_core']} (worker, 1 core), {v['machine_two_cores']} (machine, 2 cores)"
        for k, v in w["floor_tokens_per_s"].items()
    )
    print(f"  tokens/s at the floor, {floors}; 0.9x of the direct read in providers.json: {w['needed_tokens_per_s']}")
