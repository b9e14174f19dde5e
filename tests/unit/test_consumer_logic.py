"""Each consumer's own logic, without a broker: the handlers behind the subscriber layer, with
what they would put on the bus recorded at the one seam they all use (`Dispatch`), on a real
Redis (the replay log, leases, budgets).

- the worker retries a provider that fails before the first token, falls back when it is
  overloaded, ends a cancelled answer cleanly;
- the orchestrator's completion settler charges a user once, however often it is delivered.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage
from redis.asyncio import Redis

from parley.v1 import chat_pb2
from parley_common.budgets.providers import ProviderBudget
from parley_common.budgets.stream_slots import StreamSlots
from parley_common.budgets.users import MonthlyUsage
from parley_common.budgets.waiting import BudgetQueue
from parley_common.messaging.cancellation import Cancellations
from parley_common.messaging.dispatch import Dispatch
from parley_common.messaging.replay import ReplayLog
from parley_common.messaging.topology import Topology
from parley_common.models import ModelConfig, ModelRegistry, ProviderConfig
from parley_orchestrator.completions import CompletionSettler
from parley_orchestrator.job_records import JobRecords
from parley_orchestrator.response_cache import ResponseCache
from parley_worker.consumers import ProviderJobConsumer
from parley_worker.leases import JobLease
from parley_worker.provider_sends import ProviderSends
from parley_worker.providers import Chunk, Finish, TextChunk, UsageReport
from parley_worker.providers.errors import Overloaded, ServerError
from parley_worker.resilience import RetryPolicy
from tests.support.polling import eventually


def model(provider: str, fallbacks: list[str] | None = None) -> ModelConfig:
    return ModelConfig(
        provider=provider,
        upstream_model=f"{provider}-up",
        context_window=8000,
        max_output_tokens=500,
        input_price_per_mtok=1,
        output_price_per_mtok=2,
        fallbacks=fallbacks or [],
    )


REGISTRY = ModelRegistry(
    default_model="first",
    providers={"p": ProviderConfig(kind="demo"), "q": ProviderConfig(kind="demo")},
    models={"first": model("p", ["second"]), "second": model("q")},
)


class RecordedDispatch(Dispatch):
    """What the handlers would publish, recorded instead (frames still go to the replay log)."""

    def __init__(self, replay: ReplayLog) -> None:
        super().__init__(
            cast(AbstractChannel, None),
            Topology("unit"),
            cast(AbstractExchange, None),
            cast(AbstractChannel, None),
            replay,
        )
        self.jobs: list[chat_pb2.ProviderJob] = []
        self.fallbacks: list[chat_pb2.ProviderJob] = []
        self.completions: list[chat_pb2.ResponseCompleted] = []

    async def send_job(self, job: chat_pb2.ProviderJob, idempotency_key: str) -> None:
        self.jobs.append(job)

    async def hand_to_fallback(self, job: chat_pb2.ProviderJob) -> None:
        self.fallbacks.append(job)

    async def announce(self, completed: chat_pb2.ResponseCompleted) -> None:
        self.completions.append(completed)


class Scripted:
    """A provider that fails as told before answering, then streams `words`, slowly if asked."""

    name = "p"

    def __init__(self, failures: list[Exception], words: list[str], delay_s: float = 0.0) -> None:
        self.failures = failures
        self.words = words
        self.delay_s = delay_s
        self.calls = 0

    async def stream(self, job: chat_pb2.ProviderJob) -> AsyncGenerator[Chunk, None]:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        for word in self.words:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            yield TextChunk(word)
        yield UsageReport(input_tokens=7, output_tokens=len(self.words))
        yield Finish("stop")


@dataclass
class Parts:
    namespace: str
    replay: ReplayLog
    dispatch: RecordedDispatch
    cancellations: Cancellations
    budget: ProviderBudget


@pytest.fixture
async def parts(redis: Redis) -> AsyncIterator[Parts]:
    namespace = "u" + uuid.uuid4().hex[:10]
    replay = ReplayLog(redis, namespace)
    yield Parts(
        namespace,
        replay,
        RecordedDispatch(replay),
        Cancellations(redis, namespace, None),
        ProviderBudget(redis, namespace),
    )
    keys = [key async for key in redis.scan_iter(match=f"{namespace}:*")]
    if keys:
        await redis.delete(*keys)


def worker(parts: Parts, redis: Redis, provider: Scripted) -> ProviderJobConsumer:
    queue = BudgetQueue(parts.budget, parts.cancellations, max_wait_s=5, poll_s=0.05)
    return ProviderJobConsumer(
        providers={"p": provider},
        registry=REGISTRY,
        replay=parts.replay,
        cancellations=parts.cancellations,
        slots=StreamSlots(redis, parts.namespace),
        lease=JobLease(redis, parts.namespace),
        policy=RetryPolicy(max_retries=2, base_s=0.01),
        coalesce_s=0.0,
        dispatch=parts.dispatch,
        sends=ProviderSends(REGISTRY, parts.budget, queue),
    )


def job(**fields: Any) -> chat_pb2.ProviderJob:
    base = chat_pb2.ProviderJob(
        response_id="r_" + uuid.uuid4().hex,
        user_id="u1",
        conversation_id="c1",
        user_message_id="m1",
        model="first",
        provider="p",
        upstream_model="p-up",
        messages=[chat_pb2.PromptMessage(role="user", content="hello")],
        max_output_tokens=100,
    )
    for name, value in fields.items():
        if name == "fallbacks":
            base.fallbacks.extend(value)
        else:
            setattr(base, name, value)
    return base


class Delivered:
    """The little of an incoming message a handler reads."""

    redelivered = False


def delivered() -> AbstractIncomingMessage:
    return cast(AbstractIncomingMessage, Delivered())


async def kinds(replay: ReplayLog, response_id: str) -> list[str]:
    return [str(e.WhichOneof("kind")) for e in await replay.read_after(response_id, 0)]


async def test_the_worker_retries_a_provider_that_fails_before_the_first_token(parts: Parts, redis: Redis) -> None:
    provider = Scripted([ServerError("boom", status=500), ServerError("boom", status=502)], ["Hello", " there"])
    the_job = job()
    await worker(parts, redis, provider)(the_job, delivered())
    assert provider.calls == 3, "two failures, then the answer"
    [done] = parts.dispatch.completions
    assert (done.content, done.finish_reason) == ("Hello there", "stop")
    assert done.status == chat_pb2.RESPONSE_STATUS_COMPLETED
    assert done.usage is not None and done.usage.output_tokens == 2
    frames = await kinds(parts.replay, the_job.response_id)
    assert "error" not in frames and frames[0] == "meta" and frames[-1] == "done", frames


async def test_an_overloaded_provider_hands_the_job_to_the_next_model_at_once(parts: Parts, redis: Redis) -> None:
    provider = Scripted([Overloaded("busy")], ["never"])
    fallback = chat_pb2.ModelTarget(model="second", provider="q", upstream_model="q-up")
    the_job = job(fallbacks=[fallback])
    await worker(parts, redis, provider)(the_job, delivered())
    assert provider.calls == 1, "an overloaded provider is not retried"
    [nxt] = parts.dispatch.fallbacks
    assert (nxt.model, nxt.provider, nxt.fallback_from, nxt.attempt) == ("second", "q", "first", 1)
    assert list(nxt.fallbacks) == [] and parts.dispatch.completions == [], "the turn is not over"


async def test_a_cancelled_answer_ends_cleanly_with_what_was_shown(parts: Parts, redis: Redis) -> None:
    provider = Scripted([], [f" w{i}" for i in range(1000)], delay_s=0.02)
    consumer = worker(parts, redis, provider)
    the_job = job()
    running = asyncio.create_task(consumer(the_job, delivered()))

    async def shown() -> bool:
        return "delta" in await kinds(parts.replay, the_job.response_id)

    await eventually(shown, 5, "a delta in the replay log", interval_s=0.01)
    assert consumer.cancel(the_job.response_id, "user")
    await asyncio.wait_for(running, 10)
    [done] = parts.dispatch.completions
    assert done.status == chat_pb2.RESPONSE_STATUS_INTERRUPTED and done.finish_reason == "cancelled"
    assert done.content and len(done.content.split()) < 1000, "the text shown so far, not the whole answer"
    frames = await replay_frames(parts.replay, the_job.response_id)
    assert frames[-1].done.finish_reason == "cancelled"
    assert "".join(f.delta.text for f in frames if f.WhichOneof("kind") == "delta") == done.content


async def replay_frames(replay: ReplayLog, response_id: str) -> list[chat_pb2.StreamEvent]:
    return await replay.read_after(response_id, 0)


async def test_a_completion_delivered_twice_charges_the_user_once(parts: Parts, redis: Redis) -> None:
    usage = MonthlyUsage(redis, parts.namespace)
    settler = CompletionSettler(
        registry=REGISTRY,
        records=JobRecords(redis, parts.namespace),
        budget=parts.budget,
        usage=usage,
        cache=ResponseCache(redis, parts.namespace, 60),
    )
    event = chat_pb2.ResponseCompleted(
        response_id="r_" + uuid.uuid4().hex,
        user_id="u_once",
        conversation_id="c1",
        model="first",
        content="an answer",
        status=chat_pb2.RESPONSE_STATUS_COMPLETED,
        usage=chat_pb2.Usage(input_tokens=10, output_tokens=5, cost_micros=20),
        finish_reason="stop",
    )
    await settler(event, delivered())
    first = await usage.spent("u_once")
    await settler(event, delivered())
    assert await usage.spent("u_once") == first
    assert (first.tokens, first.cost_micros) == (15, 20), first
