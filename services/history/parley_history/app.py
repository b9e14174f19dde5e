"""History service process: gRPC API on the store, plus the completion-event consumer.

`python -m parley_history` serves; `python -m parley_history migrate` brings the configured
store's schema to this build's version and exits.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

from parley.v1 import chat_pb2, history_pb2_grpc
from parley_common.errors import ParleyError, Unavailable
from parley_common.messaging.amqp import confirmed_channel, connect
from parley_common.messaging.bus import Consumers, DeadLetters
from parley_common.messaging.topology import RESPONSE_COMPLETED, Topology
from parley_common.observability.logs import setup_logging
from parley_common.service.grpc_server import GrpcServer
from parley_common.service.lifecycle import InFlight, run_service, start_ops
from parley_common.service.ops_server import broker_check
from parley_common.settings import load_settings

from .cassandra_migrations import MigrationError
from .consumers import AnswerRecorder
from .grpc_api import HistoryServicer
from .settings import HistorySettings
from .stores import SchemaNotCurrent, migrate_store, open_store

log = logging.getLogger("parley.history")
# Between attempts of `migrate` to reach a store that does not answer yet.
MIGRATE_RETRY_S = 2.0


async def serve(stop: asyncio.Event) -> None:
    settings = load_settings(HistorySettings)
    # /healthz (the process), /readyz (the store answers, the broker is connected), /metrics.
    ops = await start_ops("history", settings)
    try:
        store = await open_store(settings)
    except (SchemaNotCurrent, MigrationError, ParleyError) as exc:
        log.error("cannot open the history store", extra={"reason": str(exc)})
        raise SystemExit(2) from None
    log.info("store open", extra={"store": settings.history_store})
    servicer = HistoryServicer(store)
    grpc_server = GrpcServer(
        settings.history_grpc_host,
        settings.history_grpc_port,
        lambda server: history_pb2_grpc.add_HistoryServiceServicer_to_server(servicer, server),
    )
    await grpc_server.start()
    log.info("grpc listening", extra={"port": grpc_server.port})

    connection = await connect(settings.amqp_url.get_secret_value(), settings.connect_timeout_s)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=settings.history_prefetch)
    topology = Topology(settings.namespace)
    in_flight = InFlight()
    consumers = Consumers(DeadLetters(await confirmed_channel(connection), topology), in_flight)
    await consumers.subscribe(
        await topology.declare_history_completed_queue(channel),
        chat_pb2.ResponseCompleted,
        RESPONSE_COMPLETED,
        AnswerRecorder(store),
        "history.persist_response",
    )
    await grpc_server.ready()
    ops.add_check("store", store.unready)
    ops.add_check("broker", broker_check(connection))
    log.info("ready")
    await ops.ready_until(stop)
    log.info("shutting down", extra={"in_flight": in_flight.count})
    await consumers.stop()
    # The events in flight and the gRPC calls in flight drain side by side, within one grace
    # period: one after the other they could take twice PARLEY_SHUTDOWN_GRACE_S, past the
    # pod's terminationGracePeriodSeconds.
    drained, _ = await asyncio.gather(
        in_flight.drain(settings.shutdown_grace_s), grpc_server.stop(settings.shutdown_grace_s)
    )
    if not drained:
        log.warning("in-flight events not finished; they will be redelivered")
    await connection.close()
    await store.close()
    await ops.stop()


async def migrate() -> None:
    """Bring the store's schema to this build's version. A store that does not answer yet (a
    Cassandra node starting, failing over) is asked again until PARLEY_CONNECT_TIMEOUT_S has
    passed, as the services wait for the broker: an initContainer that gave up at once would
    be restarted with a growing back-off while the store is already back."""
    settings = load_settings(HistorySettings)
    setup_logging("history", settings.log_level)
    deadline = time.monotonic() + settings.connect_timeout_s
    attempt = 1
    while True:
        try:
            applied = await migrate_store(settings)
            break
        except Unavailable as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                log.error("migration failed", extra={"reason": str(exc), "attempts": attempt})
                raise SystemExit(2) from None
            log.warning("store not reachable; trying again", extra={"reason": str(exc), "attempt": attempt})
            await asyncio.sleep(min(MIGRATE_RETRY_S, left))
            attempt += 1
        except (MigrationError, ParleyError) as exc:
            log.error("migration failed", extra={"reason": str(exc)})
            raise SystemExit(2) from None
    log.info("schema is current", extra={"store": settings.history_store, "applied": applied})


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args == ["migrate"]:
        asyncio.run(migrate())
    elif not args:
        run_service(serve)
    else:
        sys.exit("usage: python -m parley_history [migrate]")
