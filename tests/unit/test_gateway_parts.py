from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from parley.v1 import chat_pb2
from parley_common.errors import Unauthenticated
from parley_gateway.auth import ApiKeys
from parley_gateway.sse import encode_event, encode_local_error
from parley_gateway.turns.start import response_id_for


def test_sse_frames_carry_id_type_and_both_ids_but_deltas_only_their_text() -> None:
    event = chat_pb2.StreamEvent(
        response_id="r1", conversation_id="c1", seq=7, delta=chat_pb2.StreamDelta(text="héllo\nworld")
    )
    raw = encode_event(event).decode()
    lines = raw.split("\n")
    assert lines[0] == "id: 7" and lines[1] == "event: delta" and raw.endswith("\n\n")
    # A delta is most of an answer's frames: its ids are in the response's header and URL.
    assert json.loads(lines[2].removeprefix("data: ")) == {"text": "héllo\nworld"}
    done = encode_event(
        chat_pb2.StreamEvent(
            response_id="r1", conversation_id="c1", seq=8, done=chat_pb2.StreamDone(finish_reason="stop")
        )
    ).decode()
    assert done.startswith("id: 8\nevent: done\ndata: ")
    assert json.loads(done.split("\n")[2].removeprefix("data: ")) == {
        "response_id": "r1",
        "conversation_id": "c1",
        "finish_reason": "stop",
    }


def test_local_errors_have_no_id_so_resume_points_stay_valid() -> None:
    raw = encode_local_error("r1", "c1", "stream_timeout", "late", True).decode()
    assert not raw.startswith("id:") and "event: error" in raw


def test_api_keys_map_to_users_and_reject_the_rest() -> None:
    keys = ApiKeys({"alice": SecretStr("a" * 20), "bob": SecretStr("b" * 20)})
    assert keys.user_for("Bearer " + "a" * 20) == "alice"
    assert keys.user_for("bearer " + "b" * 20) == "bob"
    for header in (None, "", "Bearer ", "Basic " + "a" * 20, "Bearer " + "c" * 20):
        with pytest.raises(Unauthenticated):
            keys.user_for(header)


def test_response_ids_are_stable_per_message_and_distinct_across_users() -> None:
    assert response_id_for("u", "c", "m") == response_id_for("u", "c", "m")
    assert response_id_for("u", "c", "m") != response_id_for("v", "c", "m")
    assert response_id_for("u", "c", "m") != response_id_for("u", "c", "n")
