"""Compressed event streams: gzip or deflate, as the client's Accept-Encoding allows.

An answer is a few hundred characters sent as dozens of small frames, each of which repeats
the same field names: compressed as one stream it is a small fraction of its size. Every
write is flushed on its own (`Z_PARTIAL_FLUSH`: the block in progress is completed and
followed by a 10-bit empty block, so the decompressor has every byte written so far — as with
`Z_SYNC_FLUSH`, for 1 or 2 bytes per frame instead of 5), so a frame is decodable as soon as it
arrives and nothing waits for the next one.

The window is small (2 KB, a memory level of 1): a stream holds about 15 KB of compressor
state instead of zlib's default ~270 KB (~100 KB of it touched), and frames still find the
previous ones' field names and the answer's recent words to refer back to (a 4 KB or 32 KB
window makes an answer no smaller; a 1 KB one makes it ~3% larger, a 512-byte one ~7%; a
memory level of 2 costs 1 KB more a stream for the same bytes). A client that sends no
Accept-Encoding (`curl -N`) gets the frames as they are.
"""

from __future__ import annotations

import zlib
from typing import Final

GZIP: Final = "gzip"
DEFLATE: Final = "deflate"
# Preferred first when a client accepts several with the same weight.
SUPPORTED: Final = (GZIP, DEFLATE)
WINDOW_BITS: Final = 11
MEM_LEVEL: Final = 1
LEVEL: Final = 6


def negotiate(accept_encoding: str | None) -> str | None:
    """The content coding to use for `Accept-Encoding` (RFC 9110 §12.5.3), or None for the
    identity: the supported coding with the highest weight above zero (`*` stands for any
    coding not named), gzip first on a tie."""
    if not accept_encoding:
        return None
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        name, _, params = item.partition(";")
        name = name.strip().lower()
        if not name:
            continue
        weight = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(value.strip())
                except ValueError:
                    weight = 0.0
        if weight != weight or weight < 0 or weight > 1:  # NaN or out of range: not acceptable
            weight = 0.0
        weights[name] = max(weight, weights.get(name, 0.0))
    wildcard = weights.get("*", 0.0)
    best: str | None = None
    best_weight = 0.0
    for coding in SUPPORTED:
        weight = weights.get(coding, wildcard)
        if weight > best_weight:
            best, best_weight = coding, weight
    return best


class StreamCompressor:
    """One response's compressor: `compress` returns what to send for one write, decodable at
    once; `finish` the stream's last write and its end (and, for gzip, its checksum)."""

    __slots__ = ("_z",)

    def __init__(self, coding: str) -> None:
        if coding not in SUPPORTED:
            raise ValueError(f"unsupported content coding {coding!r}")
        wbits = WINDOW_BITS + 16 if coding == GZIP else WINDOW_BITS
        self._z = zlib.compressobj(LEVEL, zlib.DEFLATED, wbits, MEM_LEVEL)

    def compress(self, data: bytes) -> bytes:
        z = self._z
        return z.compress(data) + z.flush(zlib.Z_PARTIAL_FLUSH)

    def finish(self, data: bytes = b"") -> bytes:
        """The stream's last write: `data`, then its end."""
        z = self._z
        return (z.compress(data) if data else b"") + z.flush(zlib.Z_FINISH)
