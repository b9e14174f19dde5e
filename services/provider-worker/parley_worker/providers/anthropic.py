"""Anthropic Messages API, streamed: `POST {base_url}/v1/messages` with `stream: true`.

The wire format (docs.anthropic.com, "Streaming Messages"): named SSE events
`message_start` (the message, with `usage.input_tokens`), then per content block
`content_block_start`, `content_block_delta` (`text_delta` carries text) and
`content_block_stop`, then `message_delta` (`stop_reason`, cumulative `usage.output_tokens`)
and `message_stop`. `ping` may come at any time; unknown event types must be ignored.
An `error` event (e.g. `overloaded_error`, which "would normally correspond to an HTTP 529")
can arrive mid-stream. `stop_reason` "refusal" ends "content_filter", "max_tokens" "length";
one not in `_STOP` (added after this was written) ends "other", not as a clean stop.

The request: the system prompt goes in `system`, not in `messages`; turns alternate user /
assistant, so consecutive same-role messages are merged; `max_tokens` is required; the key
goes in `x-api-key` with an `anthropic-version` header. Images are `image` blocks with a
`base64` source (bytes) or a `url` source (a presigned URL). A job that continues a partial
answer (`continue_from`) sends it as the last assistant turn, its trailing whitespace left out
(the API refuses a final assistant turn ending in whitespace: "Prefill Claude's response"), and
drops that whitespace from the start of the continuation, where Claude writes it again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from parley.v1 import chat_pb2
from parley_common.models import ModelConfig

from . import Chunk, Finish, TextChunk, UsageReport, alternating_turns, temperature_for, without_shown_tail
from .errors import ConnectionFailed, ErrorDetail, ProviderError, error_for, kind_for_status
from .fields import body_json, event_json, field_count, field_object, field_text
from .http import HttpProvider, drain, inline_image
from .sse import ServerSentEvent

log = logging.getLogger(__name__)

ANTHROPIC_VERSION = "2023-06-01"
# Used only when a job carries no limit: the API refuses a request without one.
DEFAULT_MAX_TOKENS = 4096

_STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}
# The error `type`s of docs.anthropic.com "Errors", with the HTTP status each stands for.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
# "prompt is too long: 205351 tokens > 200000 maximum", or when max_tokens is what overflows:
# "input length and `max_tokens` exceed context limit: 188240 + 21333 > 200000".
_CONTEXT_TEXT = re.compile(r"prompt is too long|exceed context limit|context window", re.IGNORECASE)


def _blocks(message: chat_pb2.PromptMessage, role: str, provider: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    # Images only in the user's turns (where the API takes them), before the text as the
    # vision guide recommends.
    for image in message.images if role == "user" else ():
        if image.url:
            source: dict[str, Any] = {"type": "url", "url": image.url}
        else:
            mime_type, data = inline_image(image, provider=provider)
            source = {"type": "base64", "media_type": mime_type, "data": data}
        blocks.append({"type": "image", "source": source})
    # The API rejects empty text blocks.
    if message.content.strip():
        blocks.append({"type": "text", "text": message.content})
    return blocks


def request_body(
    job: chat_pb2.ProviderJob, *, spec: ModelConfig | None = None, provider: str = "anthropic"
) -> dict[str, Any]:
    """The Messages API request for a job; `spec` is the model's registry entry (its default
    temperature, whether it takes one)."""
    system = "\n\n".join(m.content for m in job.messages if m.role == "system" and m.content.strip())
    messages = list(job.messages)
    if job.continue_from.rstrip():
        # Continuing: the partial answer is the last assistant turn, which Claude goes on from
        # ("Prefill Claude's response"); the API refuses one that ends in whitespace.
        messages.append(chat_pb2.PromptMessage(role="assistant", content=job.continue_from.rstrip()))
    turns = alternating_turns(messages, "assistant", "content", lambda m, role: _blocks(m, role, provider))
    body: dict[str, Any] = {
        "model": job.upstream_model,
        "max_tokens": job.max_output_tokens or DEFAULT_MAX_TOKENS,
        "messages": turns,
        "stream": True,
    }
    if system:
        body["system"] = system
    # Anthropic's range is 0..1.
    temperature = temperature_for(job, spec)
    if temperature is not None:
        body["temperature"] = min(temperature, 1.0)
    return body


def _status_and_message(error: Any) -> tuple[int, str]:
    if not isinstance(error, dict):
        return 500, str(error)
    kind = str(error.get("type") or "")
    return _ERROR_STATUS.get(kind, 500), f"{kind}: {error.get('message') or ''}"


def read_error(status: int, body: bytes) -> ErrorDetail:
    """`{"type": "error", "error": {"type", "message"}, "request_id"}`."""
    payload = body_json(body)
    if isinstance(payload, dict) and "error" in payload:
        _, message = _status_and_message(payload["error"])
    else:
        message = body.decode("utf-8", errors="replace")
    context = status == 400 and bool(_CONTEXT_TEXT.search(message))
    return ErrorDetail(message=message, kind="context_length_exceeded" if context else None)


def _stream_error(error: Any, provider: str) -> ProviderError:
    status, message = _status_and_message(error)
    kind = kind_for_status(status, context_length_exceeded=bool(_CONTEXT_TEXT.search(message)))
    return error_for(kind, f"{provider}: error mid-stream: {message}", provider=provider)


def _input_tokens(usage: dict[str, Any], provider: str) -> int:
    # Cached prompt tokens are counted apart from `input_tokens`; the prompt is all three.
    return sum(
        field_count(usage.get(key), f"usage.{key}", provider=provider)
        for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )


class AnthropicProvider(HttpProvider):
    """Streams a job from the Anthropic Messages API."""

    def _request(
        self, job: chat_pb2.ProviderJob, spec: ModelConfig | None
    ) -> tuple[str, dict[str, str], dict[str, Any]]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if self.api_key is not None:
            headers["x-api-key"] = self.api_key.get_secret_value()
        return f"{self.base_url}/v1/messages", headers, request_body(job, spec=spec, provider=self.name)

    def _read_error(self, status: int, body: bytes) -> ErrorDetail:
        return read_error(status, body)

    def _decode(self, events: AsyncIterator[ServerSentEvent], job: chat_pb2.ProviderJob) -> AsyncGenerator[Chunk, None]:
        # The whitespace left out of a continued answer's prefill was shown already.
        shown_tail = job.continue_from[len(job.continue_from.rstrip()) :]
        return without_shown_tail(self._answer(events), shown_tail)

    async def _answer(self, events: AsyncIterator[ServerSentEvent]) -> AsyncGenerator[Chunk, None]:
        name = self.name
        input_tokens = output_tokens = 0
        stop_reason: str | None = None
        stopped = False
        async for event in events:
            payload = event_json(event, provider=name)
            kind = payload.get("type") or event.event
            if kind == "content_block_delta":
                delta = field_object(payload.get("delta"), "content_block_delta.delta", provider=name)
                if delta.get("type") == "text_delta":
                    text = field_text(delta.get("text"), "content_block_delta.delta.text", provider=name)
                    if text:
                        yield TextChunk(text)
            elif kind == "message_start":
                message = field_object(payload.get("message"), "message_start.message", provider=name)
                usage = field_object(message.get("usage"), "message_start.message.usage", provider=name)
                input_tokens = _input_tokens(usage, name)
                output_tokens = field_count(usage.get("output_tokens"), "usage.output_tokens", provider=name)
                # Reported at once: an answer cancelled or cut off mid-stream still cost its prompt.
                yield UsageReport(input_tokens=input_tokens, output_tokens=output_tokens)
            elif kind == "message_delta":
                delta = field_object(payload.get("delta"), "message_delta.delta", provider=name)
                stop_reason = field_text(
                    delta.get("stop_reason"), "message_delta.delta.stop_reason", provider=name
                ) or (stop_reason)
                usage = field_object(payload.get("usage"), "message_delta.usage", provider=name)
                # Cumulative counts; input counts appear here too in newer API versions.
                if usage.get("output_tokens") is not None:
                    output_tokens = field_count(usage["output_tokens"], "usage.output_tokens", provider=name)
                if usage.get("input_tokens") is not None:
                    input_tokens = _input_tokens(usage, name)
            elif kind == "message_stop":
                stopped = True
                await drain(events)
                break
            elif kind == "error":
                raise _stream_error(payload.get("error"), name)
        if not stopped:
            raise ConnectionFailed(f"{name}: the stream ended before the answer was finished", provider=name)
        yield UsageReport(input_tokens=input_tokens, output_tokens=output_tokens)
        reason = stop_reason or "end_turn"
        if reason not in _STOP:
            log.warning(
                "the answer stopped for a reason other than its end", extra={"provider": name, "reason": reason}
            )
        yield Finish(_STOP.get(reason, "other"))
