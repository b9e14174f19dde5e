from __future__ import annotations

from collections.abc import AsyncIterator

from hypothesis import given
from hypothesis import strategies as st

from parley_worker.providers.sse import ServerSentEvent, SSEDecoder, aiter_sse


def parse(*chunks: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return [event for chunk in chunks for event in decoder.feed(chunk)]


# CRLF, LF and CR line ends, a comment, a named event, multi-line data, ids, a retry, a
# field without a colon, an event with no data, and multi-byte UTF-8 (é is 2 bytes, 🦜 is 4).
MIXED = (
    b": keep-alive comment\r\n"
    b"event: message_start\r\n"
    b'data: {"type": "message_start"}\r\n'
    b"\r\n"
    b"id: 7\n"
    b"data: first line\n"
    b"data:second line without a space\n"
    b"data:  two spaces keep one\n"
    b"\n"
    b"event: only-a-name\r"
    b"\r"
    b"retry: 1500\r"
    b"data\r"
    b"data: caf\xc3\xa9 \xf0\x9f\xa6\x9c\r\n"
    b"\r\n"
    b"data: incomplete at the end"
)
MIXED_EVENTS = [
    ServerSentEvent(data='{"type": "message_start"}', event="message_start"),
    ServerSentEvent(data="first line\nsecond line without a space\n two spaces keep one", id="7"),
    ServerSentEvent(data="\ncafé 🦜", id="7", retry_ms=1500),
]


def test_the_whole_stream_at_once() -> None:
    assert parse(MIXED) == MIXED_EVENTS


def test_every_single_chunk_boundary() -> None:
    for cut in range(len(MIXED) + 1):
        assert parse(MIXED[:cut], MIXED[cut:]) == MIXED_EVENTS, f"cut at byte {cut}"


def test_every_pair_of_chunk_boundaries() -> None:
    for first in range(len(MIXED) + 1):
        for second in range(first, len(MIXED) + 1):
            chunks = (MIXED[:first], MIXED[first:second], MIXED[second:])
            assert parse(*chunks) == MIXED_EVENTS, f"cuts at bytes {first} and {second}"


def test_one_byte_at_a_time() -> None:
    assert parse(*(MIXED[i : i + 1] for i in range(len(MIXED)))) == MIXED_EVENTS


def test_crlf_split_between_chunks_is_one_line_end_not_two() -> None:
    # Were the LF taken as a second line end, the blank line would dispatch "a" alone.
    assert parse(b"data: a\r", b"\ndata: b\r\n\r\n") == [ServerSentEvent(data="a\nb")]


def test_a_lone_cr_followed_later_by_text_is_a_line_end() -> None:
    assert parse(b"data: a\r", b"data: b\r", b"\r") == [ServerSentEvent(data="a\nb")]


def test_a_leading_byte_order_mark_is_ignored_once() -> None:
    assert parse(b"\xef\xbb", b"\xbfdata: x\n\n") == [ServerSentEvent(data="x")]


def test_events_without_data_and_unknown_fields_are_not_dispatched() -> None:
    assert parse(b"event: ping\n\nfoo: bar\n\n: comment\n\n") == []


def test_the_id_carries_over_and_a_null_in_it_is_ignored() -> None:
    events = parse(b"id: 1\ndata: a\n\ndata: b\n\nid: x\x00y\ndata: c\n\n")
    assert [e.id for e in events] == ["1", "1", "1"]


def test_an_invalid_retry_is_ignored() -> None:
    assert parse(b"retry: soon\ndata: a\n\n") == [ServerSentEvent(data="a")]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert parse(b"data: \xff\n\n") == [ServerSentEvent(data="\ufffd")]


async def test_aiter_sse_reads_an_async_byte_stream() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(MIXED), 5):
            yield MIXED[i : i + 5]

    assert [event async for event in aiter_sse(chunks())] == MIXED_EVENTS


def encode(events: list[tuple[str, list[str]]], line_end: str) -> bytes:
    out = []
    for name, lines in events:
        if name:
            out.append(f"event: {name}{line_end}")
        out.extend(f"data: {line}{line_end}" for line in lines)
        out.append(line_end)
    return "".join(out).encode()


_text = st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=12)
_events = st.lists(
    st.tuples(st.sampled_from(["", "delta", "done"]), st.lists(_text, min_size=1, max_size=3)), max_size=6
)


@given(events=_events, line_end=st.sampled_from(["\n", "\r", "\r\n"]), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_any_events_cut_anywhere_come_back_whole(
    events: list[tuple[str, list[str]]], line_end: str, cuts: list[int]
) -> None:
    stream = encode(events, line_end)
    points = sorted({min(cut, len(stream)) for cut in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    expected = [ServerSentEvent(data="\n".join(lines), event=name or "message") for name, lines in events]
    assert parse(*chunks) == expected


# Gemini ends a stream it cannot finish with the error object after the events, pretty-printed
# and outside any `data:` line (recorded in vercel/ai#5217; google-genai's _api_client buffers
# such lines because "when API returns an error message, it comes line by line").
GEMINI_TAIL = (
    b'data: {"candidates": [{"content": {"parts": [{"text": "Okay"}],"role": "model"}}]}\r\n\r\n'
    b'data: {"candidates": [{"content": {"parts": [{"text": ""}],"role": "model"},"finishReason": "STOP"}]}\r\n\r\n'
    b'{\n  "error": {\n    "code": 503,\n    "message": "The model is overloaded. Please try again later.",\n'
    b'    "status": "UNAVAILABLE"\n  }\n}\n'
)
GEMINI_TAIL_ERROR = (
    '{\n  "error": {\n    "code": 503,\n    "message": "The model is overloaded. Please try again later.",\n'
    '    "status": "UNAVAILABLE"\n  }\n}'
)


def parse_keeping_stray(*chunks: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder(keep_stray=True)
    return [event for chunk in chunks for event in decoder.feed(chunk)] + decoder.close()


def test_text_outside_the_events_is_one_stray_event_when_asked_for() -> None:
    events = parse_keeping_stray(GEMINI_TAIL)
    assert [e.stray for e in events] == [False, False, True]
    assert events[2].data == GEMINI_TAIL_ERROR
    assert parse(GEMINI_TAIL) == events[:2], "by default it is ignored, as the SSE standard says"


def test_stray_json_cut_anywhere_comes_back_whole() -> None:
    for cut in range(len(GEMINI_TAIL) + 1):
        events = parse_keeping_stray(GEMINI_TAIL[:cut], GEMINI_TAIL[cut:])
        assert [e.data for e in events if e.stray] == [GEMINI_TAIL_ERROR], f"cut at byte {cut}"


def test_stray_text_without_a_final_line_end_is_kept_at_the_end_of_the_stream() -> None:
    # The error object is complete (and dispatched) as soon as its closing brace arrives, line
    # end or not; a fragment that never completes is handed over when the stream ends.
    tail = GEMINI_TAIL.rstrip(b"\n")
    decoder = SSEDecoder(keep_stray=True)
    assert [e.data for e in decoder.feed(tail) if e.stray] == [GEMINI_TAIL_ERROR], "not waiting for the end"
    assert decoder.close() == []
    assert [e.data for e in parse_keeping_stray(b'data: {}\n\n{"error": {"co')] == ["{}", '{"error": {"co']
    one_line = b'data: {}\r\n\r\n{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}'
    assert [e.data for e in parse_keeping_stray(one_line) if e.stray] == [
        '{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}'
    ]


async def test_aiter_sse_hands_over_stray_text_at_the_end() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(GEMINI_TAIL), 7):
            yield GEMINI_TAIL[i : i + 7].rstrip(b"\n") if i + 7 >= len(GEMINI_TAIL) else GEMINI_TAIL[i : i + 7]

    events = [event async for event in aiter_sse(chunks(), keep_stray=True)]
    assert [(e.stray, e.data == GEMINI_TAIL_ERROR) for e in events] == [(False, False), (False, False), (True, True)]
