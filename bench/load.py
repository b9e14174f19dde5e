"""A bounded load test on loopback: many users, many conversations, for minutes (`make load`).

The five services run as real processes (`Stack`, a namespace of their own) on the local
RabbitMQ and Redis; the demo model answers at a realistic pace (first token after 200 ms,
then 30 tokens/s; ~47 tokens, so an answer takes ~1.8 s). LOAD_USERS users (default 40),
each with their own API key (PARLEY_API_KEYS), each keep LOAD_CONVERSATIONS_PER_USER
conversations (default 3) going: send a message, read the whole answer, think 1-3 s, send
the next. Conversations start over the first 30 s. Only 127.0.0.1 is called, and the run
stops by itself after LOAD_DURATION_S (default 600): no turn starts after it, and turns in
flight get at most TURN_TIMEOUT_S to end.

Why 40 users (120 conversations, ~60 open streams, ~25-28 turns/s): every token is a frame on
every hop (the worker's 15 ms coalescing window is shorter than the 33 ms between tokens),
and a turn costs the whole system ~50 ms of CPU (worker ~16, gateway ~12, orchestrator ~6,
RabbitMQ ~6, history ~5, Redis ~2, this client ~3). Two cores can therefore carry ~35
turns/s at most, ~1,700 frames/s; the "few hundred streams" such a test might aim for would
be 6,000-9,000 frames/s at 30 tokens/s, hopelessly saturated. Measured with 60 s runs on this
2-core machine while other people's tests used 25-55% of it:

    users  conversations  turns/s  open streams  TTFT p50 / p99 ms  errors
       10             30      6.7            16      306 / 1,561       0
       30             90     20.3            46      439 / 1,552       0
       40            120     28.0            63      464 / 2,380       0
       60            180     29.1           113      816 / 2,277       0
       80            240     26.5           186      922 / 3,158     3.5% (Redis restarted by someone else)

Past 40 users throughput stops growing and the extra users only queue (open streams and
first-token time climb): 40 keeps the machine busy without drowning it. On a quiet machine
(a 120 s run, others using ~4%) 40 users gave 31 turns/s once steady, 57 open streams, TTFT
p50 / p99 254 / 801 ms, the machine ~80% busy. LOAD_USERS=200 gives the 600 conversations
and few hundred streams a bigger machine should carry.

Reported: turns completed per second, errors by cause (HTTP status and code, `error` events,
timeouts, cut connections), time to first token (request sent → first `delta`; also to the
headers and to the first event, to show where waiting happens) p50/p95/p99 per minute and
overall, the RSS of every service (and of the local RabbitMQ and Redis, which are shared)
every 10 s with its growth once steady (RSS at the end against RSS after the first 2
minutes, or half the run if shorter, in MB, % and as a slope), and CPU per process. At the
end 50 conversations are read back through GET /v1/conversations/{id}/messages: every
completed turn must be there, its user message and exactly one answer with the text the
client saw. Results go to bench/results/load.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import httpx

from parley_common.messaging.topology import Topology
from parley_dev.infra import provide
from parley_dev.stack import Stack
from tests.support.stacks import stack_config

from .load_report import Observations, Sample, TurnRecord, print_report, summarize
from .sse_client import TurnResult, send_turn
from .stats import write


def _env_number(name: str, default: float, lo: float, hi: float) -> float:
    raw = os.environ.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a number") from None
    if not lo <= value <= hi:
        raise SystemExit(f"{name}={raw!r} is out of range [{lo:g}, {hi:g}]")
    return value


DURATION_S = _env_number("LOAD_DURATION_S", 600, 20, 3600)
USERS = int(_env_number("LOAD_USERS", 40, 1, 2000))
CONVERSATIONS_PER_USER = int(_env_number("LOAD_CONVERSATIONS_PER_USER", 3, 1, 20))
THINK_S = (1.0, 3.0)
FIRST_TOKEN_DELAY_MS = 200
TOKENS_PER_S = 30.0
# A turn that has not ended after this long counts as a timeout (an answer takes ~2 s).
TURN_TIMEOUT_S = 30.0
RAMP_S = min(30.0, DURATION_S / 4)
SAMPLE_EVERY_S = 10.0
PROGRESS_EVERY_S = 30.0
STEADY_AFTER_S = min(120.0, DURATION_S / 2)
CHECKED_CONVERSATIONS = 50
# One provider worker serves every stream: its prefetch must exceed the open streams, or jobs
# wait in the queue and that wait shows up as first-token latency (a capacity limit of the
# one-worker stack, not of Parley).
WORKER_PREFETCH = 2000
HOST = "127.0.0.1"

QUESTIONS = (
    "How do I keep a sourdough starter alive while travelling?",
    "Explain the difference between TCP and UDP to a ten year old.",
    "What should I pack for three days of hiking in autumn?",
    "Summarise the plot of Hamlet in four sentences.",
    "Which is faster for lookups, a hash map or a sorted array?",
    "Give me a short poem about the sea at night.",
    "How do I politely decline a meeting invitation?",
    "What is a good first program to write in a new language?",
)


@dataclass
class Conversation:
    user: str
    key: str
    id: str
    # Completed turns, kept for the history check: (client message id, content, answer text).
    completed: list[tuple[str, str, str]] | None = None


@dataclass
class LoadRun:
    stack: Stack
    conversations: list[Conversation]
    obs: Observations = field(default_factory=Observations)
    t0: float = 0.0
    in_flight: int = 0
    turns_ok: int = 0

    def now(self) -> float:
        return time.monotonic() - self.t0


async def main() -> None:
    keys = {f"user{i:04d}": "pk_load_" + secrets.token_urlsafe(18) for i in range(USERS)}
    workdir = Path(tempfile.mkdtemp(prefix="parley-load-"))
    loadavg_start = _loadavg()
    with provide() as infra:
        env = {
            "PARLEY_API_KEYS": json.dumps(keys),
            "PARLEY_DEMO_FIRST_TOKEN_DELAY_MS": str(FIRST_TOKEN_DELAY_MS),
            "PARLEY_DEMO_TOKENS_PER_S": str(TOKENS_PER_S),
            "PARLEY_WORKER_PREFETCH": str(WORKER_PREFETCH),
            "PARLEY_ORCHESTRATOR_PREFETCH": str(WORKER_PREFETCH),
            "PARLEY_LOG_LEVEL": "WARNING",
        }
        stack = Stack(stack_config(infra, workdir, "load", "pk_dev_" + secrets.token_urlsafe(18), env))
        assert stack.base_url.startswith(f"http://{HOST}:"), stack.base_url
        await stack.start()
        try:
            conversations = await _create_conversations(stack, keys)
            run = LoadRun(stack, conversations)
            history_check = await _run(run)
            # A service that died under load is a finding in itself (its log says why).
            died = {name: p.returncode for name, p in stack.processes.items() if p.poll() is not None}
        except BaseException:
            print(f"load test failed; service logs are in {workdir / 'log'}")
            raise
        finally:
            exit_codes = await stack.stop()
            left_on_bus = await _remove_namespace(infra.amqp_url, stack.config.namespace)
    result: dict[str, Any] = {
        "shape": {
            "duration_s": DURATION_S,
            "users": USERS,
            "conversations_per_user": CONVERSATIONS_PER_USER,
            "think_s": list(THINK_S),
            "ramp_s": RAMP_S,
            "demo_first_token_delay_ms": FIRST_TOKEN_DELAY_MS,
            "demo_tokens_per_s": TOKENS_PER_S,
            "turn_timeout_s": TURN_TIMEOUT_S,
            "worker_prefetch": WORKER_PREFETCH,
            "steady_after_s": STEADY_AFTER_S,
        },
        **summarize(run.obs, DURATION_S, STEADY_AFTER_S),
        "history_check": history_check,
        "services_died_during_run": died,
        "service_log_warnings": _log_warnings(workdir / "log", list(exit_codes)),
        # Messages still queued after every turn ended and the services stopped: should be none.
        "messages_left_on_bus": left_on_bus,
        "service_exit_codes_on_sigterm": exit_codes,
        "machine_note": "shared: other engineers' tests may run on the same 2 cores, RabbitMQ and Redis",
        "loadavg_1_5_15_min": {"start": loadavg_start, "end": _loadavg()},
    }
    path = write("load", result)
    print_report(result)
    print(f"wrote {path} (service logs: {workdir / 'log'})")


async def _create_conversations(stack: Stack, keys: dict[str, str]) -> list[Conversation]:
    conversations: list[Conversation] = []
    gate = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:

        async def create(user: str, key: str) -> None:
            async with gate:
                reply = await client.post(
                    "/v1/conversations", json={"title": "load"}, headers={"Authorization": f"Bearer {key}"}
                )
            reply.raise_for_status()
            conversations.append(Conversation(user, key, reply.json()["id"]))

        await asyncio.gather(*(create(user, key) for user, key in keys.items() for _ in range(CONVERSATIONS_PER_USER)))
    rng = random.Random(7)
    for conversation in rng.sample(conversations, min(CHECKED_CONVERSATIONS, len(conversations))):
        conversation.completed = []
    return conversations


async def _run(run: LoadRun) -> dict[str, Any]:
    """Drive the load for DURATION_S, sampling the services; then check history."""
    print(
        f"load: {USERS} users, {len(run.conversations)} conversations, {DURATION_S:g} s "
        f"(ramp {RAMP_S:g} s, steady after {STEADY_AFTER_S:g} s)",
        flush=True,
    )
    run.t0 = time.monotonic()
    sampler = asyncio.create_task(_sample(run))
    rng = random.Random(1)
    lanes = [
        asyncio.create_task(_lane(run, c, random.Random(rng.random()), RAMP_S * i / len(run.conversations)))
        for i, c in enumerate(rng.sample(run.conversations, len(run.conversations)))
    ]
    await asyncio.gather(*lanes)
    await sampler
    print(f"all turns ended at {run.now():.1f} s; checking history", flush=True)
    return await _check_history(run)


async def _lane(run: LoadRun, conversation: Conversation, rng: random.Random, start_s: float) -> None:
    """One conversation: message, whole answer, think, again, until the deadline."""
    await asyncio.sleep(start_s + rng.uniform(0, THINK_S[0]))
    turn = 0
    while run.now() < DURATION_S:
        turn += 1
        message_id = "m_" + uuid.uuid4().hex
        content = f"{rng.choice(QUESTIONS)} (turn {turn})"
        started = run.now()
        run.in_flight += 1
        result: TurnResult | None = None
        try:
            async with asyncio.timeout(TURN_TIMEOUT_S):
                result = await send_turn(
                    HOST,
                    run.stack.gateway_port,
                    f"/v1/conversations/{conversation.id}/messages",
                    conversation.key,
                    {"content": content, "client_message_id": message_id},
                )
            outcome = _outcome(result)
        except TimeoutError:
            outcome = "timeout"
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            outcome = f"client:{type(exc).__name__}"
        finally:
            run.in_flight -= 1
        run.obs.turns.append(
            TurnRecord(
                started,
                run.now(),
                outcome,
                result.headers_s if result else None,
                result.first_event_s if result else None,
                result.first_delta_s if result else None,
            )
        )
        if outcome == "ok":
            run.turns_ok += 1
            if conversation.completed is not None and result is not None:
                conversation.completed.append((message_id, content, "".join(result.text)))
        think = rng.uniform(*THINK_S)
        if run.now() + think >= DURATION_S:
            return
        await asyncio.sleep(think)


def _outcome(result: TurnResult) -> str:
    if result.status != 200:
        return f"http_{result.status}:{result.error_code}"
    if result.last_event == "error":
        return f"error_event:{result.error_code}"
    if result.total_s is None:
        return "cut"  # the connection ended before `done`
    if result.first_delta_s is None:
        return "no_text"
    return "ok"


async def _sample(run: LoadRun) -> None:
    """Open streams every second; RSS and CPU of every service every SAMPLE_EVERY_S, the last
    one exactly at the deadline (before in-flight turns drain)."""
    next_sample = 0.0
    next_progress = PROGRESS_EVERY_S
    tick = 0.0
    while True:
        run.obs.in_flight.append((run.now(), run.in_flight))
        if tick >= next_sample or tick >= DURATION_S:
            run.obs.samples.append(_snapshot(run))
            next_sample += SAMPLE_EVERY_S
        if tick >= next_progress:
            _progress(run)
            next_progress += PROGRESS_EVERY_S
        if tick >= DURATION_S:
            return
        tick = min(tick + 1.0, DURATION_S)
        await asyncio.sleep(max(0.0, tick - run.now()))


def _snapshot(run: LoadRun) -> Sample:
    rss: dict[str, float] = {}
    cpu: dict[str, float] = {}
    # RabbitMQ and Redis are looked up each time: other people's tests may restart them.
    pids = {name: process.pid for name, process in run.stack.processes.items()} | _infra_pids()
    for name, pid in pids.items():
        try:
            rss[name] = round(_rss_kb(pid) / 1024, 1)
            cpu[name] = _cpu_s(pid)
        except (OSError, ValueError):
            pass  # exited: the report shows the gap; stack.stop() reports its exit code
    busy, total = _machine_cpu_s()
    return Sample(run.now(), rss, cpu, pids, _cpu_s(os.getpid()), busy, total, run.in_flight, run.turns_ok)


def _progress(run: LoadRun) -> None:
    samples = run.obs.samples
    recent = [t for t in run.obs.turns if t.started_s >= run.now() - PROGRESS_EVERY_S]
    failed = sum(t.outcome != "ok" for t in recent)
    last = samples[-1]
    rate = (last.turns_ok - samples[-4].turns_ok) / (last.t_s - samples[-4].t_s) if len(samples) >= 4 else 0.0
    rss = " ".join(f"{name} {mb:.0f}" for name, mb in last.rss_mb.items())
    print(
        f"  t={run.now():5.0f}s  {rate:6.1f} turns/s  open streams {run.in_flight:4d}  "
        f"failed {failed}/{len(recent)} (last {PROGRESS_EVERY_S:g} s)  RSS MB: {rss}",
        flush=True,
    )


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"no VmRSS for {pid}")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _infra_pids() -> dict[str, int]:
    """The local RabbitMQ (beam.smp) and Redis server processes, found by name in /proc."""
    names = {"beam.smp": "rabbitmq*", "redis-server": "redis*"}
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if comm in names:
                found[names[comm]] = int(entry.name)
    return found


def _loadavg() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def _machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of all cores since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal
    idle = values[3] + values[4]
    hz = os.sysconf("SC_CLK_TCK")
    return (total - idle) / hz, total / hz


async def _check_history(run: LoadRun, wait_s: float = 30.0) -> dict[str, Any]:
    """Every completed turn of the checked conversations is in history: its user message and
    exactly one answer with the text the client saw. Answers are saved from the bus after
    `done`, so a missing one is polled for until `wait_s`."""
    checked = [c for c in run.conversations if c.completed is not None]
    deadline = time.monotonic() + wait_s
    async with httpx.AsyncClient(base_url=run.stack.base_url, timeout=30) as client:
        while True:
            counts: dict[str, int] = defaultdict(int)
            for conversation in checked:
                try:
                    messages = await _all_messages(client, conversation)
                except httpx.HTTPError:
                    # The shared broker or Redis may be restarting (503): try again until the deadline.
                    counts["conversations_unreadable"] += 1
                    continue
                users = {m["id"]: m for m in messages if m["role"] == "user"}
                answers: dict[str, list[dict[str, Any]]] = defaultdict(list)
                for m in messages:
                    if m["role"] == "assistant":
                        answers[m["reply_to_id"] or ""].append(m)
                for message_id, content, answer in conversation.completed or []:
                    counts["turns_checked"] += 1
                    user = users.get(message_id)
                    counts["missing_user"] += user is None
                    counts["wrong_user"] += user is not None and user["content"] != content
                    replies = answers.get(message_id, [])
                    counts["missing_answer"] += not replies
                    counts["duplicate_answer"] += len(replies) > 1
                    counts["wrong_answer"] += len(replies) == 1 and replies[0]["content"] != answer
            if not (counts["missing_answer"] or counts["conversations_unreadable"]) or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
    keys = (
        "turns_checked",
        "missing_user",
        "wrong_user",
        "missing_answer",
        "duplicate_answer",
        "wrong_answer",
        "conversations_unreadable",
    )
    return {"conversations": len(checked)} | {k: counts[k] for k in keys}


async def _all_messages(client: httpx.AsyncClient, conversation: Conversation) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    cursor = ""
    while True:
        reply = await client.get(
            f"/v1/conversations/{conversation.id}/messages",
            params={"limit": 200, "before": cursor},
            headers={"Authorization": f"Bearer {conversation.key}"},
        )
        reply.raise_for_status()
        page = reply.json()
        messages.extend(page["data"])
        cursor = page["next_cursor"] or ""
        if not cursor:
            return messages


def _log_warnings(log_dir: Path, services: list[str]) -> dict[str, dict[str, int]]:
    """Warnings and errors each service logged (JSON lines), counted by message."""
    found: dict[str, dict[str, int]] = {}
    for service in services:
        path = log_dir / f"{service}.log"
        counts: dict[str, int] = defaultdict(int)
        for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("level") in ("warning", "error", "critical"):
                counts[f"{entry['level']}: {str(entry.get('msg', ''))[:100]}"] += 1
        if counts:
            found[service] = dict(sorted(counts.items(), key=lambda kv: -kv[1]))
    return found


async def _remove_namespace(amqp_url: str, namespace: str) -> dict[str, int]:
    """Delete this run's durable queues and exchanges from the (shared) broker; returns the
    messages each queue still held (anything but 0 was never consumed)."""
    topology = Topology(namespace)
    queues = [
        topology.requests_queue,
        topology.provider_queue("demo"),
        topology.history_completed_queue,
        topology.completions_queue,
        topology.dead_letter_queue,
    ]
    left: dict[str, int] = {}
    connection = await aio_pika.connect(amqp_url)
    try:
        for name in queues:
            channel = await connection.channel()
            try:
                declared = await channel.declare_queue(name, passive=True)
                count = int(declared.declaration_result.message_count or 0)
                await declared.delete(if_unused=False, if_empty=False)
                left[name.removeprefix(namespace + ".")] = count
            except aio_pika.exceptions.ChannelClosed:
                pass  # never declared
            finally:
                if not channel.is_closed:
                    await channel.close()
        channel = await connection.channel()
        for exchange in (topology.events_exchange, topology.control_exchange):
            await channel.exchange_delete(exchange)
    finally:
        await connection.close()
    return left


if __name__ == "__main__":
    asyncio.run(main())
