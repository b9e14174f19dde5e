"""The worker's delta batching: the first token at once, later fast tokens merged, nothing lost or reordered."""

from __future__ import annotations

import asyncio
from typing import Any

from parley.v1 import chat_pb2
from parley_worker.batching import DeltaBatcher


class RecordingStream:
    """Records frames as ResponseStream.emit would send them, taking a little time per frame."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, str]] = []
        self.lock = asyncio.Lock()

    async def emit(self, **kind: Any) -> None:
        async with self.lock:
            await asyncio.sleep(0.001)
            self.frames.append((asyncio.get_running_loop().time(), kind["delta"].text))


class BatchRecordingStream:
    """Records every frame with the write it went out in (ResponseStream.emit / emit_many)."""

    def __init__(self) -> None:
        self.writes: list[list[str]] = []

    async def emit(self, **kind: Any) -> None:
        await self.emit_many(kind)

    async def emit_many(self, *kinds: dict[str, Any]) -> None:
        await asyncio.sleep(0.001)
        self.writes.append([_describe(kind) for kind in kinds])


def _describe(kind: dict[str, Any]) -> str:
    ((name, value),) = kind.items()
    return f"delta:{value.text}" if name == "delta" else name


async def test_first_token_alone_then_fast_tokens_merged_in_order() -> None:
    stream = RecordingStream()
    batcher = DeltaBatcher(stream, window_s=0.05)  # type: ignore[arg-type]
    for i in range(20):
        await batcher.add(f"t{i} ")
    await batcher.close()
    texts = [t for _, t in stream.frames]
    assert texts[0] == "t0 "
    assert "".join(texts) == "".join(f"t{i} " for i in range(20))
    assert len(texts) <= 3


async def test_slow_tokens_each_go_out_within_the_window() -> None:
    stream = RecordingStream()
    batcher = DeltaBatcher(stream, window_s=0.02)  # type: ignore[arg-type]
    for i in range(4):
        await batcher.add(f"slow{i}")
        await asyncio.sleep(0.06)
    assert [t for _, t in stream.frames] == ["slow0", "slow1", "slow2", "slow3"], "no token waits for the next one"
    await batcher.close()


async def test_the_size_limit_flushes_early_and_close_sends_the_rest() -> None:
    stream = RecordingStream()
    batcher = DeltaBatcher(stream, window_s=10, max_chars=10)  # type: ignore[arg-type]
    for _ in range(7):
        await batcher.add("abcd")
    assert [t for _, t in stream.frames] == ["abcd", "abcdabcdabcd", "abcdabcdabcd"]
    await batcher.close()
    assert "".join(t for _, t in stream.frames) == "abcd" * 7


async def test_window_zero_sends_every_token() -> None:
    stream = RecordingStream()
    batcher = DeltaBatcher(stream, window_s=0)  # type: ignore[arg-type]
    for i in range(5):
        await batcher.add(str(i))
    await batcher.close()
    assert [t for _, t in stream.frames] == ["0", "1", "2", "3", "4"]


async def test_a_lead_frame_goes_out_with_the_first_text_and_the_last_frames_with_the_held_text() -> None:
    stream = BatchRecordingStream()
    batcher = DeltaBatcher(stream, window_s=10)  # type: ignore[arg-type]
    batcher.lead(meta=chat_pb2.StreamMeta(model="m"))
    for text in ("a", "b", "c"):
        await batcher.add(text)
    await batcher.close({"usage": chat_pb2.Usage()}, {"done": chat_pb2.StreamDone()})
    assert stream.writes == [["meta", "delta:a"], ["delta:bc", "usage", "done"]]


async def test_a_lead_frame_with_no_text_goes_out_with_the_last_frames() -> None:
    stream = BatchRecordingStream()
    batcher = DeltaBatcher(stream, window_s=0.01)  # type: ignore[arg-type]
    batcher.lead(meta=chat_pb2.StreamMeta(model="m"))
    await batcher.close({"done": chat_pb2.StreamDone()})
    assert stream.writes == [["meta", "done"]]


async def test_text_held_past_the_window_goes_out_alone_before_the_last_frames() -> None:
    stream = BatchRecordingStream()
    batcher = DeltaBatcher(stream, window_s=0.01)  # type: ignore[arg-type]
    await batcher.add("a")
    await batcher.add("b")
    await asyncio.sleep(0.05)
    await batcher.close({"done": chat_pb2.StreamDone()})
    assert stream.writes == [["delta:a"], ["delta:b"], ["done"]]
