"""What a worker announces for a job whose stream had already ended when the job came back
(its completion was not confirmed the first time): the same as `finish` published then."""

from __future__ import annotations

import pytest

from parley.v1 import chat_pb2
from parley_worker.consumers import ending_of

JOB = chat_pb2.ProviderJob(model="first-choice")
META = chat_pb2.StreamEvent(meta=chat_pb2.StreamMeta(model="fallback-model"))
TEXT = [chat_pb2.StreamEvent(delta=chat_pb2.StreamDelta(text=t)) for t in ("Hello", ", world")]
USAGE = chat_pb2.StreamEvent(usage=chat_pb2.Usage(input_tokens=7, output_tokens=3, cost_micros=12))


def done(reason: str) -> chat_pb2.StreamEvent:
    return chat_pb2.StreamEvent(done=chat_pb2.StreamDone(finish_reason=reason))


def error(code: str) -> chat_pb2.StreamEvent:
    return chat_pb2.StreamEvent(error=chat_pb2.StreamError(code=code, message="m", retryable=True))


S = chat_pb2


@pytest.mark.parametrize(
    ("frames", "status", "reason", "content"),
    [
        ([META, *TEXT, USAGE, done("stop")], S.RESPONSE_STATUS_COMPLETED, "stop", "Hello, world"),
        ([META, *TEXT, USAGE, done("length")], S.RESPONSE_STATUS_COMPLETED, "length", "Hello, world"),
        ([META, *TEXT, USAGE, done("cancelled")], S.RESPONSE_STATUS_INTERRUPTED, "cancelled", "Hello, world"),
        ([META, *TEXT, error("provider_error")], S.RESPONSE_STATUS_INTERRUPTED, "error", "Hello, world"),
        ([META, error("provider_error")], S.RESPONSE_STATUS_FAILED, "error", ""),
        ([META, *TEXT, error("worker_shutdown")], S.RESPONSE_STATUS_INTERRUPTED, "cancelled", "Hello, world"),
        ([error("worker_shutdown")], S.RESPONSE_STATUS_INTERRUPTED, "cancelled", ""),
    ],
)
def test_the_end_announced_again_is_the_end_finish_announced(
    frames: list[chat_pb2.StreamEvent], status: int, reason: str, content: str
) -> None:
    model, text, got_status, got_reason, usage = ending_of(JOB, frames)
    assert (text, got_status, got_reason) == (content, status, reason)
    # The model that answered (a fallback's meta names it), else the job's.
    assert model == ("fallback-model" if frames[0] is META else "first-choice")
    assert usage.output_tokens == (3 if USAGE in frames else 0)
