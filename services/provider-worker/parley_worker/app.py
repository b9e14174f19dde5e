"""Provider worker process: consumes the queues of the providers it serves, and the control exchange."""

from __future__ import annotations

import asyncio
import logging

import httpx

from parley.v1 import chat_pb2
from parley_common.budgets.providers import ProviderBudget
from parley_common.budgets.stream_slots import StreamSlots
from parley_common.budgets.waiting import BudgetQueue
from parley_common.clients.redis_pools import command_client
from parley_common.messaging.amqp import confirmed_channel, connect
from parley_common.messaging.bus import Consumers, DeadLetters
from parley_common.messaging.cancellation import Cancellations
from parley_common.messaging.dispatch import Dispatch
from parley_common.messaging.replay import ReplayLog
from parley_common.messaging.topology import CANCEL_RESPONSE, PROVIDER_JOB, Topology
from parley_common.models import ModelRegistry
from parley_common.service.lifecycle import InFlight, run_service, start_ops
from parley_common.service.ops_server import broker_check, redis_check
from parley_common.settings import load_settings

from .consumers import ProviderJobConsumer
from .leases import JobLease
from .provider_sends import ProviderSends
from .providers import Provider, model_client_key
from .providers.anthropic import AnthropicProvider
from .providers.demo import DemoProvider
from .providers.gemini import GeminiProvider
from .providers.http import HttpProvider, StreamTimeouts, upstream_client
from .providers.openai import OpenAIProvider
from .resilience import RetryPolicy
from .settings import WorkerSettings

log = logging.getLogger("parley.worker")


ADAPTERS: dict[str, type[HttpProvider]] = {
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
    "gemini": GeminiProvider,
}


def build_providers(
    settings: WorkerSettings, registry: ModelRegistry, client: httpx.AsyncClient
) -> dict[str, Provider]:
    """The providers this worker serves, as the registry describes them."""
    unknown = set(settings.worker_providers) - set(registry.providers)
    if unknown:
        raise SystemExit(
            f"invalid configuration: PARLEY_WORKER_PROVIDERS names providers not in the registry: {sorted(unknown)}"
        )
    timeouts = StreamTimeouts(
        connect_s=settings.provider_connect_timeout_s,
        first_token_s=settings.provider_first_token_timeout_s,
        idle_s=settings.provider_idle_timeout_s,
        total_s=settings.provider_total_timeout_s,
    )
    providers: dict[str, Provider] = {}
    for name in settings.worker_providers:
        config = registry.providers[name]
        if config.kind == "demo":
            providers[name] = DemoProvider(settings.demo_first_token_delay_ms / 1000, settings.demo_tokens_per_s)
            continue
        # A model served at a base_url of its own gets a client of its own (model_client_key).
        served_at = {model_client_key(name, model): spec.base_url for model, spec in registry.models.items()}
        served_at = {key: url for key, url in served_at.items() if url and key.startswith(f"{name}@")}
        if not config.base_url and len(served_at) < sum(m.provider == name for m in registry.models.values()):
            raise SystemExit(f"invalid configuration: provider {name!r} has no base_url in the model registry")
        for key, base_url in [(name, config.base_url), *served_at.items()]:
            if base_url:
                providers[key] = ADAPTERS[config.kind](
                    name=name,
                    base_url=base_url,
                    api_key=settings.provider_api_keys.get(name),
                    client=client,
                    timeouts=timeouts,
                    # Each job's model entry: its output-limit field and sampling options.
                    models={model: spec for model, spec in registry.models.items() if spec.provider == name},
                )
    return providers


async def serve(stop: asyncio.Event) -> None:
    settings = load_settings(WorkerSettings)
    ops = await start_ops("provider-worker", settings)
    registry = settings.model_registry()
    # One client for every upstream call of this process; timeouts are per phase (StreamTimeouts).
    client = upstream_client(
        total_timeout_s=settings.provider_total_timeout_s,
        connect_timeout_s=settings.provider_connect_timeout_s,
        max_streams=settings.worker_prefetch,
    )
    providers = build_providers(settings, registry, client)
    topology = Topology(settings.namespace)
    redis = command_client(settings.redis_url.get_secret_value(), settings.redis_max_connections)
    connection = await connect(settings.amqp_url.get_secret_value(), settings.connect_timeout_s)
    consume_channel = await connection.channel()
    await consume_channel.set_qos(prefetch_count=settings.worker_prefetch)
    publish_channel = await confirmed_channel(connection)
    reply_channel = await connection.channel(publisher_confirms=False)
    control_channel = await connection.channel()
    in_flight = InFlight()
    replay = ReplayLog.from_settings(redis, settings)
    # Completion events must reach history even if it has not started yet: Dispatch declares its queue too.
    dispatch = await Dispatch.open(publish_channel, topology, reply_channel, replay)
    cancellations = Cancellations(redis, settings.namespace, None)
    budget = ProviderBudget.from_settings(redis, settings)
    consumer = ProviderJobConsumer(
        providers=providers,
        registry=registry,
        replay=replay,
        cancellations=cancellations,
        slots=StreamSlots(redis, settings.namespace),
        lease=JobLease(redis, settings.namespace, ttl_s=settings.worker_lease_s),
        policy=RetryPolicy(
            max_retries=settings.provider_max_retries,
            base_s=settings.provider_retry_base_s,
            max_retry_after_s=settings.provider_max_retry_after_s,
        ),
        coalesce_s=settings.worker_coalesce_ms / 1000,
        dispatch=dispatch,
        sends=ProviderSends(registry, budget, BudgetQueue.from_settings(budget, cancellations, settings)),
    )
    dead_letters = DeadLetters(publish_channel, topology)
    # Cancels are heard until the process ends; jobs stop being taken when it starts stopping.
    control = Consumers(dead_letters, InFlight())
    await control.subscribe(
        await topology.declare_control_queue(control_channel),
        chat_pb2.CancelResponse,
        CANCEL_RESPONSE,
        consumer.on_control,
        "worker.control",
    )
    jobs = Consumers(dead_letters, in_flight)
    for name in providers:
        await jobs.subscribe(
            await topology.declare_provider_queue(consume_channel, name),
            chat_pb2.ProviderJob,
            PROVIDER_JOB,
            consumer,
            "worker.run_job",
        )
    log.info("ready", extra={"providers": sorted(providers)})

    ops.add_check("broker", broker_check(connection))
    ops.add_dependency("redis", redis_check(redis))
    await ops.ready_until(stop)
    log.info("shutting down", extra={"in_flight": in_flight.count})
    await jobs.stop()
    if not await in_flight.drain(settings.shutdown_grace_s):
        log.warning("streams still running after the grace period; interrupting them")
        consumer.cancel_all()
        await in_flight.drain(5.0)
    await connection.close()
    await redis.aclose()
    await ops.stop()
    await client.aclose()


def main() -> None:
    run_service(serve)
