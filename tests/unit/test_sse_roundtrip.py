"""Property: whatever text a frame carries, the gateway's SSE encoding decodes back to it exactly,
however the bytes are split on the way (the provider SSE decoder is the independent reader)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from parley.v1 import chat_pb2
from parley_gateway.sse import encode_event, encode_local_error, json_data
from parley_worker.providers.sse import SSEDecoder

texts = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=200)


@settings(max_examples=300)
@given(pieces=st.lists(texts, min_size=1, max_size=8), cuts=st.lists(st.integers(min_value=1, max_value=50)))
def test_delta_frames_round_trip_through_any_chunking(pieces: list[str], cuts: list[int]) -> None:
    wire = b"".join(
        encode_event(
            chat_pb2.StreamEvent(response_id="r", conversation_id="c", seq=i + 1, delta=chat_pb2.StreamDelta(text=p))
        )
        for i, p in enumerate(pieces)
    ) + encode_local_error("r", "c", "stream_timeout", "late\nline", True)
    decoder = SSEDecoder()
    events = []
    position = 0
    for cut in cuts:
        events += decoder.feed(wire[position : position + cut])
        position += cut
    events += decoder.feed(wire[position:])
    deltas = [e for e in events if e.event == "delta"]
    assert [json.loads(e.data)["text"] for e in deltas] == pieces
    assert [e.id for e in deltas] == [str(i + 1) for i in range(len(pieces))]
    last = events[-1]
    assert last.event == "error" and json.loads(last.data)["message"] == "late\nline"
    # A gateway notice has no id of its own: the client's last event id stays the last real frame.
    assert last.id == str(len(pieces))


# Line ends that SSE does not know but line-splitting readers do (str.splitlines, and with it
# httpx's aiter_lines): raw in a `data:` line they forge frames.
SPLITLINES_BREAKS = "\u2028\u2029\x85\x0b\x0c\x1c\x1d\x1e"
hostile_texts = st.text(
    alphabet=st.one_of(st.characters(blacklist_categories=["Cs"]), st.sampled_from(SPLITLINES_BREAKS + '\r\n:\\"')),
    max_size=200,
)


def read_by_lines(wire: bytes) -> list[tuple[str, str, str | None]]:
    """(event, data, id) of each frame, read as a line-splitting client reads them."""
    out: list[tuple[str, str, str | None]] = []
    event, data, frame_id = "message", [], None
    for line in wire.decode().splitlines():
        if line == "":
            if data:
                out.append((event, "\n".join(data), frame_id))
            event, data, frame_id = "message", [], None
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                frame_id = value
    return out


@settings(max_examples=300)
@given(pieces=st.lists(hostile_texts, min_size=1, max_size=8), notice=hostile_texts)
def test_frames_read_by_a_line_splitting_client_are_the_frames_sent(pieces: list[str], notice: str) -> None:
    wire = b"".join(
        encode_event(
            chat_pb2.StreamEvent(response_id="r", conversation_id="c", seq=i + 1, delta=chat_pb2.StreamDelta(text=p))
        )
        for i, p in enumerate(pieces)
    ) + encode_local_error("r", "c", "stream_timeout", notice, True)
    read = read_by_lines(wire)
    assert [(e, json.loads(d)["text"], i) for e, d, i in read[:-1]] == [
        ("delta", p, str(n + 1)) for n, p in enumerate(pieces)
    ]
    assert read[-1][0] == "error" and json.loads(read[-1][1])["message"] == notice and read[-1][2] is None
    # And the SSE reader a browser has (CR and LF only) reads the same.
    assert [json.loads(e.data)["text"] for e in SSEDecoder().feed(wire) if e.event == "delta"] == pieces


@settings(max_examples=300)
@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | hostile_texts,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_texts, inner, max_size=4),
        max_leaves=12,
    )
)
def test_any_json_goes_into_one_data_line(value: object) -> None:
    """What the OpenAI-compatible stream writes: `data: <json>` on one line, whatever the text."""
    line = f"data: {json_data(value)}"
    assert line.splitlines() == [line] and "\r" not in line and "\n" not in line
    assert json.loads(line.removeprefix("data: ")) == value


def test_the_line_breakers_are_escaped_not_dropped() -> None:
    text = "a\u2028b\u2029c\x85d"
    (delta,) = read_by_lines(
        encode_event(chat_pb2.StreamEvent(response_id="r", seq=1, delta=chat_pb2.StreamDelta(text=text)))
    )
    assert json.loads(delta[1])["text"] == text
    assert "\\u2028" in delta[1] and "\\u2029" in delta[1] and "\\u0085" in delta[1]
