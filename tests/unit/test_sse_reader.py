"""The tests' SSE reader (tests/support/sse.py) reads a stream as a browser does: lines end only
at CR, LF or CRLF, so a raw U+2028 or U+2029 inside data is text, not a line end."""

from __future__ import annotations

from collections.abc import AsyncIterator

from tests.support.sse import Frame, frames_of, parse, text_of

RAW_SEPARATORS = 'id: 1\nevent: delta\ndata: {"text":"one\u2028two\u2029three\x85four"}\n\n'.encode()


def test_a_raw_line_separator_inside_data_survives() -> None:
    assert parse(RAW_SEPARATORS) == [Frame("delta", {"text": "one\u2028two\u2029three\x85four"}, 1)]


def test_lines_end_at_cr_lf_and_crlf_alike() -> None:
    wire = b'id: 1\revent: delta\r\ndata: {"text":"a"}\n\r\nid: 2\nevent: done\ndata: {}\r\r'
    assert parse(wire) == [Frame("delta", {"text": "a"}, 1), Frame("done", {}, 2)]


def test_a_frame_without_an_id_keeps_the_last_event_id_and_comments_are_no_frames() -> None:
    wire = b': keep-alive\n\nid: 7\nevent: delta\ndata: {"text":"x"}\n\nevent: error\ndata: {"code":"c"}\n\n'
    assert [(f.event, f.id) for f in parse(wire)] == [("delta", 7), ("error", 7)]


async def test_frames_arrive_whole_however_the_bytes_are_cut() -> None:
    async def one_byte_at_a_time() -> AsyncIterator[bytes]:
        for i in range(len(RAW_SEPARATORS)):
            yield RAW_SEPARATORS[i : i + 1]

    got = [frame async for frame in frames_of(one_byte_at_a_time())]
    assert text_of(got) == "one\u2028two\u2029three\x85four"


def test_the_answer_text_of_both_wire_formats() -> None:
    native = (
        b'event: meta\ndata: {"model": "m"}\n\nid: 2\nevent: delta\ndata: {"text": "Hel"}\n\n'
        b'id: 3\nevent: delta\ndata: {"text": "lo \\u00e9"}\n\nevent: done\ndata: {}\n\n'
    )
    assert text_of(parse(native)) == "Hello é"
    openai = (
        b'data: {"choices": [{"delta": {"role": "assistant", "content": ""}}]}\n\n'
        b'data: {"choices": [{"delta": {"content": "Hi"}}]}\n\n'
        b'data: {"choices": [{"delta": {"content": " there"}}]}\n\n'
        b'data: {"choices": [], "usage": {"completion_tokens": 2}}\n\ndata: [DONE]\n\n'
    )
    assert text_of(parse(openai)) == "Hi there"
