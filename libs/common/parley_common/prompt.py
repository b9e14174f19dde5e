"""The prompt a conversation makes: the system prompt, then the stored messages oldest first.

The gateway (token counts before sending) and the orchestrator (the prompt it sends) build it
the same way, so a count shown to a user is the count of the prompt that is sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from parley.v1 import chat_pb2, history_pb2

DEFAULT_SYSTEM_PROMPT = "You are Parley, a helpful assistant."
# How many of the latest stored messages a prompt starts from (trimming may keep fewer).
DEFAULT_HISTORY_MESSAGES = 40
# Tokens kept free for the answer when the client sets no max_output_tokens.
DEFAULT_RESERVED_OUTPUT_TOKENS = 2000


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


__all__ = ["DEFAULT_HISTORY_MESSAGES", "DEFAULT_RESERVED_OUTPUT_TOKENS", "DEFAULT_SYSTEM_PROMPT", "build_prompt"]
