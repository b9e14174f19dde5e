"""Gateway process: the FastAPI app, its connections, and a uvicorn server that ends open
streams with a final event when it is told to stop."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType

import uvicorn
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from parley_common.budgets.stream_slots import StreamSlots
from parley_common.budgets.users import MonthlyUsage, UserBudgets
from parley_common.clients.history import HistoryClient
from parley_common.clients.media import MediaClient
from parley_common.clients.redis_pools import command_client, follower_client
from parley_common.context.window import counter_for_model
from parley_common.messaging.amqp import confirmed_channel, connect
from parley_common.messaging.cancellation import Cancellations
from parley_common.messaging.replay import ReplayLog
from parley_common.messaging.topology import Topology
from parley_common.observability.logs import setup_logging
from parley_common.observability.telemetry import setup_telemetry, shutdown_telemetry
from parley_common.service.ops_server import Readiness, ReadyCheck, broker_check, redis_check
from parley_common.settings import load_settings

from .auth import ApiKeys
from .deps import Gateway
from .errors import install_error_handlers
from .http_protocol import HttpLimits, protocol_class
from .limits import BodyLimit
from .ratelimit import RateLimitHeaders, RequestCounter, RequestRateLimit
from .routes import conversations, health, images, media, models, openai_compat, responses, sync, tokens, versions, web
from .settings import GatewaySettings
from .sse_response import DetachedStreams
from .turn_estimates import TurnEstimates
from .turns.live import LiveStreams
from .turns.ownership import OwnedConversations
from .turns.reply_queue import ReplyFrames
from .turns.responses import Responses
from .turns.start import Turns

log = logging.getLogger("parley.gateway")


def history_dependency(history: HistoryClient) -> ReadyCheck:
    async def check() -> str | None:
        return None if await history.serving() else "history: not serving"

    return check


def create_app(settings: GatewaySettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        topology = Topology(settings.namespace)
        readiness = Readiness("gateway")
        history = HistoryClient(settings.history_grpc_target)
        media = MediaClient(settings.media_grpc_target)
        redis = command_client(settings.redis_url.get_secret_value(), settings.redis_max_connections)
        redis_followers = follower_client(settings.redis_url.get_secret_value(), settings.redis_max_followers)
        user_budgets = UserBudgets(
            MonthlyUsage(redis, settings.namespace),
            plans=settings.plans,
            user_plans=settings.user_plans,
            default_plan=settings.default_plan,
        )
        # Token counts load every model's encoding from the installed package (never the network).
        await asyncio.to_thread(lambda: [counter_for_model(registry, name) for name in registry.models])
        amqp = await connect(settings.amqp_url.get_secret_value(), settings.connect_timeout_s)
        consume_channel = await amqp.channel()
        publish_channel = await confirmed_channel(amqp)
        # Requests wait in the queue even while no orchestrator runs.
        await topology.declare_requests_queue(publish_channel)
        reply_queue = await topology.declare_reply_queue(consume_channel, "gw-" + uuid.uuid4().hex[:16])
        replay = ReplayLog.from_settings(redis, settings, follower=redis_followers)
        slots = StreamSlots(redis, settings.namespace, settings.max_streams_per_user)
        streams = LiveStreams(settings, replay)
        owned = OwnedConversations()
        cancellations = Cancellations(
            redis, settings.namespace, await topology.declare_control_exchange(publish_channel)
        )
        responses = Responses(replay=replay, slots=slots, streams=streams, cancellations=cancellations)
        app.state.gateway = Gateway(
            settings=settings,
            registry=registry,
            api_keys=ApiKeys(settings.all_keys()),
            # Every authenticated response carries the rate-limit and the monthly budget headers.
            requests=RequestCounter(
                RequestRateLimit(redis, settings.namespace, settings.requests_per_minute), user_budgets
            ),
            history=history,
            media=media,
            replay=replay,
            slots=slots,
            user_budgets=user_budgets,
            owned=owned,
            streams=streams,
            turns=Turns(
                settings=settings,
                topology=topology,
                history=history,
                replay=replay,
                slots=slots,
                streams=streams,
                responses=responses,
                owned=owned,
                publish_channel=publish_channel,
                reply_queue=reply_queue.name,
                user_budgets=user_budgets,
                estimates=TurnEstimates(registry, settings),
            ),
            responses=responses,
            readiness=readiness,
        )
        # Held for the app's life (its consumer is taken over again whenever the channel reopens).
        reply_frames = ReplyFrames(consume_channel, streams.on_frame)
        await reply_frames.start(reply_queue)
        amqp.reconnect_callbacks.add(streams.on_reconnect)
        # Ready: accepting and connected to the broker. Redis and history are shared by every
        # gateway: reported, never gating (a request that needs one gets a retryable error).
        readiness.add_check("broker", broker_check(amqp))
        readiness.add_dependency("redis", redis_check(redis))
        readiness.add_dependency("history", history_dependency(history))
        readiness.mark_ready()
        log.info("ready", extra={"port": settings.port})
        yield
        await amqp.close()
        await history.close()
        await media.close()
        await redis.aclose()
        await redis_followers.aclose()
        shutdown_telemetry()

    registry = settings.model_registry()
    # The docs pages load scripts from a public CDN: served only when asked for. The OpenAPI
    # document itself is always there (clients and the API fuzz test read it).
    docs = settings.api_docs
    app = FastAPI(
        title="Parley",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        # The request's server span always (its trace id reaches the bus and the logs); spans
        # of each dependency, the endpoint and serialisation only when spans are exported:
        # without an endpoint nothing records them, and each costs CPU on every request.
        telemetry={"operation_spans": bool(settings.otlp_endpoint)},
    )
    install_error_handlers(app)
    # Read by the event streams' responses (sse_response.py).
    app.state.sse_compression = settings.sse_compression
    app.include_router(health.router)
    app.include_router(conversations.router)
    app.include_router(versions.router)
    app.include_router(responses.router)
    app.include_router(sync.router)
    app.include_router(models.router)
    app.include_router(openai_compat.router)
    app.include_router(tokens.router)
    app.include_router(media.router)
    app.include_router(images.router)
    web.install(app, settings.image_origins)
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        path_limits={"/v1/media": settings.max_upload_bytes + media.MULTIPART_OVERHEAD_BYTES},
    )
    app.add_middleware(RateLimitHeaders)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
            expose_headers=["X-Parley-Response-Id", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"],
            max_age=600,
        )
    # The outermost of the app's own middleware: a stream's body is served after everything
    # inside it has returned (sse_response.py).
    app.add_middleware(DetachedStreams)
    return app


class GatewayServer(uvicorn.Server):
    """On SIGTERM/SIGINT: stop accepting, give open streams their final event, then exit."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.parley_app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        gateway: Gateway | None = getattr(self.parley_app.state, "gateway", None)
        if gateway is not None and not gateway.stopping:
            gateway.stopping = True
            gateway.readiness.mark_stopping()
            asyncio.get_event_loop().call_soon_threadsafe(gateway.streams.shutdown)
        super().handle_exit(sig, frame)
        # uvicorn re-raises the signal after its graceful shutdown, so the process would die
        # of it; a stop we asked for and completed is a clean exit (status 0) instead.
        self._captured_signals.clear()


def main() -> None:
    settings = load_settings(GatewaySettings)
    setup_logging("gateway", settings.log_level)
    setup_telemetry("gateway", settings.otlp_endpoint)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        lifespan="on",
        # No WebSocket route: an upgrade request is served as plain HTTP, under the same limits.
        ws="none",
        http=protocol_class(
            HttpLimits(
                max_header_bytes=settings.max_header_bytes,
                max_header_line_bytes=settings.max_header_line_bytes,
                header_timeout_s=settings.header_read_timeout_s,
                body_timeout_s=settings.body_read_timeout_s,
                body_min_bytes_per_s=settings.body_min_bytes_per_s,
            )
        ),
    )
    GatewayServer(config, app).run()
