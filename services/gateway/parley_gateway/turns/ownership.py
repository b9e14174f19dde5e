"""Conversation ownership at the edge: a message may go only into its user's conversation.

History answers whether a conversation is the user's (another user's is a 404, as a missing
one); this gateway remembers the answer for a while (`OwnedConversations`), so a follow-up
message costs no call to history. `claim_in_owned` claims a message's response while checking
ownership, both in one round trip's time.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import RedisError

from parley_common.clients.history import HistoryClient
from parley_common.messaging.replay import ReplayLog

log = logging.getLogger(__name__)


class OwnedConversations:
    """Conversations this gateway recently saw to be their user's, so a follow-up message
    skips the ownership call to history. Only ownership is remembered, and a conversation
    never changes owner, so this cannot let one user into another's conversation; a deletion
    on another gateway is seen here within `ttl_s` — until then the orchestrator (whose
    history call checks ownership again) ends the turn with a `conversation_not_found` error
    event instead of this gateway answering 404."""

    def __init__(self, ttl_s: float = 60.0, max_entries: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._until: dict[tuple[str, str], float] = {}

    def knows(self, user_id: str, conversation_id: str) -> bool:
        until = self._until.get((user_id, conversation_id))
        return until is not None and until > time.monotonic()

    def remember(self, user_id: str, conversation_id: str) -> None:
        if len(self._until) >= self.max_entries:
            # Oldest first (dicts keep insertion order): drop the older half at once.
            for key in list(self._until)[: self.max_entries // 2]:
                del self._until[key]
        self._until.pop((user_id, conversation_id), None)
        self._until[(user_id, conversation_id)] = time.monotonic() + self.ttl_s

    def forget(self, user_id: str, conversation_id: str) -> None:
        self._until.pop((user_id, conversation_id), None)


async def release_claim(replay: ReplayLog, response_id: str) -> None:
    """Give a response's claim back (so the same message can be sent again at once)."""
    try:
        await replay.release(response_id)
    except RedisError as exc:
        # Redis is what failed the request, most likely; the claim expires by itself.
        log.warning("could not release a claim", extra={"response_id": response_id, "error": str(exc)})


async def claim_in_owned(
    owned: OwnedConversations,
    history: HistoryClient,
    replay: ReplayLog,
    user_id: str,
    conversation_id: str,
    response_id: str,
) -> bool:
    """Claim `response_id` for a message of `user_id` in `conversation_id`: True when claimed
    now, False when this message was sent before (its response exists). Raises NotFound
    (conversation_not_found) when the conversation is not the user's, leaving nothing claimed."""
    if owned.knows(user_id, conversation_id):
        return await replay.claim(response_id, user_id, conversation_id)
    # Both in one round trip's time; the ownership check gives a wrong conversation its 404.
    ownership = asyncio.ensure_future(history.get_conversation(user_id, conversation_id))
    try:
        claimed = await replay.claim(response_id, user_id, conversation_id)
    except BaseException:
        ownership.cancel()
        raise
    try:
        await ownership
    except BaseException:
        if claimed:
            await release_claim(replay, response_id)
        raise
    owned.remember(user_id, conversation_id)
    return claimed
