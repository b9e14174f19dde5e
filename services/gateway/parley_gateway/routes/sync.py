"""Sync for clients that were offline: every change to the user's data since a cursor."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from ..attachments import resolve
from ..deps import RATE_LIMITED, CurrentUser, HistoryDep, MediaDep
from ..schemas import sync_json

router = APIRouter(prefix="/v1/sync", tags=["sync"], dependencies=RATE_LIMITED)


@router.get("")
async def sync(
    history: HistoryDep,
    media: MediaDep,
    user: CurrentUser,
    since: Annotated[str, Query(max_length=512)] = "",
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
) -> dict[str, Any]:
    """Changes oldest first: `{"data": [...], "next_cursor", "has_more"}`.

    An empty `since` starts from the beginning. Keep `next_cursor` for the next call (it is the
    `since` sent when nothing changed); while `has_more` is true, more are ready now. On
    Cassandra the change log is kept PARLEY_HISTORY_CHANGES_RETENTION_DAYS (90): an older cursor
    gets 410 `sync_cursor_expired`, and the client starts again from the beginning, which is
    then a snapshot of every live conversation and its messages (changes apply by id).

    Every version of every message comes (with `versions` and `parent_id`), and each change of
    a live conversation names its `current_message_id` (the leaf of the path shown);
    `conversation.updated` says another version was made current."""
    page = await history.sync(user, since, limit)
    resolved = await resolve(media, user, (i for c in page.changes for i in c.message.media_ids))
    return sync_json(page, resolved)
