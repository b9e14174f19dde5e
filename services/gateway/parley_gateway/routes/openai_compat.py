"""POST /v1/chat/completions, OpenAI-compatible, so any OpenAI SDK works against Parley.

Stateless: the whole prompt comes with the request and nothing is stored in history. The
answer travels the same path as any turn (orchestrator, budgets, worker, replay log); this
module only translates Parley's frames into OpenAI's chunk and completion objects.

As with OpenAI's own API, a stream that its client closes (or that ends for any other reason)
before the answer's end cancels the answer, as POST /v1/responses/{id}/cancel would: nothing
resumes it here, so generating (and billing) the rest would be for no one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from parley.v1 import chat_pb2
from parley_common.errors import InvalidRequest, PayloadTooLarge, Unavailable

from ..deps import RATE_LIMITED, CurrentUser, RegistryDep, ResponsesDep, SettingsDep, TurnsDep
from ..schemas import Text
from ..sse import json_data
from ..sse_response import StreamResponse
from ..turns.feed import Heartbeat, Notice
from ..turns.responses import Responses
from ..turns.stream import TurnStream

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["openai-compatible"], dependencies=RATE_LIMITED)

MAX_MESSAGES = 500


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: Text


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    # Other OpenAI parameters (top_p, user, …) are accepted and ignored, as OpenAI-compatible servers do.
    model_config = ConfigDict(extra="ignore")
    model: Text = Field(max_length=64)
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=200_000)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=200_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    n: int = Field(default=1, ge=1, le=1)


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    turns: TurnsDep,
    responses: ResponsesDep,
    registry: RegistryDep,
    settings: SettingsDep,
    user: CurrentUser,
    body: ChatCompletionRequest,
) -> StreamingResponse | JSONResponse:
    if body.model not in registry.models:
        raise InvalidRequest(f"unknown model {body.model!r}; GET /v1/models lists them", code="model_not_found")
    messages = [
        chat_pb2.PromptMessage(role="system" if m.role == "developer" else m.role, content=m.text())
        for m in body.messages
    ]
    if sum(len(m.content) for m in messages) > settings.max_content_chars * 10:
        raise PayloadTooLarge("the messages are too long", code="content_too_long")
    stream = await turns.start_stateless(
        user,
        messages,
        model=body.model,
        max_output_tokens=body.max_completion_tokens or body.max_tokens or 0,
        temperature=body.temperature,
    )
    created = int(time.time())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        progress = _Progress()

        async def cancel_unless_ended() -> None:
            if not progress.ended:
                # The client closed the stream (or it ended early): nobody gets the rest.
                await _cancel(responses, user, stream.response_id)

        return StreamResponse(
            stream, _chunks(stream, body.model, created, include_usage, progress), on_close=cancel_unless_ended
        )
    async with stream.held():
        return JSONResponse(await _completion(stream, body.model, created))


def _usage(u: chat_pb2.Usage) -> dict[str, int]:
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
    }


def _finish_reason(reason: str) -> str:
    """OpenAI's own finish reasons: a refused or filtered answer is `content_filter` there too;
    anything else Parley knows (stop, cancelled, other) ends as `stop`."""
    return reason if reason in ("length", "content_filter") else "stop"


class _Progress:
    # Whether the answer came to its end (its done or error frame) on the stream.
    ended = False


async def _cancel(responses: Responses, user: str, response_id: str) -> None:
    try:
        await responses.cancel(user, response_id)
    except Exception as exc:
        log.warning("could not cancel an abandoned answer", extra={"response_id": response_id, "error": str(exc)})


async def _chunks(
    stream: TurnStream, model: str, created: int, include_usage: bool, progress: _Progress
) -> AsyncIterator[bytes]:
    chunk_id = "chatcmpl-" + stream.response_id.removeprefix("r_")

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body: dict[str, Any] = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": choices,
            **extra,
        }
        if include_usage and "usage" not in extra:
            body["usage"] = None
        return f"data: {json_data(body)}\n\n".encode()

    # A delta's chunk, the hot path, is the same bytes around its text: encoded once (the same
    # JSON as chunk() makes).
    delta_head, delta_tail = delta_chunk_parts(chunk_id, created, model, include_usage)
    usage = chat_pb2.Usage()
    try:
        async for item in stream.events:
            if isinstance(item, Heartbeat):
                yield b": keep-alive\n\n"
                continue
            if isinstance(item, Notice):
                yield _error_chunk(item.code, item.message)
                return
            kind = item.WhichOneof("kind")
            progress.ended = kind in ("done", "error")
            if kind == "meta":
                yield chunk(
                    [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": ""},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ]
                )
            elif kind == "delta":
                yield delta_head + json_data(item.delta.text).encode() + delta_tail
            elif kind == "usage":
                usage = item.usage
            elif kind == "done":
                yield chunk(
                    [
                        {
                            "index": 0,
                            "delta": {},
                            "logprobs": None,
                            "finish_reason": _finish_reason(item.done.finish_reason),
                        }
                    ]
                )
                if include_usage:
                    yield chunk([], usage=_usage(usage))
                yield b"data: [DONE]\n\n"
                return
            elif kind == "error":
                yield _error_chunk(item.error.code, item.error.message)
                return
    finally:
        await stream.events.aclose()  # type: ignore[attr-defined]


def delta_chunk_parts(chunk_id: str, created: int, model: str, include_usage: bool) -> tuple[bytes, bytes]:
    """The bytes before and after a delta's JSON-encoded text in its `chat.completion.chunk`."""
    head = (
        f'data: {{"id":{json_data(chunk_id)},"object":"chat.completion.chunk","created":{created},'
        f'"model":{json_data(model)},"system_fingerprint":null,'
        '"choices":[{"index":0,"delta":{"content":'
    )
    tail = '},"logprobs":null,"finish_reason":null}]' + (',"usage":null' if include_usage else "") + "}\n\n"
    return head.encode(), tail.encode()


def _error_chunk(code: str, message: str) -> bytes:
    return f"data: {json_data({'error': {'code': code, 'message': message, 'type': 'server_error'}})}\n\n".encode()


async def _completion(stream: TurnStream, model: str, created: int) -> dict[str, Any]:
    parts: list[str] = []
    usage = chat_pb2.Usage()
    finish = "stop"
    try:
        async for item in stream.events:
            if isinstance(item, Heartbeat):
                continue
            if isinstance(item, Notice):
                raise Unavailable(item.message, code=item.code)
            kind = item.WhichOneof("kind")
            if kind == "delta":
                parts.append(item.delta.text)
            elif kind == "usage":
                usage = item.usage
            elif kind == "done":
                finish = _finish_reason(item.done.finish_reason)
                break
            elif kind == "error":
                raise Unavailable(item.error.message, code=item.error.code)
    finally:
        await stream.events.aclose()  # type: ignore[attr-defined]
    return {
        "id": "chatcmpl-" + stream.response_id.removeprefix("r_"),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(parts), "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": _usage(usage),
    }
