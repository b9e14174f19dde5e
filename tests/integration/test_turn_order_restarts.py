"""Turn order survives an orchestrator restart.

Message 1 streams; message 2 of the same conversation waits for it (`queued`). The
orchestrator holding message 2 is stopped — SIGTERM with a grace shorter than the wait, or
SIGKILL — and started again. Message 2 is delivered again and must keep its place: its answer
starts only after answer 1 has ended, and history reads user 1, answer 1, user 2, answer 2.
(Before the fix, the redelivered message found itself as the conversation's latest turn, went
ahead at once and was answered without answer 1, stored as user1, user2, assistant2, assistant1.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from parley_dev.infra import Infra
from parley_dev.stack import Stack
from tests.support.api import api_client, stored_messages
from tests.support.keys import DEV_KEY
from tests.support.polling import eventually
from tests.support.sse import Frame, frames
from tests.support.stacks import own_stack, stack_config

ROUNDS = 5
SHORT = {"max_output_tokens": 6}


@pytest.fixture(scope="module")
async def slow_stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    config = stack_config(
        infra,
        tmp_path_factory.mktemp("turn-order"),
        "to",
        DEV_KEY,
        {
            # About 4 s per answer: long enough to restart the orchestrator mid-answer.
            "PARLEY_DEMO_FIRST_TOKEN_DELAY_MS": "50",
            "PARLEY_DEMO_TOKENS_PER_S": "10",
            "PARLEY_HEARTBEAT_S": "1",
            "PARLEY_REQUESTS_PER_MINUTE": "100000",
        },
    )
    async with own_stack(config, clean_exit=False) as stack:
        yield stack


async def collect(response: httpx.Response, into: list[tuple[float, Frame]], first_text: asyncio.Event) -> None:
    async for frame in frames(response):
        into.append((time.monotonic(), frame))
        if frame.event == "delta":
            first_text.set()
        if frame.event in ("done", "error"):
            return


def text(received: list[tuple[float, Frame]]) -> str:
    return "".join(f.data["text"] for _, f in received if f.event == "delta")


async def restart_orchestrator(stack: Stack, how: str) -> None:
    if how == "sigkill":
        stack.kill_service("orchestrator")
    else:
        # A grace shorter than message 2's wait: it is handed back to the queue unfinished.
        assert stack.stop_service("orchestrator") == 0
    stack.start_service("orchestrator", PARLEY_SHUTDOWN_GRACE_S="0.5")
    await stack.wait_ready()


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
async def test_a_waiting_message_keeps_its_place_when_the_orchestrator_restarts(slow_stack: Stack, how: str) -> None:
    stack = slow_stack
    stack.stop_service("orchestrator")
    stack.start_service("orchestrator", PARLEY_SHUTDOWN_GRACE_S="0.5")
    await stack.wait_ready()
    async with api_client(stack.base_url, DEV_KEY, 60.0) as client:
        for round_ in range(ROUNDS):
            created = await client.post("/v1/conversations", json={"title": f"{how} {round_}"})
            conversation = created.json()["id"]
            url = f"/v1/conversations/{conversation}/messages"
            first: list[tuple[float, Frame]] = []
            second: list[tuple[float, Frame]] = []
            first_text, second_text = asyncio.Event(), asyncio.Event()
            async with (
                client.stream("POST", url, json={"content": f"first question {round_}"}) as one,
                # A short answer 2 (six tokens): only its start and its place matter.
                client.stream("POST", url, json={"content": f"second question {round_}", **SHORT}) as two,
            ):
                reading_one = asyncio.create_task(collect(one, first, first_text))
                reading_two = asyncio.create_task(collect(two, second, second_text))
                await asyncio.wait_for(first_text.wait(), 30)

                async def queued(second: list[tuple[float, Frame]] = second) -> bool:
                    return any(f.event == "queued" for _, f in second)

                await eventually(queued, 4, "message 2 waiting for answer 1", interval_s=0.02)
                await restart_orchestrator(stack, how)
                await asyncio.wait_for(asyncio.gather(reading_one, reading_two), 60)
            assert first[-1][1].event == "done", first[-1][1]
            assert second[-1][1].event == "done", second[-1][1]
            one_done = first[-1][0]
            two_text = next(t for t, f in second if f.event == "delta")
            assert two_text > one_done, f"round {round_}: answer 2 started before answer 1 ended"
            stored = list(reversed(await stored_messages(client, conversation, 4)))  # oldest first
            assert [(m["role"], m["content"]) for m in stored] == [
                ("user", f"first question {round_}"),
                ("assistant", text(first)),
                ("user", f"second question {round_}"),
                ("assistant", text(second)),
            ], f"round {round_}: history out of order"
            assert text(first).startswith('You said: "first') and text(second).startswith('You said: "second')
            assert stored[1]["status"] == stored[3]["status"] == "complete"
