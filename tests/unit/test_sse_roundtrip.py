"""Property: whatever text a frame carries, the gateway's SSE encoding decodes back to it exactly,
however the bytes are split on the way (the provider SSE decoder is the independent reader)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from parley.v1 import chat_pb2
from parley_gateway.sse import encode_event, encode_local_error
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
