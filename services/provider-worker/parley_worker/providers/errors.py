"""What can go wrong talking to a model provider, as one small hierarchy of typed errors.

Each class carries its kind, `retryable`, `fallback_worthy` and the client's error code
(`client_code`) as class attributes:

    ProviderError                 kind                     from                               retry  fall back
     ├── ProviderRateLimited      rate_limited             429                                yes    after retries
     ├── Overloaded               overloaded               529, 503, an "overloaded" event    yes    at once
     ├── ServerError              server_error             500, 502, 504, other 5xx           yes    after retries
     │    └── BadResponse         bad_response             an event that is not what the API  yes    after retries
     │                                                     documents (502-like)
     ├── ContextLengthExceeded    context_length_exceeded  400 saying the prompt is too long  no     no
     ├── BadRequest               bad_request              other 4xx                          no     no
     ├── AuthenticationFailed     auth                     401, 403                           no     no
     ├── ProviderTimeout          timeout                  connect, first token, idle, total  yes    after retries
     └── ConnectionFailed         connection               refused, dropped mid-stream        yes    after retries

`retryable`: the same request may succeed later (after `retry_after_s` when the provider
said how long). `reached_provider`: False only when the request never left (the connection
was refused or never opened), so the provider did not count it against its rate limits.
`fallback_worthy`: the provider itself is in trouble, so another model in
the fallback chain is a better bet than failing the turn. Retries and fallbacks happen
only before the first token reached the client (resilience.RetryPolicy); an overloaded
provider is left alone at once, the others are retried first.

A rate limit is ours, not the provider's, so it is not `fallback_worthy`: it is retried,
honouring the wait the provider asked for. But one that outlasts its retries (or asks for a
wait longer than RetryPolicy.max_retry_after_s) does fall back (RetryPolicy.falls_back):
the next model of the chain has a limit of its own, and answering on it beats failing the
turn. A too-long prompt needs a tighter trim, not a retry.

A BadResponse is the provider answering 200 with something the adapter cannot read (an
unparsable event, a field of the wrong type): a server-side fault like a 502 from a
gateway, so it is a ServerError (`except ServerError` catches it) of a kind of its own,
reported to the client as `provider_bad_response`, and retried like one.

Messages never carry the API key: adapters build them from status codes and the provider's
own error text, and `redact` removes the key should a provider echo it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import ClassVar, Literal

ErrorKind = Literal[
    "rate_limited",
    "overloaded",
    "server_error",
    "bad_response",
    "context_length_exceeded",
    "bad_request",
    "auth",
    "timeout",
    "connection",
]
TimeoutPhase = Literal["connect", "first_token", "idle", "total"]


class ProviderError(Exception):
    """A failure talking to a provider. Each subclass says, as class attributes, what it is
    (`kind`), whether the same request may succeed later (`retryable`), whether another model
    of the fallback chain is a better bet (`fallback_worthy`) and the code the client sees
    (`client_code`)."""

    kind: ClassVar[ErrorKind]
    retryable: ClassVar[bool]
    fallback_worthy: ClassVar[bool]
    client_code: ClassVar[str]

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
        provider: str = "",
        reached_provider: bool = True,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reached_provider = reached_provider
        self.status = status
        self.retry_after_s = retry_after_s
        self.provider = provider

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, kind={self.kind!r}, status={self.status!r}, "
            f"retry_after_s={self.retry_after_s!r}, provider={self.provider!r})"
        )


class ProviderRateLimited(ProviderError):
    kind = "rate_limited"
    retryable = True
    fallback_worthy = False
    client_code = "provider_rate_limited"

    def __init__(
        self, message: str, *, status: int | None = 429, retry_after_s: float | None = None, provider: str = ""
    ) -> None:
        super().__init__(message, status=status, retry_after_s=retry_after_s, provider=provider)


class Overloaded(ProviderError):
    kind = "overloaded"
    retryable = True
    fallback_worthy = True
    client_code = "provider_overloaded"

    def __init__(
        self, message: str, *, status: int | None = 529, retry_after_s: float | None = None, provider: str = ""
    ) -> None:
        super().__init__(message, status=status, retry_after_s=retry_after_s, provider=provider)


class ServerError(ProviderError):
    kind: ClassVar[ErrorKind] = "server_error"
    retryable = True
    fallback_worthy = True
    client_code: ClassVar[str] = "provider_error"

    def __init__(
        self, message: str, *, status: int | None = 500, retry_after_s: float | None = None, provider: str = ""
    ) -> None:
        super().__init__(message, status=status, retry_after_s=retry_after_s, provider=provider)


class BadResponse(ServerError):
    """A 200 answer whose events break the provider's documented format."""

    kind = "bad_response"
    client_code = "provider_bad_response"

    def __init__(self, message: str, *, status: int | None = None, provider: str = "") -> None:
        ProviderError.__init__(self, message, status=status, provider=provider)


class ContextLengthExceeded(ProviderError):
    kind = "context_length_exceeded"
    retryable = False
    fallback_worthy = False
    client_code = "context_length_exceeded"

    def __init__(self, message: str, *, status: int | None = 400, provider: str = "") -> None:
        super().__init__(message, status=status, provider=provider)


class BadRequest(ProviderError):
    kind = "bad_request"
    retryable = False
    fallback_worthy = False
    client_code = "provider_bad_request"

    def __init__(self, message: str, *, status: int | None = 400, provider: str = "") -> None:
        super().__init__(message, status=status, provider=provider)


class AuthenticationFailed(ProviderError):
    kind = "auth"
    retryable = False
    fallback_worthy = False
    client_code = "provider_auth_failed"

    def __init__(self, message: str, *, status: int | None = 401, provider: str = "") -> None:
        super().__init__(message, status=status, provider=provider)


class ProviderTimeout(ProviderError):
    kind = "timeout"
    retryable = True
    fallback_worthy = True
    client_code = "provider_timeout"

    def __init__(self, message: str, *, phase: TimeoutPhase, status: int | None = None, provider: str = "") -> None:
        # A connect timeout: the request was never sent.
        super().__init__(message, status=status, provider=provider, reached_provider=phase != "connect")
        self.phase: TimeoutPhase = phase


class ConnectionFailed(ProviderError):
    kind = "connection"
    retryable = True
    fallback_worthy = True
    client_code = "provider_unavailable"

    def __init__(self, message: str, *, provider: str = "", reached_provider: bool = True) -> None:
        super().__init__(message, provider=provider, reached_provider=reached_provider)


@dataclass(frozen=True)
class ErrorDetail:
    """What an adapter read from a provider's error body."""

    message: str
    # Set when the body says more than the status does: a 400 that is a too-long prompt,
    # Gemini's 400 that is a bad API key.
    kind: ErrorKind | None = None
    retry_after_s: float | None = None


def kind_for_status(status: int, *, context_length_exceeded: bool = False) -> ErrorKind:
    if status == 429:
        return "rate_limited"
    if status in (503, 529):
        return "overloaded"
    if status in (401, 403):
        return "auth"
    if status == 408:
        # Request Timeout: the server gave up waiting, the request itself was fine.
        return "timeout"
    if status >= 500:
        return "server_error"
    if status == 400 and context_length_exceeded:
        return "context_length_exceeded"
    return "bad_request"


def error_for(
    kind: ErrorKind,
    message: str,
    *,
    status: int | None = None,
    retry_after_s: float | None = None,
    provider: str = "",
) -> ProviderError:
    """The typed error of this kind (so `except Overloaded` works wherever it was found)."""
    if kind == "rate_limited":
        return ProviderRateLimited(message, status=status, retry_after_s=retry_after_s, provider=provider)
    if kind == "overloaded":
        return Overloaded(message, status=status, retry_after_s=retry_after_s, provider=provider)
    if kind == "server_error":
        return ServerError(message, status=status, retry_after_s=retry_after_s, provider=provider)
    if kind == "bad_response":
        return BadResponse(message, status=status, provider=provider)
    if kind == "context_length_exceeded":
        return ContextLengthExceeded(message, status=status, provider=provider)
    if kind == "auth":
        return AuthenticationFailed(message, status=status, provider=provider)
    if kind == "timeout":
        return ProviderTimeout(message, phase="total", status=status, provider=provider)
    if kind == "connection":
        return ConnectionFailed(message, provider=provider)
    return BadRequest(message, status=status, provider=provider)


def error_from_status(
    status: int,
    detail: ErrorDetail,
    *,
    headers: Mapping[str, str],
    provider: str,
    now: datetime | None = None,
) -> ProviderError:
    """The error an HTTP error answer stands for; the wait comes from headers, else the body."""
    kind = detail.kind or kind_for_status(status)
    retry_after = parse_retry_after(headers, now=now)
    if retry_after is None:
        retry_after = detail.retry_after_s
    return error_for(
        kind,
        f"{provider}: HTTP {status}: {detail.message}",
        status=status,
        retry_after_s=retry_after,
        provider=provider,
    )


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float | None:
    """A Go-style duration ("6m0s", "1.5s", "20ms", "22s") in seconds; None if it is not one."""
    text = text.strip()
    if not text:
        return None
    total, pos = 0.0, 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    return total if pos == len(text) else None


def _seconds(value: str) -> float | None:
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _until(moment: datetime, now: datetime) -> float:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - now).total_seconds())


def parse_retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """How long the provider asked us to wait, in seconds, or None when it did not say.

    In order: `retry-after-ms` (OpenAI), `retry-after` (seconds or an HTTP date, RFC 9110;
    Anthropic sends it on 429 and 529), then the reset time of whichever rate limit is used
    up: Anthropic's `anthropic-ratelimit-*-reset` (RFC 3339) or OpenAI's
    `x-ratelimit-reset-*` (a duration such as "6m0s"), read only when the matching
    `*-remaining` header is 0 so a limit that was not hit does not stretch the wait.
    """
    now = now or datetime.now(UTC)
    lowered = {key.lower(): value for key, value in headers.items()}
    if (ms := lowered.get("retry-after-ms")) is not None and (seconds := _seconds(ms)) is not None:
        return seconds / 1000
    if (value := lowered.get("retry-after")) is not None:
        if (seconds := _seconds(value)) is not None:
            return seconds
        try:
            return _until(parsedate_to_datetime(value), now)
        except (TypeError, ValueError, IndexError):
            pass
    waits: list[float] = []
    for key, value in lowered.items():
        if value.strip() != "0":
            continue
        if key.startswith("anthropic-ratelimit-") and key.endswith("-remaining"):
            reset = lowered.get(key.removesuffix("-remaining") + "-reset", "")
            try:
                waits.append(_until(datetime.fromisoformat(reset.replace("Z", "+00:00")), now))
            except ValueError:
                continue
        elif key.startswith("x-ratelimit-remaining-"):
            duration = parse_duration(lowered.get(key.replace("-remaining-", "-reset-"), ""))
            if duration is not None:
                waits.append(duration)
    return max(waits) if waits else None


def redact(text: str, secret: str | None) -> str:
    """`text` with every occurrence of `secret` replaced, and cut to a readable length."""
    if secret:
        text = text.replace(secret, "[redacted]")
    text = " ".join(text.split())
    return text if len(text) <= 500 else text[:497] + "..."
