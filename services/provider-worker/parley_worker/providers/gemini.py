"""Google Gemini API, streamed:
`POST {base_url}/v1beta/models/{model}:streamGenerateContent?alt=sse`, key in `x-goog-api-key`.

The wire format (ai.google.dev API reference, `models.streamGenerateContent`): with
`alt=sse` every `data:` is a whole GenerateContentResponse; text is in
`candidates[0].content.parts[].text`, the chunk that ends the answer carries
`candidates[0].finishReason`, and `usageMetadata` (`promptTokenCount`,
`candidatesTokenCount`, `thoughtsTokenCount` for thinking models, billed as output) grows
to its final value on the last chunk. There is no end marker: an answer without a
`finishReason` was cut short. A blocked prompt has no candidates, only
`promptFeedback.blockReason`. `finishReason` is one of the API reference's
`Candidate.FinishReason` values: STOP, MAX_TOKENS, the safety family (SAFETY, RECITATION,
BLOCKLIST, PROHIBITED_CONTENT, SPII, IMAGE_SAFETY...: "content_filter" here), or another
(OTHER, LANGUAGE, MALFORMED_FUNCTION_CALL, ones added later: "other", never a clean stop).

A stream that fails after it started (a 503 when the model sheds load, a 429 quota) is not
an event: Gemini writes the error object (google.rpc.Status, the body of an HTTP error)
after the events, pretty-printed over several lines outside any `data:` line, then closes
the connection (recorded in vercel/ai#5217; google-genai's `_api_client` buffers such lines
"when API returns an error message, it comes line by line"). It may come after a chunk that
already carried a finishReason: the answer was cut short all the same. It is read as the
error its `code` stands for, as if the HTTP answer had had that status (a 503 overloads, so
the worker falls back at once). Any other text outside the events is a BadResponse.

The request: `contents` with roles `user` / `model`, the system prompt in
`systemInstruction`, limits in `generationConfig`. Images are `inlineData` (base64 bytes)
or, for a URL, `fileData.fileUri`, which the "File input methods" guide documents for
public and presigned HTTPS URLs (Gemini fetches them itself; nothing is fetched here).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any
from urllib.parse import quote

from parley.v1 import chat_pb2
from parley_common.models import ModelConfig

from . import Chunk, Finish, TextChunk, UsageReport, alternating_turns, temperature_for
from .errors import (
    BadRequest,
    BadResponse,
    ConnectionFailed,
    ErrorDetail,
    ErrorKind,
    ProviderError,
    error_for,
    kind_for_status,
    parse_duration,
    redact,
)
from .fields import body_json, event_json, field_count, field_list, field_object, field_text
from .http import HttpProvider, inline_image
from .sse import ServerSentEvent

log = logging.getLogger(__name__)

_FINISH = {"STOP": "stop", "MAX_TOKENS": "length"}
# Content flagged and stopped (Candidate.FinishReason): safety, recitation of protected
# text, blocklisted terms, prohibited content, sensitive personal data, unsafe images.
_FILTERED = {
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
}
# 400 INVALID_ARGUMENT "The input token count (3475108) exceeds the maximum number of tokens allowed (1048576)."
_CONTEXT_TEXT = re.compile(r"input token count|exceeds the maximum number of tokens|context window", re.IGNORECASE)


def _parts(message: chat_pb2.PromptMessage, role: str, provider: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    # Images only in the user's turns, before the text (the image-understanding guide's order).
    for image in message.images if role == "user" else ():
        if image.url:
            if not image.mime_type:
                raise BadRequest(
                    f"{provider}: image {image.media_id or '?'} has a URL but no MIME type",
                    status=None,
                    provider=provider,
                )
            parts.append({"fileData": {"mimeType": image.mime_type, "fileUri": image.url}})
        else:
            mime_type, data = inline_image(image, provider=provider)
            parts.append({"inlineData": {"mimeType": mime_type, "data": data}})
    if message.content:
        parts.append({"text": message.content})
    return parts


def request_body(
    job: chat_pb2.ProviderJob, *, spec: ModelConfig | None = None, provider: str = "gemini"
) -> dict[str, Any]:
    """The streamGenerateContent request for a job (the model is in the URL); `spec` is the
    model's registry entry (its default temperature, whether it takes one)."""
    system = "\n\n".join(m.content for m in job.messages if m.role == "system" and m.content)
    messages = list(job.messages)
    if job.continue_from:
        # Continuing a partial answer (only for an entry with `continue_final_message: true`;
        # Google documents no prefill): the contents end with the model's turn to go on from.
        messages.append(chat_pb2.PromptMessage(role="assistant", content=job.continue_from))
    contents = alternating_turns(messages, "model", "parts", lambda m, role: _parts(m, role, provider))
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    config: dict[str, Any] = {}
    if job.max_output_tokens:
        config["maxOutputTokens"] = job.max_output_tokens
    temperature = temperature_for(job, spec)
    if temperature is not None:
        config["temperature"] = temperature
    if config:
        body["generationConfig"] = config
    return body


def _error_object(payload: Any) -> Any:
    # Streaming endpoints have been seen to wrap the error in a one-element array.
    if isinstance(payload, list) and payload:
        payload = payload[0]
    return payload.get("error") if isinstance(payload, dict) else None


def _retry_delay(error: dict[str, Any]) -> float | None:
    # A 429 says how long to wait in google.rpc.RetryInfo: {"retryDelay": "22s"}.
    details = error.get("details")
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            return parse_duration(str(detail.get("retryDelay") or ""))
    return None


def _key_invalid(error: dict[str, Any]) -> bool:
    # A bad key is a 400 INVALID_ARGUMENT whose google.rpc.ErrorInfo says API_KEY_INVALID.
    details = error.get("details")
    return any(
        isinstance(detail, dict) and detail.get("reason") == "API_KEY_INVALID"
        for detail in (details if isinstance(details, list) else ())
    )


def read_error(status: int, body: bytes) -> ErrorDetail:
    """`{"error": {"code", "message", "status", "details"}}` (google.rpc.Status)."""
    error = _error_object(body_json(body))
    if not isinstance(error, dict):
        return ErrorDetail(message=body.decode("utf-8", errors="replace"))
    message = f"{error.get('status') or ''}: {error.get('message') or ''}"
    kind: ErrorKind | None = None
    if _key_invalid(error):
        kind = "auth"
    elif status == 400 and _CONTEXT_TEXT.search(message):
        kind = "context_length_exceeded"
    return ErrorDetail(message=message, kind=kind, retry_after_s=_retry_delay(error))


def _stream_error(error: Any, provider: str, secret: str | None = None) -> ProviderError:
    """The error a google.rpc.Status met mid-stream stands for: the kind of its `code` as an
    HTTP status (the stream itself was a 200), with the provider's own message."""
    if not isinstance(error, dict):
        text = redact(str(error), secret)
        return error_for("server_error", f"{provider}: error mid-stream: {text}", provider=provider)
    code = error.get("code")
    status = code if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599 else 500
    message = redact(f"{error.get('status') or ''}: {error.get('message') or ''}", secret)
    kind = kind_for_status(status, context_length_exceeded=bool(_CONTEXT_TEXT.search(message)))
    if _key_invalid(error):
        kind = "auth"
    return error_for(
        kind,
        f"{provider}: error mid-stream: {status} {message}",
        retry_after_s=_retry_delay(error),
        provider=provider,
    )


def _stray_error(text: str, provider: str, secret: str | None) -> ProviderError:
    """What text written outside the events stands for: the provider's error, when it is one."""
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    error = _error_object(payload)
    if isinstance(error, dict):
        return _stream_error(error, provider, secret)
    shown = redact(text, secret)[:80]
    return BadResponse(f"{provider}: the provider sent text outside its events: {shown!r}", provider=provider)


def _finish_reason(reason: str, provider: str) -> str:
    if reason in _FILTERED:
        return "content_filter"
    if reason in _FINISH:
        return _FINISH[reason]
    # OTHER, LANGUAGE, MALFORMED_FUNCTION_CALL, FINISH_REASON_UNSPECIFIED, or one added later.
    log.warning("the answer stopped for a reason other than its end", extra={"provider": provider, "reason": reason})
    return "other"


class GeminiProvider(HttpProvider):
    """Streams a job from the Gemini API (generativelanguage.googleapis.com)."""

    # A failure after the stream started comes as text outside the events (the module's doc).
    _keep_stray = True

    def url(self, upstream_model: str) -> str:
        return f"{self.base_url}/v1beta/models/{quote(upstream_model, safe='')}:streamGenerateContent?alt=sse"

    def _request(
        self, job: chat_pb2.ProviderJob, spec: ModelConfig | None
    ) -> tuple[str, dict[str, str], dict[str, Any]]:
        headers = {}
        if self.api_key is not None:
            headers["x-goog-api-key"] = self.api_key.get_secret_value()
        return self.url(job.upstream_model), headers, request_body(job, spec=spec, provider=self.name)

    def _read_error(self, status: int, body: bytes) -> ErrorDetail:
        return read_error(status, body)

    async def _decode(
        self, events: AsyncIterator[ServerSentEvent], job: chat_pb2.ProviderJob
    ) -> AsyncGenerator[Chunk, None]:
        name = self.name
        secret = self.api_key.get_secret_value() if self.api_key else None
        finish: str | None = None
        usage = reported = UsageReport(input_tokens=0, output_tokens=0)
        async for event in events:
            if event.stray:
                raise _stray_error(event.data, name, secret)
            payload = event_json(event, provider=name)
            if payload.get("error") is not None:
                raise _stream_error(payload["error"], name, secret)
            if payload.get("usageMetadata") is not None:
                counts = field_object(payload["usageMetadata"], "usageMetadata", provider=name)
                usage = UsageReport(
                    input_tokens=field_count(counts.get("promptTokenCount"), "promptTokenCount", provider=name),
                    # Thinking is billed as output.
                    output_tokens=field_count(counts.get("candidatesTokenCount"), "candidatesTokenCount", provider=name)
                    + field_count(counts.get("thoughtsTokenCount"), "thoughtsTokenCount", provider=name),
                )
            feedback = field_object(payload.get("promptFeedback"), "promptFeedback", provider=name)
            if feedback.get("blockReason"):
                finish = "content_filter"
            candidates = field_list(payload.get("candidates"), "candidates", provider=name)
            candidate = field_object(candidates[0] if candidates else None, "candidates[0]", provider=name)
            content = field_object(candidate.get("content"), "candidates[0].content", provider=name)
            for item in field_list(content.get("parts"), "candidates[0].content.parts", provider=name):
                part = field_object(item, "parts[]", provider=name)
                text = field_text(part.get("text"), "parts[].text", provider=name)
                # Thought summaries are not part of the answer.
                if text and not part.get("thought"):
                    yield TextChunk(text)
            if usage != reported:
                # Reported as it grows: an answer that fails or is cancelled midway still
                # carries the usage known so far (the worker keeps the last report).
                reported = usage
                yield usage
            reason = field_text(candidate.get("finishReason"), "candidates[0].finishReason", provider=name)
            if reason:
                finish = _finish_reason(reason, name)
        # No end marker: the connection closing ends the answer (and a finishReason does not
        # prove it complete, an error may follow it), so the stream is read to its end.
        if finish is None:
            raise ConnectionFailed(f"{name}: the stream ended before the answer was finished", provider=name)
        yield usage
        yield Finish(finish)
