"""Orchestrator process: consumes chat requests and publishes provider jobs."""

from __future__ import annotations

import asyncio
import logging

from parley.v1 import chat_pb2
from parley_common.budgets.providers import ProviderBudget
from parley_common.budgets.stream_slots import StreamSlots
from parley_common.budgets.users import UserBudgets
from parley_common.budgets.waiting import BudgetQueue
from parley_common.clients.history import HistoryClient
from parley_common.clients.media import MediaClient
from parley_common.clients.redis_pools import command_client, follower_client
from parley_common.context.window import counter_for_model
from parley_common.messaging.amqp import confirmed_channel, connect
from parley_common.messaging.bus import Consumers, DeadLetters
from parley_common.messaging.cancellation import Cancellations
from parley_common.messaging.dispatch import Dispatch
from parley_common.messaging.replay import ReplayLog
from parley_common.messaging.topology import CHAT_REQUEST, PROVIDER_JOB, RESPONSE_COMPLETED, Topology
from parley_common.service.lifecycle import InFlight, run_service, start_ops
from parley_common.service.ops_server import broker_check, redis_check
from parley_common.settings import load_settings

from .completions import CompletionSettler
from .consumers import ChatRequestConsumer
from .fallbacks import FallbackConsumer
from .image_turns import ImageTurns
from .job_records import JobRecords
from .media_refs import MediaRefs
from .response_cache import ResponseCache
from .routing import ModelRouter
from .settings import OrchestratorSettings
from .turn_order import TurnOrder

log = logging.getLogger("parley.orchestrator")


async def serve(stop: asyncio.Event) -> None:
    settings = load_settings(OrchestratorSettings)
    ops = await start_ops("orchestrator", settings)
    registry = settings.model_registry()
    router = ModelRouter(registry)
    topology = Topology(settings.namespace)
    history = HistoryClient(settings.history_grpc_target)
    media = MediaClient(settings.media_grpc_target)
    redis = command_client(settings.redis_url.get_secret_value(), settings.redis_max_connections)
    followers = follower_client(settings.redis_url.get_secret_value(), settings.redis_max_followers)
    connection = await connect(settings.amqp_url.get_secret_value(), settings.connect_timeout_s)
    consume_channel = await connection.channel()
    await consume_channel.set_qos(prefetch_count=settings.orchestrator_prefetch)
    publish_channel = await confirmed_channel(connection)
    reply_channel = await connection.channel(publisher_confirms=False)
    in_flight = InFlight()
    replay = ReplayLog.from_settings(redis, settings, follower=followers)
    control_exchange = await topology.declare_control_exchange(publish_channel)
    cancellations = Cancellations(redis, settings.namespace, control_exchange)
    # Load every model's encoding now (from the installed package, never the network), not on a first turn.
    await asyncio.to_thread(lambda: [counter_for_model(registry, name) for name in registry.models])
    budget = ProviderBudget.from_settings(redis, settings)
    budget_queue = BudgetQueue.from_settings(budget, cancellations, settings)
    cache = ResponseCache(redis, settings.namespace, settings.response_cache_ttl_s)
    records = JobRecords(redis, settings.namespace)
    slots = StreamSlots(redis, settings.namespace)
    user_budgets = UserBudgets.from_settings(redis, settings)
    # Answers made here (from the cache, or cancelled early) must reach history even before it starts.
    dispatch = await Dispatch.open(publish_channel, topology, reply_channel, replay)
    requests = ChatRequestConsumer(
        settings=settings,
        topology=topology,
        history=history,
        router=router,
        replay=replay,
        turn_order=TurnOrder(
            redis=redis,
            namespace=settings.namespace,
            replay=replay,
            history=history,
            cancellations=cancellations,
            max_wait_s=settings.turn_max_wait_s,
        ),
        cancellations=cancellations,
        slots=slots,
        budget_queue=budget_queue,
        cache=cache,
        records=records,
        dispatch=dispatch,
        media_refs=MediaRefs(media, settings.media_prompt_delivery),
        image_turns=ImageTurns(media, registry.images, dispatch),
        user_budgets=user_budgets,
    )
    consumers = Consumers(DeadLetters(publish_channel, topology), in_flight)
    await consumers.subscribe(
        await topology.declare_completions_queue(consume_channel),
        chat_pb2.ResponseCompleted,
        RESPONSE_COMPLETED,
        CompletionSettler(
            registry=registry,
            records=records,
            budget=budget,
            usage=user_budgets.usage,
            cache=cache,
        ),
        "orchestrator.settle_completion",
    )
    await consumers.subscribe(
        await topology.declare_fallbacks_queue(consume_channel),
        chat_pb2.ProviderJob,
        PROVIDER_JOB,
        FallbackConsumer(
            settings=settings,
            registry=registry,
            budget_queue=budget_queue,
            records=records,
            slots=slots,
            dispatch=dispatch,
            user_budgets=user_budgets,
        ),
        "orchestrator.fallback",
    )
    await consumers.subscribe(
        await topology.declare_requests_queue(consume_channel),
        chat_pb2.ChatRequest,
        CHAT_REQUEST,
        requests,
        "orchestrator.handle_request",
    )
    log.info("ready", extra={"models": sorted(registry.models)})

    ops.add_check("broker", broker_check(connection))
    ops.add_dependency("redis", redis_check(redis))
    await ops.ready_until(stop)
    log.info("shutting down", extra={"in_flight": in_flight.count})
    await consumers.stop()
    if not await in_flight.drain(settings.shutdown_grace_s):
        log.warning("in-flight requests not finished; they will be redelivered")
    await connection.close()
    await history.close()
    await media.close()
    await redis.aclose()
    await ops.stop()
    await followers.aclose()


def main() -> None:
    run_service(serve)
