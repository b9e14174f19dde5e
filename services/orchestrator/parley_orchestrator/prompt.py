"""Building the provider prompt from the conversation's stored messages."""

from __future__ import annotations

from collections.abc import Sequence

from parley.v1 import chat_pb2, history_pb2


def build_prompt(system_prompt: str, newest_first: Sequence[history_pb2.Message]) -> list[chat_pb2.PromptMessage]:
    """System prompt, then the conversation oldest first.

    Failed assistant answers and empty ones are left out: the model should not see them as
    something it said. Interrupted answers stay, since the user saw them.
    """
    prompt = [chat_pb2.PromptMessage(role="system", content=system_prompt)] if system_prompt else []
    for message in reversed(newest_first):
        if message.role == "assistant" and (message.status == history_pb2.MESSAGE_STATUS_FAILED or not message.content):
            continue
        prompt.append(chat_pb2.PromptMessage(role=message.role, content=message.content))
    return prompt
