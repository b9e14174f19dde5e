"""Reading what a provider sends as JSON: an event's object, an error body, and one field of
an event at a time.

A field that is absent (or null) reads as empty, which every API documents as "nothing
here"; a field of the wrong type is BadResponse, so a provider that changes its format fails
the turn with a typed, retryable error instead of an AttributeError deep in a decoder.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import BadResponse
from .sse import ServerSentEvent


def event_json(event: ServerSentEvent, *, provider: str) -> dict[str, Any]:
    """The JSON object an event carries; anything else is the provider's fault (BadResponse)."""
    try:
        payload = json.loads(event.data)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise BadResponse(f"{provider}: the provider sent an unreadable event", provider=provider)
    return payload


def _malformed(provider: str, what: str, value: Any) -> BadResponse:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return BadResponse(f"{provider}: the provider sent a malformed event: {what} = {shown}", provider=provider)


def field_object(value: Any, what: str, *, provider: str) -> dict[str, Any]:
    """A JSON object field; {} when absent."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _malformed(provider, what, value)
    return value


def field_list(value: Any, what: str, *, provider: str) -> list[Any]:
    """A JSON array field; [] when absent."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _malformed(provider, what, value)
    return value


def field_text(value: Any, what: str, *, provider: str) -> str:
    """A JSON string field; "" when absent."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _malformed(provider, what, value)
    return value


# No model reads or writes a billion tokens in one turn; the bound also keeps a sum of a
# few counts inside Usage's uint32 fields.
_MAX_TOKENS = 10**9


def field_count(value: Any, what: str, *, provider: str) -> int:
    """A token count: a whole number in 0..10^9 (a float such as 12.0, or a string of
    digits as protobuf's JSON writes 64-bit integers, is accepted); 0 when absent."""
    if value is None:
        return 0
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 10:
        value = int(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_TOKENS:
        return value
    raise _malformed(provider, what, value)


def body_json(body: bytes) -> Any:
    """An error body as JSON, or None when it is not JSON (a proxy's HTML page, say)."""
    try:
        return json.loads(body)
    except ValueError:
        return None
