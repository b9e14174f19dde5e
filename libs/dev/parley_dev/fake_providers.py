"""A fake model-provider server speaking the real streaming wire formats of OpenAI, Anthropic
and Gemini, for tests and benchmarks.

    python -m parley_dev.fake_providers --port 8901      # logs one line when ready
    async with FakeProviderServer() as fake: ...         # in-process, on a free port: fake.url

Endpoints (the real paths, so an adapter's base URL is all that changes):

    POST   /v1/chat/completions                                  OpenAI Chat Completions, stream: true
    POST   /v1/messages                                          Anthropic Messages, stream: true
    POST   /v1beta/models/{model}:streamGenerateContent?alt=sse  Gemini
    GET    /_fake/requests    every request seen, oldest first: [{"id", "path", "format", "model",
                              "body" (the parsed JSON), "auth" (was a key header there; never its
                              value), "seen_at" (unix seconds), "client_port" (the same
                              port twice = a reused connection), "status", "directive",
                              "directive_applied", "input_tokens", "output_tokens", "tokens_sent",
                              "completed", "client_closed", "closed_at"}]
    DELETE /_fake/requests    forget every request and every `times` counter

The answer is deterministic: derived from the last user message (see `answer_tokens`), one
SSE event per token, with real usage fields (input tokens: words of every text + 3 per
message + 85 per image; output tokens: tokens sent). A request's `max_tokens` cuts the
answer with the provider's own "length" finish reason. Malformed requests get the
provider's 400 (Anthropic: a missing `max_tokens`, `anthropic-version` or a "system" role;
any format: `stream` not true, since the fake only streams).

What a request gets can be set per request by a directive anywhere in the last user
message's text (it is removed before the answer is derived):

    [[fake {"status": 429, "retry_after": 1, "times": 2, "key": "abc"}]]

    status        int    answer this HTTP status with the provider's own error body
                         (429 rate limit, 529/503 overloaded, 500, 401, 403, 404, 400...)
    context_length_exceeded  bool  answer 400 with the provider's "prompt is too long" body
    retry_after   float  seconds, sent as `retry-after` (Gemini: RetryInfo.retryDelay in the body)
    times, key    int, str  apply the directive only to the first `times` requests carrying
                         this key (default key: the directive's text); later ones are answered
                         as if there were no directive. Without `times` it always applies.
    first_token_delay  float  seconds between the stream's opening events and the first token
    tokens_per_s  float  pace of the tokens (default: as fast as possible)
    tokens        int    answer with exactly this many tokens instead of the usual answer
    echo          bool   answer with the message's own text (the directive removed), verbatim:
                         line breaks and spacing kept, so a test can make a model say anything
    drop_after    int    close the connection abruptly after this many tokens (real server only:
                         httpx's ASGITransport cannot show a half-sent body)
    error_after   int    after this many tokens send the provider's in-stream error event...
    stream_error  str    ...of this kind: "overloaded" (default), "server_error", "rate_limited".
                         Gemini sends it as its servers do: a pretty-printed JSON error object
                         after the events, outside any `data:` line (see GeminiFormat.stream_error)
    error_after_finish  bool  send the answer's closing events (its finish reason) before that
                         error; only Gemini, which has no end marker, sends anything after them
    finish_reason str    end with this finish reason of the provider's own instead of the usual
                         one (OpenAI "content_filter", Anthropic "refusal", Gemini "SAFETY", "OTHER"...)
    refusal       bool   OpenAI format: the answer comes as `delta.refusal`, not `delta.content`,
                         as a structured-output refusal does (finish_reason stays "stop")
    no_usage      bool   OpenAI format: leave out the usage chunk, as some compatible servers do

A request that asks to continue a partial answer gets the rest of the answer it would have
given, from where that partial answer ends (the answer's own start: its remaining tokens; any
other text: the tokens past as many as it has), `max_tokens` counting only the new tokens.
Each format says so its own way: Anthropic a last `assistant` turn (refused with the API's
400 when it ends in whitespace), Gemini a last `model` turn, OpenAI-compatible servers vLLM's
`continue_final_message: true` with `add_generation_prompt: false` and a last `assistant`
message (a last assistant message without them is answered anew, as OpenAI's API does).

A client that hangs up mid-stream is noticed at once (an ASGI `http.disconnect` while
streaming): its request shows `client_closed: true` and the stream stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import uvicorn
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import Receive, Scope, Send

from parley_common.observability.logs import setup_logging

from .infra import free_port

log = logging.getLogger("parley_dev.fake_providers")

_DIRECTIVE = re.compile(r"\[\[fake\s+(\{.*?\})\]\]", re.DOTALL)
_TOKEN = re.compile(r"\s*\S+")
_GEMINI_PATH = re.compile(r"^/v1beta/models/([^/:]+):streamGenerateContent$")
_WORDS = (
    "apple river stone cloud lantern meadow copper violet harbor pine ember quartz willow falcon "
    "thunder orchard marble cedar beacon canyon"
).split()


class Directive(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    status: int | None = Field(default=None, ge=400, le=599)
    context_length_exceeded: bool = False
    retry_after: float | None = Field(default=None, ge=0)
    times: int | None = Field(default=None, ge=0)
    key: str = ""
    first_token_delay: float = Field(default=0.0, ge=0)
    tokens_per_s: float | None = Field(default=None, gt=0)
    tokens: int | None = Field(default=None, ge=0)
    echo: bool = False
    drop_after: int | None = Field(default=None, ge=0)
    error_after: int | None = Field(default=None, ge=0)
    stream_error: str = Field(default="overloaded", pattern="^(overloaded|server_error|rate_limited)$")
    error_after_finish: bool = False
    finish_reason: str | None = Field(default=None, pattern="^[A-Za-z_]{1,40}$")
    refusal: bool = False
    no_usage: bool = False


class DeliberateDrop(Exception):
    """Raised after a response started: the server then closes the connection mid-body."""


def answer_tokens(prompt: str, count: int | None = None) -> list[str]:
    """The fake's answer to `prompt`, as the tokens it streams (same prompt, same answer)."""
    digest = hashlib.sha256(prompt.encode()).digest()
    if count is None:
        quoted = " ".join(prompt.split())[:80]
        picked = " ".join(_WORDS[b % len(_WORDS)] for b in digest[:12])
        return _TOKEN.findall(f'Fake answer to "{quoted}": {picked}.')
    words = [_WORDS[(digest[i % len(digest)] + i) % len(_WORDS)] for i in range(count)]
    return [word if i == 0 else " " + word for i, word in enumerate(words)]


def continuation(tokens: list[str], prefill: str) -> list[str]:
    """The tokens that go on from `prefill`: the rest of the answer when it starts with
    `prefill`, else the tokens past as many as `prefill` has."""
    answer = "".join(tokens)
    if answer.startswith(prefill):
        return _TOKEN.findall(answer[len(prefill) :])
    return tokens[len(_TOKEN.findall(prefill)) :]


def count_tokens(texts: list[str], messages: int, images: int) -> int:
    return sum(len(_TOKEN.findall(text)) for text in texts) + 3 * messages + 85 * images


@dataclass
class Turn:
    """What the fake needs from a request, whatever its format."""

    model: str
    texts: list[str]
    last_user: str
    messages: int
    images: int
    max_tokens: int | None
    include_usage: bool = True
    # The partial answer to go on from (a prefilled assistant turn), "" for a new answer.
    prefill: str = ""


@dataclass
class SeenRequest:
    id: str
    path: str
    format: str
    model: str
    body: Any
    auth: bool
    seen_at: float
    client_port: int | None = None
    status: int = 200
    directive: dict[str, Any] | None = None
    directive_applied: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    tokens_sent: int = 0
    completed: bool = False
    client_closed: bool = False
    closed_at: float | None = None


class BadTurn(Exception):
    """The request breaks the provider's rules; the message is what the provider would say."""


def _sse(data: Any, *, event: str | None = None, eol: str = "\n") -> bytes:
    head = f"event: {event}{eol}" if event else ""
    return f"{head}data: {json.dumps(data)}{eol}{eol}".encode()


def _str_or_texts(content: Any) -> tuple[list[str], int]:
    """(texts, image count) of a message content: a string or a list of typed parts."""
    if isinstance(content, str):
        return [content], 0
    texts, images = [], 0
    for part in content if isinstance(content, list) else ():
        if isinstance(part, dict) and part.get("type") == "text":
            texts.append(str(part.get("text", "")))
        elif isinstance(part, dict) and part.get("type") in ("image_url", "image"):
            images += 1
    return texts, images


class OpenAIFormat:
    name = "openai"
    _errors = {
        400: ("invalid_request_error", None, "Invalid request."),
        401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
        403: ("invalid_request_error", None, "You are not allowed to use this model."),
        404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
        429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
        500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
        503: ("server_error", None, "The server is overloaded or not ready yet."),
    }

    def parse(self, body: dict[str, Any], headers: dict[str, str], path_model: str) -> Turn:
        if not isinstance(body.get("model"), str) or not isinstance(body.get("messages"), list):
            raise BadTurn("you must provide a model parameter and a messages array")
        if body.get("stream") is not True:
            raise BadTurn("this fake only streams: set stream to true")
        texts, images, last_user = [], 0, ""
        for message in body["messages"]:
            found, pictures = _str_or_texts(message.get("content"))
            texts += found
            images += pictures
            if message.get("role") == "user":
                last_user = "\n".join(found)
        options = body.get("stream_options") or {}
        prefill = ""
        if body.get("continue_final_message") is True:
            # vLLM's chat extension: the final assistant message is left open and continued.
            if body.get("add_generation_prompt", True) is not False:
                raise BadTurn("Cannot set both `continue_final_message` and `add_generation_prompt` to True.")
            last = body["messages"][-1] if body["messages"] else {}
            if last.get("role") != "assistant":
                raise BadTurn("continue_final_message is set but the final message is not an assistant message")
            prefill = "".join(_str_or_texts(last.get("content"))[0])
        return Turn(
            model=body["model"],
            texts=texts,
            last_user=last_user,
            messages=len(body["messages"]),
            images=images,
            max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
            include_usage=bool(options.get("include_usage")),
            prefill=prefill,
        )

    def error(
        self, status: int, message: str | None, retry_after: float | None
    ) -> tuple[dict[str, Any], dict[str, str]]:
        kind, code, text = self._errors.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None, f"Error {status}.")
        )
        return {"error": {"message": message or text, "type": kind, "param": None, "code": code}}, {}

    def context_error(self, input_tokens: int) -> dict[str, Any]:
        message = (
            f"This model's maximum context length is 128000 tokens. However, your messages resulted in "
            f"{input_tokens + 128000} tokens. Please reduce the length of the messages."
        )
        return {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        }

    def _chunk(self, stream: Stream, delta: dict[str, Any], finish: str | None) -> bytes:
        chunk: dict[str, Any] = {
            "id": stream.id,
            "object": "chat.completion.chunk",
            "created": int(stream.started),
            "model": stream.turn.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if stream.turn.include_usage:
            chunk["usage"] = None
        return _sse(chunk)

    def opening(self, stream: Stream) -> list[bytes]:
        # A refusal opens with `"content": null, "refusal": ""` (openai-python's recorded
        # stream of a refused structured output, .inline-snapshot/external/ca015b8b1eba*.bin).
        if stream.directive.refusal:
            return [self._chunk(stream, {"role": "assistant", "content": None, "refusal": ""}, None)]
        return [self._chunk(stream, {"role": "assistant", "content": ""}, None)]

    def token(self, stream: Stream, text: str) -> bytes:
        return self._chunk(stream, {"refusal" if stream.directive.refusal else "content": text}, None)

    def closing(self, stream: Stream, cut: bool) -> list[bytes]:
        frames = [self._chunk(stream, {}, stream.directive.finish_reason or ("length" if cut else "stop"))]
        if stream.turn.include_usage and not stream.directive.no_usage:
            usage = {
                "prompt_tokens": stream.input_tokens,
                "completion_tokens": stream.sent,
                "total_tokens": stream.input_tokens + stream.sent,
            }
            base = {"id": stream.id, "object": "chat.completion.chunk", "created": int(stream.started)}
            frames.append(_sse({**base, "model": stream.turn.model, "choices": [], "usage": usage}))
        return [*frames, b"data: [DONE]\n\n"]

    def stream_error(self, stream: Stream, kind: str) -> bytes:
        status = {"overloaded": 503, "rate_limited": 429}.get(kind, 500)
        return _sse(self.error(status, None, None)[0])


class AnthropicFormat:
    name = "anthropic"
    _types = {
        400: ("invalid_request_error", "Invalid request."),
        401: ("authentication_error", "invalid x-api-key"),
        403: ("permission_error", "Your API key does not have permission to use the specified resource."),
        404: ("not_found_error", "The requested resource could not be found."),
        413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
        429: ("rate_limit_error", "This request would exceed the rate limit for your organization."),
        500: ("api_error", "Internal server error"),
        503: ("overloaded_error", "Overloaded"),
        529: ("overloaded_error", "Overloaded"),
    }

    def parse(self, body: dict[str, Any], headers: dict[str, str], path_model: str) -> Turn:
        if "anthropic-version" not in headers:
            raise BadTurn("anthropic-version: header is required")
        if not isinstance(body.get("model"), str):
            raise BadTurn("model: Field required")
        if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
            raise BadTurn("max_tokens: Field required")
        if not isinstance(body.get("messages"), list):
            raise BadTurn("messages: Field required")
        if body.get("stream") is not True:
            raise BadTurn("this fake only streams: set stream to true")
        texts, images, last_user = [], 0, ""
        system = body.get("system")
        if system:
            texts += _str_or_texts(system)[0]
        for message in body["messages"]:
            if message.get("role") not in ("user", "assistant"):
                raise BadTurn(
                    f'messages: Unexpected role "{message.get("role")}". Use the top-level `system` parameter.'
                )
            found, pictures = _str_or_texts(message.get("content"))
            texts += found
            images += pictures
            if message["role"] == "user":
                last_user = "\n".join(found)
        prefill = ""
        if body["messages"] and body["messages"][-1].get("role") == "assistant":
            # A prefilled answer ("Prefill Claude's response"): Claude goes on from it.
            prefill = "".join(_str_or_texts(body["messages"][-1].get("content"))[0])
            if prefill != prefill.rstrip():
                raise BadTurn("messages: final assistant content cannot end with trailing whitespace")
        return Turn(body["model"], texts, last_user, len(body["messages"]), images, body["max_tokens"], prefill=prefill)

    def error(
        self, status: int, message: str | None, retry_after: float | None
    ) -> tuple[dict[str, Any], dict[str, str]]:
        kind, text = self._types.get(
            status, ("api_error" if status >= 500 else "invalid_request_error", f"Error {status}")
        )
        request_id = "req_" + secrets.token_hex(12)
        return {"type": "error", "error": {"type": kind, "message": message or text}, "request_id": request_id}, {
            "request-id": request_id
        }

    def context_error(self, input_tokens: int) -> dict[str, Any]:
        message = f"prompt is too long: {input_tokens + 200000} tokens > 200000 maximum"
        return {"type": "error", "error": {"type": "invalid_request_error", "message": message}}

    def opening(self, stream: Stream) -> list[bytes]:
        message: dict[str, Any] = {
            "id": stream.id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": stream.turn.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": stream.input_tokens, "output_tokens": 1},
        }
        return [
            _sse({"type": "message_start", "message": message}, event="message_start"),
            _sse(
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                event="content_block_start",
            ),
            _sse({"type": "ping"}, event="ping"),
        ]

    def token(self, stream: Stream, text: str) -> bytes:
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
        return _sse(delta, event="content_block_delta")

    def closing(self, stream: Stream, cut: bool) -> list[bytes]:
        reason = stream.directive.finish_reason or ("max_tokens" if cut else "end_turn")
        delta = {"stop_reason": reason, "stop_sequence": None}
        return [
            _sse({"type": "content_block_stop", "index": 0}, event="content_block_stop"),
            _sse(
                {"type": "message_delta", "delta": delta, "usage": {"output_tokens": stream.sent}},
                event="message_delta",
            ),
            _sse({"type": "message_stop"}, event="message_stop"),
        ]

    def stream_error(self, stream: Stream, kind: str) -> bytes:
        status = {"overloaded": 529, "rate_limited": 429}.get(kind, 500)
        body = self.error(status, None, None)[0]
        return _sse({"type": "error", "error": body["error"]}, event="error")


class GeminiFormat:
    name = "gemini"
    # CRLF line ends, as Google's servers send them: the adapter's parser must take both.
    eol = "\r\n"
    _statuses = {
        400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
        401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
        403: ("PERMISSION_DENIED", "The caller does not have permission."),
        404: ("NOT_FOUND", "Requested entity was not found."),
        429: ("RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and billing details."),
        500: ("INTERNAL", "An internal error has occurred. Please retry."),
        503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
        504: ("DEADLINE_EXCEEDED", "The request timed out. Please try again."),
        529: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    }

    def parse(self, body: dict[str, Any], headers: dict[str, str], path_model: str) -> Turn:
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise BadTurn("* GenerateContentRequest.contents: contents is not specified")
        texts, images, last_user = [], 0, ""
        system = body.get("systemInstruction") or body.get("system_instruction") or {}
        texts += [str(part.get("text", "")) for part in system.get("parts") or () if "text" in part]
        for content in contents:
            role = content.get("role", "user")
            if role not in ("user", "model"):
                raise BadTurn(f"Please use a valid role: user, model. Got {role!r}.")
            found = [str(part["text"]) for part in content.get("parts") or () if "text" in part]
            images += sum(1 for part in content.get("parts") or () if set(part) & _GEMINI_MEDIA)
            texts += found
            if role == "user":
                last_user = "\n".join(found)
        config = body.get("generationConfig") or body.get("generation_config") or {}
        limit = config.get("maxOutputTokens") or config.get("max_output_tokens")
        last = contents[-1]
        prefill = "".join(str(p["text"]) for p in last.get("parts") or () if "text" in p)
        prefill = prefill if last.get("role") == "model" else ""
        return Turn(path_model, texts, last_user, len(contents), images, limit, prefill=prefill)

    def error(
        self, status: int, message: str | None, retry_after: float | None
    ) -> tuple[dict[str, Any], dict[str, str]]:
        code, text = self._statuses.get(
            status, ("INTERNAL" if status >= 500 else "FAILED_PRECONDITION", f"Error {status}.")
        )
        error: dict[str, Any] = {"code": status, "message": message or text, "status": code}
        if retry_after is not None:
            error["details"] = [
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after:g}s"}
            ]
        return {"error": error}, {}

    def context_error(self, input_tokens: int) -> dict[str, Any]:
        message = (
            f"The input token count ({input_tokens + 1048576}) exceeds the maximum number of tokens allowed (1048576)."
        )
        return {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}

    def _chunk(self, stream: Stream, text: str, finish: str | None) -> bytes:
        candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        usage: dict[str, Any] = {"promptTokenCount": stream.input_tokens, "totalTokenCount": stream.input_tokens}
        if finish:
            candidate["finishReason"] = finish
            usage.update(candidatesTokenCount=stream.sent, totalTokenCount=stream.input_tokens + stream.sent)
        chunk = {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": stream.turn.model,
            "responseId": stream.id,
        }
        return _sse(chunk, eol=self.eol)

    def opening(self, stream: Stream) -> list[bytes]:
        return []

    def token(self, stream: Stream, text: str) -> bytes:
        return self._chunk(stream, text, None)

    def closing(self, stream: Stream, cut: bool) -> list[bytes]:
        return [self._chunk(stream, "", stream.directive.finish_reason or ("MAX_TOKENS" if cut else "STOP"))]

    def stream_error(self, stream: Stream, kind: str) -> bytes:
        """Gemini fails a stream it already started by writing the error object after the
        events, pretty-printed and outside any `data:` line, then closing the connection:
        recorded in vercel/ai#5217 (a 503 UNAVAILABLE after a chunk with finishReason STOP);
        google-genai's _api_client buffers such lines "when API returns an error message, it
        comes line by line"."""
        status = {"overloaded": 503, "rate_limited": 429}.get(kind, 500)
        return json.dumps(self.error(status, None, None)[0], indent=2).encode()


_GEMINI_MEDIA = {"inlineData", "inline_data", "fileData", "file_data"}
Format = OpenAIFormat | AnthropicFormat | GeminiFormat


@dataclass
class Stream:
    """One answer being streamed."""

    turn: Turn
    directive: Directive
    input_tokens: int
    id: str = field(default_factory=lambda: "fake_" + secrets.token_hex(8))
    started: float = field(default_factory=time.time)
    sent: int = 0


class FakeProviderApp:
    """The ASGI app; its state (requests seen, `times` counters) lives in the instance."""

    def __init__(self) -> None:
        self.requests: list[SeenRequest] = []
        self.attempts: dict[str, int] = {}
        self._ids = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/_fake/requests" and method == "GET":
            await _json(send, 200, [asdict(seen) for seen in self.requests])
        elif path == "/_fake/requests" and method == "DELETE":
            self.requests.clear()
            self.attempts.clear()
            await _json(send, 200, {"deleted": True})
        elif method == "POST" and path == "/v1/chat/completions":
            await self._answer(OpenAIFormat(), "", scope, receive, send)
        elif method == "POST" and path == "/v1/messages":
            await self._answer(AnthropicFormat(), "", scope, receive, send)
        elif method == "POST" and (match := _GEMINI_PATH.match(path)):
            if parse_qs(scope["query_string"].decode()).get("alt") != ["sse"]:
                await _json(send, 400, GeminiFormat().error(400, "this fake serves only ?alt=sse", None)[0])
                return
            await self._answer(GeminiFormat(), match.group(1), scope, receive, send)
        else:
            await _json(send, 404, {"error": {"message": f"no fake endpoint {method} {path}"}})

    async def _answer(self, fmt: Format, path_model: str, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        raw = await _read_body(receive)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        seen = SeenRequest(
            id=f"req_{next(self._ids)}",
            path=scope["path"],
            format=fmt.name,
            model=path_model or (body.get("model", "") if isinstance(body, dict) else ""),
            body=body,
            auth=any(h in headers for h in ("authorization", "x-api-key", "x-goog-api-key"))
            or "key" in parse_qs(scope["query_string"].decode()),
            seen_at=time.time(),
            client_port=(scope.get("client") or (None, None))[1],
        )
        self.requests.append(seen)
        try:
            if not isinstance(body, dict):
                raise BadTurn("the request body is not a JSON object")
            turn = fmt.parse(body, headers, path_model)
            directive, text = _directive(turn.last_user)
        except (BadTurn, ValidationError) as exc:
            await self._fail(seen, fmt, send, 400, message=str(exc))
            return
        except (AttributeError, KeyError, TypeError) as exc:
            # A part of the wrong shape (a message that is not an object, say).
            await self._fail(seen, fmt, send, 400, message=f"malformed request: {exc!r}")
            return
        turn.last_user = text
        seen.directive = directive.model_dump(exclude_defaults=True) if directive else None
        applied = directive is not None and self._applies(directive)
        seen.directive_applied = applied
        plan = directive if directive is not None and applied else Directive()
        seen.input_tokens = count_tokens(turn.texts, turn.messages, turn.images)
        if plan.context_length_exceeded:
            await self._fail(seen, fmt, send, 400, body=fmt.context_error(seen.input_tokens))
        elif plan.status is not None:
            await self._fail(seen, fmt, send, plan.status, retry_after=plan.retry_after)
        else:
            await self._stream(seen, fmt, Stream(turn, plan, seen.input_tokens), receive, send)

    def _applies(self, directive: Directive) -> bool:
        if directive.times is None:
            return True
        key = directive.key or directive.model_dump_json()
        attempt = self.attempts.get(key, 0)
        self.attempts[key] = attempt + 1
        return attempt < directive.times

    async def _fail(
        self,
        seen: SeenRequest,
        fmt: Format,
        send: Send,
        status: int,
        *,
        message: str | None = None,
        retry_after: float | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        """Answer `status` with the provider's error body (`body` replaces it when given)."""
        standard, headers = fmt.error(status, message, retry_after)
        # Gemini says how long to wait in the body (RetryInfo), the others in a header.
        if retry_after is not None and fmt.name != "gemini":
            headers["retry-after"] = f"{retry_after:g}"
        seen.status = status
        await _json(send, status, body or standard, headers)
        seen.completed = True

    async def _stream(self, seen: SeenRequest, fmt: Format, stream: Stream, receive: Receive, send: Send) -> None:
        gone = asyncio.Event()
        watcher = asyncio.create_task(_watch_disconnect(receive, gone))
        try:
            finished = await _send_stream(fmt, stream, send, gone, seen)
        finally:
            watcher.cancel()
            await asyncio.wait({watcher})
            seen.tokens_sent = seen.output_tokens = stream.sent
        if not finished:
            seen.client_closed = True
            seen.closed_at = time.time()
            log.info("client closed the stream", extra={"request": seen.id, "tokens_sent": stream.sent})


async def _send_stream(fmt: Format, stream: Stream, send: Send, gone: asyncio.Event, seen: SeenRequest) -> bool:
    """Stream the answer; False if the client left first. Raises DeliberateDrop to cut it."""
    loop = asyncio.get_running_loop()
    plan = stream.directive

    async def frame(data: bytes) -> bool:
        await send({"type": "http.response.body", "body": data, "more_body": True})
        # Let the disconnect watcher run even when frames go out back to back.
        await asyncio.sleep(0)
        return not gone.is_set()

    async def pause(seconds: float) -> bool:
        with suppress(TimeoutError):
            await asyncio.wait_for(gone.wait(), seconds)
        return not gone.is_set()

    async def last_frames(data: bytes) -> bool:
        # The end of the answer and the end of the body go out together, so a client that
        # stops reading at the answer's last event finds the response already complete.
        await send({"type": "http.response.body", "body": data, "more_body": False})
        seen.tokens_sent = seen.output_tokens = stream.sent
        seen.completed = True
        return True

    if plan.echo:
        tokens = _TOKEN.findall(stream.turn.last_user)
    else:
        tokens = answer_tokens(stream.turn.last_user, plan.tokens)
    if stream.turn.prefill:
        tokens = continuation(tokens, stream.turn.prefill)
    cut = stream.turn.max_tokens is not None and len(tokens) > stream.turn.max_tokens
    if cut:
        tokens = tokens[: stream.turn.max_tokens]
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for data in fmt.opening(stream):
        if not await frame(data):
            return False
    if plan.first_token_delay and not await pause(plan.first_token_delay):
        return False
    start = loop.time()
    # One step more than there are tokens: a drop or an error may come after the last token.
    for i in range(len(tokens) + 1):
        if plan.drop_after is not None and i >= plan.drop_after:
            raise DeliberateDrop(f"dropped after {i} tokens as the directive asked")
        if plan.error_after is not None and i >= plan.error_after:
            closing = b"".join(fmt.closing(stream, False)) if plan.error_after_finish else b""
            return await last_frames(closing + fmt.stream_error(stream, plan.stream_error))
        if i == len(tokens):
            break
        if plan.tokens_per_s is not None:
            delay = start + i / plan.tokens_per_s - loop.time()
            if delay > 0 and not await pause(delay):
                return False
        stream.sent += 1
        if not await frame(fmt.token(stream, tokens[i])):
            return False
    return await last_frames(b"".join(fmt.closing(stream, cut)))


def _directive(text: str) -> tuple[Directive | None, str]:
    """The directive in a message (validated) and the message without it."""
    match = _DIRECTIVE.search(text)
    if match is None:
        return None, text
    try:
        raw = json.loads(match.group(1))
    except ValueError as exc:
        raise BadTurn(f"fake directive is not JSON: {exc}") from None
    directive = Directive.model_validate(raw)
    return directive, (text[: match.start()] + text[match.end() :]).strip()


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()


async def _read_body(receive: Receive) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        body.extend(message.get("body", b""))
        if not message.get("more_body"):
            return bytes(body)


async def _json(send: Send, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
    data = json.dumps(payload).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class _HideDeliberateDrops(logging.Filter):
    """uvicorn logs an app exception with a traceback; a drop the test asked for is no error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DeliberateDrop))


class FakeProviderServer:
    """The fake on a real socket (uvicorn), in this event loop: real disconnects, real drops."""

    def __init__(self, app: FakeProviderApp | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app or FakeProviderApp()
        self.host = host
        config = uvicorn.Config(
            self.app, host=host, port=port, log_config=None, log_level="warning", access_log=False, ws="none"
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Serve until `stop()`; returns once the socket accepts connections."""
        uvicorn_log = logging.getLogger("uvicorn.error")
        if not any(isinstance(f, _HideDeliberateDrops) for f in uvicorn_log.filters):
            uvicorn_log.addFilter(_HideDeliberateDrops())
        self._task = asyncio.create_task(self._server.serve())
        deadline = time.monotonic() + 10
        while not self._server.started:
            if self._task.done():
                await self._task
                raise RuntimeError("the fake provider server stopped during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError("the fake provider server did not start within 10 s")
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]

    async def wait(self) -> None:
        """Until the server stops (e.g. on SIGTERM or SIGINT, which uvicorn handles)."""
        if self._task is not None:
            await self._task

    def request_stop(self) -> None:
        self._server.should_exit = True

    async def stop(self) -> None:
        self.request_stop()
        await self.wait()

    async def __aenter__(self) -> FakeProviderServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _serve(host: str, port: int) -> None:
    server = FakeProviderServer(host=host, port=port)
    # uvicorn stops on SIGINT/SIGTERM, then raises the signal again for the handler it found;
    # with this one in place that ends in a clean exit (status 0) instead of death by signal.
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.request_stop)
    await server.start()
    log.info("fake providers ready on %s", server.url, extra={"url": server.url})
    await server.wait()


@contextlib.contextmanager
def fake_provider_process(log_path: Path, timeout_s: float = 20.0) -> Iterator[str]:
    """The fake server as a real process of its own on a free port; yields its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "parley_dev.fake_providers", "--port", str(port), "--log-level", "WARNING"],
            stdout=log,
            stderr=log,
        )
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    httpx.get(f"{url}/_fake/requests", timeout=1).raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise RuntimeError(f"the fake provider server did not start; see {log_path}") from None
                    time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            process.wait(10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m parley_dev.fake_providers", description="A fake model-provider server."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (named in the ready line)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    setup_logging("fake-providers", args.log_level)
    asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
