"""An incremental Server-Sent Events parser, as the WHATWG HTML standard defines the format.

Bytes arrive cut at arbitrary places (a CRLF split in two, a UTF-8 character split in two),
so the decoder keeps what it has not yet seen the end of. Lines end with CRLF, LF or CR;
`:` starts a comment; `data:` lines of one event join with LF; a blank line dispatches the
event; an event without `data` is not dispatched; a half-received event at the end of the
stream is discarded (the connection dropped before it was complete).

A line that is no SSE field is ignored, as the standard says, unless the decoder is asked to
keep such "stray" text (`keep_stray=True`): Gemini ends a stream it cannot finish by writing a
JSON error object, pretty-printed over several lines, after the events and outside any `data:`
line. Consecutive stray lines are then handed over as one event with `stray=True` as soon as
they read as one JSON value (a last line without a line end included), when they grow past
`STRAY_LIMIT` characters, or when the stream ends (`close()`).
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

_LINE_END = re.compile(r"\r\n|\r|\n")
_FIELDS = frozenset({"data", "event", "id", "retry"})
# Stray text is an error message, not a stream: past this, it is handed over as it is.
STRAY_LIMIT = 64 * 1024


@dataclass(frozen=True)
class ServerSentEvent:
    data: str
    event: str = "message"
    id: str = ""
    retry_ms: int | None = None
    # Text outside the SSE framing (see the module docstring): `data` is its lines, joined with LF.
    stray: bool = False


class SSEDecoder:
    """Feed it bytes as they come; it returns the events each piece completes. With
    `keep_stray`, call `close()` at the end of the stream for the stray text left over."""

    def __init__(self, *, keep_stray: bool = False) -> None:
        self._keep_stray = keep_stray
        self._stray: list[str] = []
        self._stray_size = 0
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        # A CR ended the last piece: an LF starting the next one belongs to the same line end.
        self._skip_lf = False
        self._started = False
        self._event = ""
        self._data: list[str] = []
        self._last_id = ""
        self._retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        text = self._text.decode(chunk)
        if not text:
            return []
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = False
        buffer = self._pending + text if self._pending else text
        events: list[ServerSentEvent] = []
        if "\r" not in buffer:
            # LF alone ends lines (nearly every server): split at once, no search per line.
            *lines, self._pending = buffer.split("\n")
            for line in lines:
                event = self._line(line)
                if event is not None:
                    events.append(event)
            return self._after_lines(events)
        pos = 0
        while (match := _LINE_END.search(buffer, pos)) is not None:
            line = buffer[pos : match.start()]
            pos = match.end()
            if match.group() == "\r" and pos == len(buffer):
                self._skip_lf = True
            event = self._line(line)
            if event is not None:
                events.append(event)
        self._pending = buffer[pos:]
        return self._after_lines(events)

    def _after_lines(self, events: list[ServerSentEvent]) -> list[ServerSentEvent]:
        if self._keep_stray and self._pending and not _is_field(self._pending):
            # A JSON object that ends without a line end is complete all the same.
            stray = self._stray_line(self._pending, final=False)
            if stray is not None:
                self._pending = ""
                events.append(stray)
        return events

    def close(self) -> list[ServerSentEvent]:
        """The end of the stream: the stray text not yet handed over (only with `keep_stray`;
        the last line counts even without a line end). A half-received event is discarded."""
        if not self._keep_stray:
            return []
        tail = self._pending + self._text.decode(b"", final=True)
        self._pending = ""
        if tail and not _is_field(tail):
            self._stray_line(tail)
        return [self._flush_stray()] if self._stray else []

    def _stray_line(self, line: str, *, final: bool = True) -> ServerSentEvent | None:
        """Take in one stray line (with `final=False`, only look whether it completes the JSON
        value); the stray event once the lines so far are one JSON value, or too long."""
        lines = [*self._stray, line]
        size = self._stray_size + len(line) + 1
        complete = False
        if line.rstrip().endswith(("}", "]")):
            try:
                json.loads("\n".join(lines))
                complete = True
            except ValueError:
                pass
        if not final and not complete:
            return None
        self._stray, self._stray_size = lines, size
        return self._flush_stray() if complete or size > STRAY_LIMIT else None

    def _flush_stray(self) -> ServerSentEvent:
        text = "\n".join(self._stray)
        self._stray, self._stray_size = [], 0
        return ServerSentEvent(data=text, event="", stray=True)

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        if self._keep_stray and not _is_field(line):
            return self._stray_line(line)
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._last_id = value
        elif field == "retry":
            if value.isascii() and value.isdigit():
                self._retry_ms = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return ServerSentEvent(
            data="\n".join(data), event=event or "message", id=self._last_id, retry_ms=self._retry_ms
        )


def _is_field(line: str) -> bool:
    """A comment or a field of the standard: not stray text."""
    return line.startswith(":") or line.partition(":")[0] in _FIELDS


async def aiter_sse(chunks: AsyncIterable[bytes], *, keep_stray: bool = False) -> AsyncIterator[ServerSentEvent]:
    """The events in a byte stream (e.g. httpx `Response.aiter_bytes()`), in order; with
    `keep_stray`, the text outside the SSE framing too (see the module docstring)."""
    decoder = SSEDecoder(keep_stray=keep_stray)
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event
    for event in decoder.close():
        yield event
