"""Exact-match response cache for deterministic requests.

A request is deterministic when the model gets temperature 0: the user's, or the registry's
default when the user set none (ModelConfig.temperature_to_send, the rule the worker sends
by). A model that refuses the field (`accepts_temperature: false`) samples at its own
default whatever was asked, so its answers are never deterministic. The answer is then a
function of the model, the prompt the model gets (after trimming) and the output limit, and
the key is the SHA-256 of exactly those. The cache is filled from the ResponseCompleted of
such a request when it ended "stop" or "length" (completions.py): the orchestrator keeps the
key in the response's job record when it publishes the job. A hit is streamed like any
answer (meta, delta, usage, done) with zero usage and cost, and no provider is called.
Entries expire after `ttl_s`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from parley.v1 import chat_pb2
from parley_common.models import ModelConfig


def is_deterministic(request: chat_pb2.ChatRequest, spec: ModelConfig) -> bool:
    """Whether `spec`'s model answers `request` at temperature 0."""
    requested = request.temperature if request.has_temperature else None
    return spec.temperature_to_send(requested) == 0.0


def cache_key(
    model: str, upstream_model: str, max_output_tokens: int, messages: Sequence[chat_pb2.PromptMessage]
) -> str:
    """The same model, the same prompt, the same output limit: the same key."""
    canonical = {
        "model": model,
        "upstream_model": upstream_model,
        "max_output_tokens": max_output_tokens,
        "messages": [
            {
                "role": m.role,
                "content": m.content,
                "images": [
                    [i.media_id, i.url, hashlib.sha256(i.data).hexdigest(), i.mime_type, i.detail] for i in m.images
                ],
            }
            for m in messages
        ],
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class CachedAnswer:
    model: str
    content: str
    finish_reason: str


class ResponseCache:
    def __init__(self, redis: Redis, namespace: str, ttl_s: int) -> None:
        self.redis = redis
        self.namespace = namespace
        self.ttl_s = ttl_s

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    def key(self, digest: str) -> str:
        return f"{self.namespace}:response-cache:{digest}"

    async def get(self, digest: str) -> CachedAnswer | None:
        return _answer(await self.redis.get(self.key(digest)))

    async def get_unless(self, flag_key: str, digest: str) -> tuple[bytes | None, CachedAnswer | None]:
        """`get`, and in the same round trip the value of `flag_key` (the turn's cancellation):
        (the flag's value, the cached answer)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(flag_key)
            pipe.get(self.key(digest))
            flag, raw = await pipe.execute()
        return flag, _answer(raw)

    async def put(self, digest: str, answer: CachedAnswer) -> None:
        value = json.dumps({"model": answer.model, "content": answer.content, "finish_reason": answer.finish_reason})
        await self.redis.set(self.key(digest), value, ex=self.ttl_s)


def _answer(raw: bytes | str | None) -> CachedAnswer | None:
    if raw is None:
        return None
    data = json.loads(raw)
    return CachedAnswer(model=data["model"], content=data["content"], finish_reason=data["finish_reason"])


__all__ = ["CachedAnswer", "ResponseCache", "cache_key", "is_deterministic"]
