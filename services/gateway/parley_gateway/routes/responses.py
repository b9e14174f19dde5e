"""Resuming a response stream from any gateway."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response
from fastapi.responses import JSONResponse, StreamingResponse

from parley_common.errors import InvalidRequest

from ..deps import RATE_LIMITED, CurrentUser, ResponsesDep
from ..sse_response import sse_response

router = APIRouter(prefix="/v1/responses", tags=["responses"], dependencies=RATE_LIMITED)

# Frame numbers are Redis stream entry ids' sequence parts and protobuf uint64s: a number past
# int64 is no frame's, whatever it is.
MAX_FRAME_ID = 2**63 - 1


def frame_number(last_event_id: str) -> int:
    """The frame a Last-Event-ID names: ASCII digits only (str.isdigit() also accepts '²')."""
    if not (last_event_id.isascii() and last_event_id.isdigit() and len(last_event_id) <= 19):
        raise InvalidRequest("Last-Event-ID must be a frame number", code="invalid_last_event_id")
    number = int(last_event_id)
    if number > MAX_FRAME_ID:
        raise InvalidRequest("Last-Event-ID must be a frame number", code="invalid_last_event_id")
    return number


@router.get(
    "/{response_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "frames after Last-Event-ID, then live"},
        204: {"description": "the answer ended at or before Last-Event-ID: nothing more will come"},
    },
)
async def resume_events(
    responses: ResponsesDep,
    user: CurrentUser,
    response_id: str,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """Every frame after Last-Event-ID, then the live tail. When the client has the last frame
    already (an EventSource reconnects after the stream closed): 204, which also tells a
    browser's EventSource to stop reconnecting."""
    after = frame_number(last_event_id) if last_event_id else 0
    stream = await responses.resume(user, response_id, after)
    if stream is None:
        return Response(status_code=204)
    return sse_response(stream)


@router.post("/{response_id}/cancel", status_code=202)
async def cancel_response(responses: ResponsesDep, user: CurrentUser, response_id: str) -> JSONResponse:
    """Stop generating; the partial answer is kept, marked interrupted. Cancelling twice is harmless."""
    status = await responses.cancel(user, response_id)
    return JSONResponse(
        {"response_id": response_id, "status": status}, status_code=202 if status == "cancelling" else 200
    )
