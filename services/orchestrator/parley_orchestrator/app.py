"""Orchestrator process: consumes chat requests and publishes provider jobs."""

from __future__ import annotations

import asyncio
import logging

from parley_common.amqp import connect
from parley_common.context import counter_for_model
from parley_common.control import Cancellations
from parley_common.dead_letters import DeadLetters, Deliveries
from parley_common.history_client import HistoryClient
from parley_common.lifecycle import InFlight, run_service
from parley_common.logs import setup_logging
from parley_common.media_client import MediaClient
from parley_common.ops_server import OpsServer, broker_check, redis_check
from parley_common.redis_clients import command_client, follower_client
from parley_common.replay import ReplayLog
from parley_common.settings import load_settings
from parley_common.stream_slots import StreamSlots
from parley_common.telemetry import setup_telemetry
from parley_common.topology import Topology
from parley_common.user_budgets import MonthlyUsage

from .budget_queue import BudgetQueue
from .budgets import ProviderBudget
from .completions import CompletionConsumer, declare_completions_queue
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
    setup_logging("orchestrator", settings.log_level)
    setup_telemetry("orchestrator", settings.otlp_endpoint)
    ops = OpsServer("orchestrator", settings.metrics_host, settings.metrics_port)
    await ops.start()
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
    publish_channel = await connection.channel(publisher_confirms=True)
    reply_channel = await connection.channel(publisher_confirms=False)
    in_flight = InFlight()
    replay = ReplayLog.from_settings(redis, settings, follower=followers)
    control_exchange = await topology.declare_control_exchange(publish_channel)
    cancellations = Cancellations(redis, settings.namespace, control_exchange)
    # Load every model's encoding now (from the installed package, never the network), not on a first turn.
    await asyncio.to_thread(lambda: [counter_for_model(registry, name) for name in registry.models])
    budget = ProviderBudget(redis, settings.namespace, stale_s=max(10.0, settings.budget_poll_s * 20))
    cache = ResponseCache(redis, settings.namespace, settings.response_cache_ttl_s)
    records = JobRecords(redis, settings.namespace)
    # Answers made here (from the cache, or cancelled early) must reach history even before it starts.
    await topology.declare_history_completed_queue(publish_channel)
    events_exchange = await topology.declare_events_exchange(publish_channel)
    consumer = ChatRequestConsumer(
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
        slots=StreamSlots(redis, settings.namespace),
        budget_queue=BudgetQueue(
            budget, cancellations, max_wait_s=settings.budget_max_wait_s, poll_s=settings.budget_poll_s
        ),
        cache=cache,
        records=records,
        publish_channel=publish_channel,
        reply_channel=reply_channel,
        events_exchange=events_exchange,
        in_flight=in_flight,
        media_refs=MediaRefs(media, settings.media_prompt_delivery),
        image_turns=ImageTurns(media, registry.images),
        dead_letters=DeadLetters(publish_channel, topology),
        deliveries=Deliveries(redis, settings.namespace),
    )
    completions = await declare_completions_queue(topology, consume_channel)
    completions_tag = await completions.consume(
        CompletionConsumer(
            registry=registry,
            records=records,
            budget=budget,
            usage=MonthlyUsage(redis, settings.namespace),
            cache=cache,
            dead_letters=DeadLetters(publish_channel, topology),
            queue=completions.name,
            in_flight=in_flight,
        )
    )
    fallbacks = await topology.declare_fallbacks_queue(consume_channel)
    fallbacks_tag = await fallbacks.consume(FallbackConsumer(consumer))
    queue = await topology.declare_requests_queue(consume_channel)
    consumer_tag = await queue.consume(consumer)
    log.info("ready", extra={"models": sorted(registry.models)})

    ops.add_check("broker", broker_check(connection))
    ops.add_check("redis", redis_check(redis))
    ops.mark_ready()

    await stop.wait()
    ops.mark_stopping()
    log.info("shutting down", extra={"in_flight": in_flight.count})
    await queue.cancel(consumer_tag)
    await completions.cancel(completions_tag)
    await fallbacks.cancel(fallbacks_tag)
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
