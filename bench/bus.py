"""Per-message cost of the subscriber layer (parley_common.messaging.bus), on the local RabbitMQ.

Two kinds of message, 20,000 each, published beforehand and then consumed as fast as the
consumer takes them; CPU is read for the consuming process (time.process_time) and, apart,
for the broker (its beam.smp process, from /proc), per message:

- a frame: a StreamEvent delta on an exclusive, no-ack reply queue, through `bus.frames`
  into a gateway-like handler (what every streamed token costs a gateway);
- a command: a ResponseCompleted on a durable quorum queue (the declaration every work queue
  has), through `bus.Subscriber` — decode, type and version check, consumer span, in-flight
  count, ack — into a handler that does nothing.

Writes bench/results/bus.json.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from parley.v1 import chat_pb2
from parley_common.messaging.amqp import envelope
from parley_common.messaging.bus import DeadLetters, Subscriber, frames
from parley_common.messaging.topology import RESPONSE_COMPLETED, STREAM_EVENT, Topology
from parley_common.service.lifecycle import InFlight
from parley_dev.infra import provide

from .stats import write

MESSAGES = 20_000
ROUNDS = 2


def broker_cpu_s() -> float | None:
    """CPU seconds used so far by the local broker (beam.smp), or None when it is not here."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != "beam.smp":
                continue
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"rabbit" not in cmdline or b"parley-" in cmdline:
                continue  # not the default node (a test cluster's node names start "parley-")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            continue
    return None


async def measure(amqp_url: str, kind: str, build: Callable[[int], aio_pika.Message]) -> dict[str, float]:
    connection = await aio_pika.connect_robust(amqp_url)
    topology = Topology("bench" + uuid.uuid4().hex[:8])
    try:
        publish = await connection.channel(publisher_confirms=True)
        consume = await connection.channel()
        await consume.set_qos(prefetch_count=256)
        done = asyncio.Event()
        count = 0

        def counted() -> None:
            nonlocal count
            count += 1
            if count == MESSAGES:
                done.set()

        on_message: Callable[[AbstractIncomingMessage], Awaitable[None]]
        if kind == "frame":
            queue = await consume.declare_queue(exclusive=True, auto_delete=True)
            live: dict[str, asyncio.Queue[chat_pb2.StreamEvent]] = {}

            def on_frame(event: chat_pb2.StreamEvent) -> None:
                feed = live.get(event.response_id)  # as a gateway finds the turn's feed
                if feed is not None:
                    feed.put_nowait(event)
                counted()

            on_message = frames(chat_pb2.StreamEvent, STREAM_EVENT, on_frame)
        else:
            queue = await topology.declare_work_queue(consume, f"{topology.namespace}.commands")

            async def nothing(event: chat_pb2.ResponseCompleted, message: AbstractIncomingMessage) -> None:
                counted()

            on_message = Subscriber(
                queue=queue.name,
                body=chat_pb2.ResponseCompleted,
                message_type=RESPONSE_COMPLETED,
                handler=nothing,
                span="bench.command",
                in_flight=InFlight(),
                dead_letters=DeadLetters(publish, topology),
            )
        for i in range(0, MESSAGES, 500):
            await asyncio.gather(
                *(publish.default_exchange.publish(build(j), routing_key=queue.name) for j in range(i, i + 500))
            )
        broker_before, cpu_before, wall_before = broker_cpu_s(), time.process_time(), time.monotonic()
        await queue.consume(on_message, no_ack=kind == "frame")
        await asyncio.wait_for(done.wait(), 600)
        cpu = time.process_time() - cpu_before
        wall = time.monotonic() - wall_before
        broker_after = broker_cpu_s()
        if kind != "frame":
            await queue.delete(if_unused=False, if_empty=False)
        result = {
            "consumer_cpu_us_per_message": round(cpu / MESSAGES * 1e6, 1),
            "messages_per_s": round(MESSAGES / wall),
        }
        if broker_before is not None and broker_after is not None:
            result["broker_cpu_us_per_message"] = round((broker_after - broker_before) / MESSAGES * 1e6, 1)
        return result
    finally:
        await connection.close()


def frame(i: int) -> aio_pika.Message:
    event = chat_pb2.StreamEvent(
        response_id="r_" + uuid.uuid4().hex, conversation_id="c_" + uuid.uuid4().hex, seq=i + 1,
        delta=chat_pb2.StreamDelta(text=" token"),
    )  # fmt: skip
    key = f"{event.response_id}:{i}"
    return envelope(event, message_type=STREAM_EVENT, idempotency_key=key, persistent=False, traced=False)


def command(i: int) -> aio_pika.Message:
    event = chat_pb2.ResponseCompleted(
        response_id="r_" + uuid.uuid4().hex, user_id="u", conversation_id="c", content="An answer of a few words.",
    )  # fmt: skip
    return envelope(event, message_type=RESPONSE_COMPLETED, idempotency_key=event.response_id)


async def main() -> None:
    with provide(prefer_containers=False) as infra:
        results: dict[str, list[dict[str, float]]] = {"frame": [], "command": []}
        for _ in range(ROUNDS):  # interleaved, so drift hits both
            results["frame"].append(await measure(infra.amqp_url, "frame", frame))
            results["command"].append(await measure(infra.amqp_url, "command", command))
    best = {kind: min(rounds, key=lambda r: r["consumer_cpu_us_per_message"]) for kind, rounds in results.items()}
    for kind, result in best.items():
        print(f"{kind}: {result}")
    write("bus", {"messages": MESSAGES, "rounds": results, "best": best})
