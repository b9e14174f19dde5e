"""Compressed event streams: which coding a client gets, and that every frame is decodable on
its own the moment it is written, whatever it holds."""

from __future__ import annotations

import json
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.v1 import chat_pb2
from parley_gateway.compression import StreamCompressor, negotiate
from parley_gateway.routes.openai_compat import delta_chunk_parts
from parley_gateway.sse import encode_event, json_data


@pytest.mark.parametrize(
    ("accept", "coding"),
    [
        (None, None),
        ("", None),
        ("identity", None),
        ("br, zstd", None),
        ("gzip", "gzip"),
        ("GZip", "gzip"),
        ("deflate", "deflate"),
        ("gzip, deflate, br, zstd", "gzip"),
        ("deflate, gzip", "gzip"),
        ("gzip;q=0.5, deflate;q=0.8", "deflate"),
        ("gzip;q=0, deflate", "deflate"),
        ("gzip;q=0, deflate;q=0", None),
        ("*", "gzip"),
        ("*;q=0", None),
        ("*;q=0.2, gzip;q=0", "deflate"),
        ("gzip;q=nonsense", None),
        ("gzip;q=2", None),
        (" gzip ; q=0.3 ", "gzip"),
    ],
)
def test_the_coding_follows_accept_encoding(accept: str | None, coding: str | None) -> None:
    assert negotiate(accept) == coding


texts = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=300)


@settings(max_examples=100, deadline=None)
@given(pieces=st.lists(texts, min_size=1, max_size=30), coding=st.sampled_from(["gzip", "deflate"]))
def test_every_compressed_frame_decodes_whole_as_soon_as_it_is_written(pieces: list[str], coding: str) -> None:
    compressor = StreamCompressor(coding)
    decoder = zlib.decompressobj(31 if coding == "gzip" else 15)
    for seq, text in enumerate(pieces, start=1):
        frame = encode_event(chat_pb2.StreamEvent(response_id="r", seq=seq, delta=chat_pb2.StreamDelta(text=text)))
        # Nothing more is written before the client must have this frame in full.
        assert decoder.decompress(compressor.compress(frame)) == frame
    assert decoder.decompress(compressor.finish()) == b"" and decoder.eof
    assert decoder.unused_data == b""


def test_a_whole_compressed_stream_is_valid_gzip_and_small() -> None:
    frames = [
        encode_event(chat_pb2.StreamEvent(response_id="r", seq=i, delta=chat_pb2.StreamDelta(text=f"word{i % 7} ")))
        for i in range(1, 60)
    ]
    compressor = StreamCompressor("gzip")
    wire = b"".join(compressor.compress(f) for f in frames) + compressor.finish()
    assert zlib.decompress(wire, 31) == b"".join(frames)
    assert len(wire) * 3 < len(b"".join(frames))


def test_an_unknown_coding_is_refused() -> None:
    with pytest.raises(ValueError):
        StreamCompressor("br")


@settings(max_examples=100)
@given(text=texts, model=st.text(max_size=40), usage=st.booleans())
def test_the_pre_encoded_openai_delta_chunk_is_the_json_of_a_chunk(text: str, model: str, usage: bool) -> None:
    head, tail = delta_chunk_parts("chatcmpl-abc", 1700000000, model, usage)
    line = head + json_data(text).encode() + tail
    assert line.startswith(b"data: ") and line.endswith(b"\n\n") and len(line[:-2].decode().splitlines()) == 1
    expected = {
        "id": "chatcmpl-abc",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}],
    }
    if usage:
        expected["usage"] = None
    assert json.loads(line[6:]) == expected
