"""The gateway's frame path pieces: a delivery from its reply queue decoded as `bus.frames`
decodes it (turns/reply_queue.py), and a compressed stream's last write sent with its end."""

from __future__ import annotations

import zlib
from typing import Any, cast

import pytest
from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp import commands as spec
from pamqp.common import FieldTable
from pamqp.header import ContentHeader

from parley.v1 import chat_pb2
from parley_common.messaging.topology import SCHEMA_VERSION, STREAM_EVENT
from parley_gateway.compression import StreamCompressor
from parley_gateway.sse import encode_event
from parley_gateway.turns.reply_queue import decode_frame


def delivered(body: bytes, message_type: str = STREAM_EVENT, headers: FieldTable | None = None) -> DeliveredMessage:
    properties = spec.Basic.Properties(
        message_type=message_type,
        headers={"x-schema-version": SCHEMA_VERSION, "x-idempotency-key": "k"} if headers is None else headers,
    )
    return DeliveredMessage(
        delivery=spec.Basic.Deliver(consumer_tag="t", delivery_tag=1, exchange="", routing_key="q"),
        header=ContentHeader(body_size=len(body), properties=properties),
        body=body,
        channel=cast(AbstractChannel, None),
    )


FRAME = chat_pb2.StreamEvent(response_id="r", conversation_id="c", seq=3, delta=chat_pb2.StreamDelta(text="hé"))


def test_a_delivered_frame_is_decoded() -> None:
    assert decode_frame(delivered(FRAME.SerializeToString())) == FRAME


@pytest.mark.parametrize(
    "message",
    [
        delivered(FRAME.SerializeToString(), message_type="parley.v1.ChatRequest"),
        delivered(FRAME.SerializeToString(), headers={"x-schema-version": SCHEMA_VERSION + 1}),
        delivered(FRAME.SerializeToString(), headers={}),
        delivered(b"\xff\xff\xff"),
    ],
    ids=["another type", "another schema version", "no schema version", "not protobuf"],
)
def test_what_is_not_a_frame_of_this_schema_is_dropped_and_logged(
    message: DeliveredMessage, caplog: pytest.LogCaptureFixture
) -> None:
    assert decode_frame(message) is None
    assert [r.getMessage() for r in caplog.records] == ["dropping bad frame"]


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_the_last_write_goes_with_the_end_of_a_compressed_stream(coding: str) -> None:
    frames = [encode_event(FRAME), encode_event(chat_pb2.StreamEvent(seq=4, done=chat_pb2.StreamDone()))]
    compressor = StreamCompressor(coding)
    decoder: Any = zlib.decompressobj(31 if coding == "gzip" else 15)
    assert decoder.decompress(compressor.compress(frames[0])) == frames[0]
    assert decoder.decompress(compressor.finish(frames[1])) == frames[1]
    assert decoder.eof and decoder.unused_data == b""
