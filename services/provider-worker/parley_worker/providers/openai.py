"""OpenAI Chat Completions, streamed, for OpenAI and any OpenAI-compatible server (Ollama,
vLLM, llama.cpp's server): `POST {base_url}/chat/completions` with `stream: true`.

The wire format (platform.openai.com API reference, "chat.completion.chunk"): each SSE
`data:` is a chunk whose `choices[0].delta.content` carries text and whose last choice
carries `finish_reason`; with `stream_options.include_usage` one more chunk with empty
`choices` carries `usage` before `data: [DONE]`. Compatible servers may not send usage:
then the usage reported is 0/0 and a warning says so. Errors mid-stream arrive as a chunk
`{"error": {...}}`. A refusal (a structured output the model declines to give) streams its
text in `delta.refusal` with `content` null, and still ends "stop" (openai-python's recorded
stream, test_parse_pydantic_model_refusal): it is shown as the answer and ends
"content_filter". A finish_reason other than stop, length and content_filter ("tool_calls",
a compatible server's "abort"...) ends "other", not as a clean stop.

The request: the output limit goes in the field the model's registry entry names
(`max_tokens_field`: `max_tokens` for vLLM, Ollama and llama.cpp, `max_completion_tokens`
for OpenAI's own API, whose reasoning models refuse `max_tokens`); a temperature only when
the user or the registry set one, never to a model that refuses it (`accepts_temperature`).
A job that continues a partial answer (`continue_from`, only for a server whose registry entry
has `continue_final_message: true`) ends the messages with it as an assistant message and sets
vLLM's `continue_final_message: true` with `add_generation_prompt: false`; OpenAI's own API has
no such option (it would answer anew), so its models are not continued.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from parley.v1 import chat_pb2
from parley_common.models import ModelConfig

from . import Chunk, Finish, TextChunk, UsageReport, temperature_for
from .errors import ConnectionFailed, ErrorDetail, ProviderError, error_for, kind_for_status
from .fields import body_json, event_json, field_count, field_list, field_object, field_text
from .http import HttpProvider, drain, inline_image
from .sse import ServerSentEvent

log = logging.getLogger(__name__)

_FINISH = {"stop": "stop", "length": "length", "content_filter": "content_filter"}
# OpenAI says `code: context_length_exceeded`; compatible servers word it their own way
# (vLLM: "maximum context length is N tokens", llama.cpp: "exceeds the available context size").
_CONTEXT_CODES = {"context_length_exceeded", "exceed_context_size_error"}
_CONTEXT_TEXT = re.compile(r"context length|context size|context window", re.IGNORECASE)


def _message(message: chat_pb2.PromptMessage, provider: str) -> dict[str, Any]:
    # Images go only with the user's turns: that is where the API accepts image parts.
    if not message.images or message.role != "user":
        return {"role": message.role, "content": message.content}
    parts: list[dict[str, Any]] = []
    if message.content:
        parts.append({"type": "text", "text": message.content})
    for image in message.images:
        if image.url:
            url = image.url
        else:
            mime_type, data = inline_image(image, provider=provider)
            url = f"data:{mime_type};base64,{data}"
        image_url: dict[str, Any] = {"url": url}
        if image.detail:
            image_url["detail"] = image.detail
        parts.append({"type": "image_url", "image_url": image_url})
    return {"role": message.role, "content": parts}


def request_body(
    job: chat_pb2.ProviderJob, *, spec: ModelConfig | None = None, provider: str = "openai"
) -> dict[str, Any]:
    """The Chat Completions request for a job; `spec` is the model's registry entry (the
    output limit's field, its default temperature, whether it takes one)."""
    body: dict[str, Any] = {
        "model": job.upstream_model,
        "messages": [_message(m, provider) for m in job.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if job.continue_from:
        # Continuing a partial answer (only sent to servers whose registry entry says they can):
        # vLLM's chat extension formats the final assistant message open-ended and the model
        # goes on from it; it cannot be combined with the generation prompt (on by default).
        body["messages"].append({"role": "assistant", "content": job.continue_from})
        body["continue_final_message"] = True
        body["add_generation_prompt"] = False
    if job.max_output_tokens:
        body[spec.max_tokens_field if spec is not None else "max_tokens"] = job.max_output_tokens
    temperature = temperature_for(job, spec)
    if temperature is not None:
        body["temperature"] = temperature
    return body


def read_error(status: int, body: bytes) -> ErrorDetail:
    """`{"error": {"message", "type", "param", "code"}}`, or what a compatible server sends instead."""
    payload = body_json(body)
    error = payload.get("error") if isinstance(payload, dict) else None
    code = kind = ""
    if isinstance(error, dict):
        message = str(error.get("message") or "")
        code, kind = str(error.get("code") or ""), str(error.get("type") or "")
    elif isinstance(error, str):
        message = error
    elif isinstance(payload, dict) and isinstance(payload.get("message"), str):
        message = payload["message"]
    else:
        message = body.decode("utf-8", errors="replace")
    context = code in _CONTEXT_CODES or kind in _CONTEXT_CODES or bool(_CONTEXT_TEXT.search(message))
    label = code or kind
    return ErrorDetail(
        message=f"{label}: {message}" if label else message,
        kind="context_length_exceeded" if status == 400 and context else None,
    )


def _stream_error(error: Any, provider: str) -> ProviderError:
    if not isinstance(error, dict):
        return error_for("server_error", f"{provider}: error mid-stream: {error}", provider=provider)
    message = str(error.get("message") or "")
    code, kind = str(error.get("code") or ""), str(error.get("type") or "")
    if "rate_limit" in code or kind in ("requests", "tokens"):
        status = 429
    elif "overloaded" in message.lower():
        status = 503
    else:
        status = 500
    return error_for(
        kind_for_status(status), f"{provider}: error mid-stream: {code or kind}: {message}", provider=provider
    )


class OpenAIProvider(HttpProvider):
    """Streams a job from an OpenAI-compatible Chat Completions endpoint."""

    # Whether the missing usage was logged (once per provider: compatible servers omit it on every answer).
    _warned_no_usage = False

    def _request(
        self, job: chat_pb2.ProviderJob, spec: ModelConfig | None
    ) -> tuple[str, dict[str, str], dict[str, Any]]:
        # A job for a model not in the registry gets `max_tokens` and only the user's temperature.
        headers = {}
        if self.api_key is not None:
            headers["Authorization"] = f"Bearer {self.api_key.get_secret_value()}"
        return f"{self.base_url}/chat/completions", headers, request_body(job, spec=spec, provider=self.name)

    def _read_error(self, status: int, body: bytes) -> ErrorDetail:
        return read_error(status, body)

    async def _decode(
        self, events: AsyncIterator[ServerSentEvent], job: chat_pb2.ProviderJob
    ) -> AsyncGenerator[Chunk, None]:
        finish: str | None = None
        usage: UsageReport | None = None
        done = refused = False
        name = self.name
        async for event in events:
            if event.data.strip() == "[DONE]":
                done = True
                await drain(events)
                break
            payload = event_json(event, provider=name)
            if payload.get("error") is not None:
                raise _stream_error(payload["error"], name)
            # Compatible servers send `"usage": null` on every chunk but the last.
            if payload.get("usage") is not None:
                counts = field_object(payload["usage"], "usage", provider=name)
                usage = UsageReport(
                    input_tokens=field_count(counts.get("prompt_tokens"), "usage.prompt_tokens", provider=name),
                    output_tokens=field_count(
                        counts.get("completion_tokens"), "usage.completion_tokens", provider=name
                    ),
                )
            for item in field_list(payload.get("choices"), "choices", provider=name):
                choice = field_object(item, "choices[]", provider=name)
                if choice.get("index", 0) != 0:
                    continue
                delta = field_object(choice.get("delta"), "choices[].delta", provider=name)
                text = field_text(delta.get("content"), "choices[].delta.content", provider=name)
                if text:
                    yield TextChunk(text)
                refusal = field_text(delta.get("refusal"), "choices[].delta.refusal", provider=name)
                if refusal:
                    # The model's own words declining: the user reads them as the answer.
                    refused = True
                    yield TextChunk(refusal)
                reason = field_text(choice.get("finish_reason"), "choices[].finish_reason", provider=name)
                if reason:
                    finish = reason
        if finish is None and not done:
            raise ConnectionFailed(f"{name}: the stream ended before the answer was finished", provider=name)
        if usage is None:
            if not self._warned_no_usage:
                self._warned_no_usage = True
                log.warning(
                    "provider sent no token usage; reporting 0 input and 0 output tokens",
                    extra={"provider": name, "upstream_model": job.upstream_model},
                )
            usage = UsageReport(input_tokens=0, output_tokens=0)
        yield usage
        if refused:
            yield Finish("content_filter")
        elif finish in _FINISH or finish is None:
            yield Finish(_FINISH.get(finish or "stop", "stop"))
        else:
            log.warning(
                "the answer stopped for a reason other than its end", extra={"provider": name, "reason": finish}
            )
            yield Finish("other")
