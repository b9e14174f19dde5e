"""A failed gRPC call reaches its caller as a typed error whose text is Parley's, never gRPC's:
that text goes on to clients (HTTP error bodies, `error` events)."""

from __future__ import annotations

import grpc

from parley.v1 import history_pb2, history_pb2_grpc
from parley_common.clients import grpc_calls as grpc_client
from parley_common.errors import Unavailable
from parley_dev.infra import free_port


async def test_an_unreachable_service_is_unavailable_in_plain_words() -> None:
    # Nothing listens there: gRPC's own text names the address and the socket error.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}") as channel:
        stub = history_pb2_grpc.HistoryServiceStub(channel)
        try:
            await grpc_client.call("history", stub.ListConversations, history_pb2.ListConversationsRequest(), 5.0)
        except Unavailable as err:
            failure = err
    assert failure.code == "unavailable" and failure.http_status == 503
    assert failure.message == "a service is unavailable; try again shortly"
