"""Resuming a response stream from any gateway."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse

from parley_common.errors import InvalidRequest

from ..auth import current_user
from ..turns import Turns
from .conversations import sse_response

router = APIRouter(prefix="/v1/responses", tags=["responses"])


@router.get(
    "/{response_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "frames after Last-Event-ID, then live"}},
)
async def resume_events(
    request: Request,
    user: Annotated[str, Depends(current_user)],
    response_id: str,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> StreamingResponse:
    after = 0
    if last_event_id:
        if not last_event_id.isdigit():
            raise InvalidRequest("Last-Event-ID must be a frame number", code="invalid_last_event_id")
        after = int(last_event_id)
    turns: Turns = request.app.state.turns
    return sse_response(await turns.resume(user, response_id, after))


@router.post("/{response_id}/cancel", status_code=202)
async def cancel_response(
    request: Request, user: Annotated[str, Depends(current_user)], response_id: str
) -> JSONResponse:
    """Stop generating; the partial answer is kept, marked interrupted. Cancelling twice is harmless."""
    turns: Turns = request.app.state.turns
    status = await turns.cancel(user, response_id)
    return JSONResponse(
        {"response_id": response_id, "status": status}, status_code=202 if status == "cancelling" else 200
    )
