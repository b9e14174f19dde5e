"""An incremental Server-Sent Events parser, as the WHATWG HTML standard defines the format.

Bytes arrive cut at arbitrary places (a CRLF split in two, a UTF-8 character split in two),
so the decoder keeps what it has not yet seen the end of. Lines end with CRLF, LF or CR;
`:` starts a comment; `data:` lines of one event join with LF; a blank line dispatches the
event; an event without `data` is not dispatched; a half-received event at the end of the
stream is discarded (the connection dropped before it was complete).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class ServerSentEvent:
    data: str
    event: str = "message"
    id: str = ""
    retry_ms: int | None = None


class SSEDecoder:
    """Feed it bytes as they come; it returns the events each piece completes."""

    def __init__(self) -> None:
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
        buffer = self._pending + text
        events: list[ServerSentEvent] = []
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
        return events

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
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


async def aiter_sse(chunks: AsyncIterable[bytes]) -> AsyncIterator[ServerSentEvent]:
    """The events in a byte stream (e.g. httpx `Response.aiter_bytes()`), in order."""
    decoder = SSEDecoder()
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event
