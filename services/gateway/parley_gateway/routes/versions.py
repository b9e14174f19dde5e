"""Steering answers: regenerate one, edit a question and resend it, continue an answer, and
switch the version shown. The first three answer with Server-Sent Events exactly like a
send (POST /v1/conversations/{id}/messages): the same frames, budgets, stream slots and turn
order, since they go through the same launch path (Turns)."""

from __future__ import annotations

import hashlib
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import StreamingResponse

from parley.v1 import chat_pb2, history_pb2
from parley_common.clients.history import HistoryClient
from parley_common.errors import Conflict, InvalidRequest, PayloadTooLarge
from parley_common.messaging.replay import ReplayLog, is_terminal, latest_turn_key
from parley_common.messaging.topology import SCHEMA_VERSION

from ..deps import RATE_LIMITED, CurrentUser, HistoryDep, RegistryDep, ReplayDep, ResponsesDep, SettingsDep, TurnsDep
from ..schemas import ContinueAnswer, EditMessage, Regenerate, SetCurrent, conversation_json
from ..sse_response import sse_response
from ..turns.start import response_id_for

router = APIRouter(prefix="/v1/conversations", tags=["conversations"], dependencies=RATE_LIMITED)

ConversationId = Annotated[str, Path(min_length=1, max_length=128)]
MessageId = Annotated[str, Path(min_length=1, max_length=128)]

STREAMED: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "the answer as Server-Sent Events, as for a send"}
}


class Unprocessable(InvalidRequest):
    http_status = 422


def _request_key(
    user_id: str, conversation_id: str, action: str, message_id: str, client_request_id: str | None
) -> str:
    """The id that makes a repeat of the same request (same client_request_id) the same response."""
    raw = f"{user_id}\x1f{conversation_id}\x1f{action}\x1f{message_id}\x1f{client_request_id or uuid.uuid4().hex}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


async def _message(history: HistoryClient, user: str, conversation_id: str, message_id: str) -> history_pb2.Message:
    """The message, or 404 conversation_not_found / message_not_found (another user's ids too)."""
    return await history.get_message(user, conversation_id, message_id)


def _answer_of(message: history_pb2.Message) -> None:
    if message.role != "assistant":
        raise InvalidRequest("this message is not an answer", code="not_an_answer")


@router.post(
    "/{conversation_id}/messages/{message_id}/regenerate", response_class=StreamingResponse, responses=STREAMED
)
async def regenerate(
    turns: TurnsDep,
    history: HistoryDep,
    user: CurrentUser,
    conversation_id: ConversationId,
    message_id: MessageId,
    body: Regenerate,
) -> StreamingResponse:
    """A new version of this answer, to the same question, from the conversation up to that
    question; it becomes current (the older versions stay, see `versions`)."""
    answer = await _message(history, user, conversation_id, message_id)
    _answer_of(answer)
    key = _request_key(user, conversation_id, "regenerate", message_id, body.client_request_id)
    turn = chat_pb2.ChatRequest(
        version=SCHEMA_VERSION,
        response_id=response_id_for(user, conversation_id, "regenerate:" + key),
        user_id=user,
        conversation_id=conversation_id,
        client_message_id=answer.reply_to_id or answer.parent_id,
        model=body.model or "",
        max_output_tokens=body.max_output_tokens or 0,
        regenerate_message_id=message_id,
    )
    return sse_response(await turns.start_steered(turn))


@router.post("/{conversation_id}/messages/{message_id}/edit", response_class=StreamingResponse, responses=STREAMED)
async def edit_message(
    turns: TurnsDep,
    history: HistoryDep,
    settings: SettingsDep,
    user: CurrentUser,
    conversation_id: ConversationId,
    message_id: MessageId,
    body: EditMessage,
) -> StreamingResponse:
    """A new version of this user message (same place in the conversation) and an answer to
    it; both become current."""
    if not body.content.strip():
        raise InvalidRequest("content is empty", code="empty_content")
    if len(body.content) > settings.max_content_chars:
        raise PayloadTooLarge(
            f"content is longer than {settings.max_content_chars} characters", code="content_too_long"
        )
    question = await _message(history, user, conversation_id, message_id)
    if question.role != "user":
        raise InvalidRequest("this message is not the user's", code="not_a_user_message")
    new_id = "m_" + _request_key(user, conversation_id, "edit", message_id, body.client_request_id)
    turn = chat_pb2.ChatRequest(
        version=SCHEMA_VERSION,
        response_id=response_id_for(user, conversation_id, new_id),
        user_id=user,
        conversation_id=conversation_id,
        client_message_id=new_id,
        content=body.content,
        model=body.model or "",
        max_output_tokens=body.max_output_tokens or 0,
        media_ids=body.media_ids,
        image_detail=body.image_detail if body.media_ids else "",
        edit_message_id=message_id,
    )
    return sse_response(await turns.start_steered(turn))


@router.post("/{conversation_id}/messages/{message_id}/continue", response_class=StreamingResponse, responses=STREAMED)
async def continue_answer(
    turns: TurnsDep,
    responses: ResponsesDep,
    history: HistoryDep,
    registry: RegistryDep,
    user: CurrentUser,
    conversation_id: ConversationId,
    message_id: MessageId,
    body: ContinueAnswer,
) -> StreamingResponse:
    """The answer goes on from its stored text, with the model that wrote it; the new text is
    appended to the same message (the stream's deltas carry only the new text). Only an
    `interrupted` answer or one stopped at its length (finish_reason "length") can be: 409
    not_continuable otherwise; 422 continue_unsupported when its model's provider cannot
    continue a partial answer (regenerate instead)."""
    key = _request_key(user, conversation_id, "continue", message_id, body.client_request_id)
    response_id = response_id_for(user, conversation_id, "continue:" + key)
    answer = await _message(history, user, conversation_id, message_id)
    if body.client_request_id and (already := await responses.started(user, response_id)) is not None:
        # The same request again: its continuation may have ended the answer's "interrupted".
        return sse_response(already)
    _answer_of(answer)
    interrupted = answer.status == history_pb2.MESSAGE_STATUS_INTERRUPTED
    cut_short = answer.status == history_pb2.MESSAGE_STATUS_COMPLETE and answer.finish_reason == "length"
    if not (interrupted or cut_short):
        raise Conflict(
            "only an interrupted answer or one stopped at its length can be continued", code="not_continuable"
        )
    if not registry.can_continue(answer.model):
        raise Unprocessable(
            f"the provider of {answer.model or 'this model'} cannot continue an answer; regenerate it instead",
            code="continue_unsupported",
        )
    turn = chat_pb2.ChatRequest(
        version=SCHEMA_VERSION,
        response_id=response_id,
        user_id=user,
        conversation_id=conversation_id,
        client_message_id=answer.reply_to_id or answer.parent_id,
        model=answer.model,
        continue_message_id=message_id,
    )
    return sse_response(await turns.start_steered(turn))


@router.put("/{conversation_id}/current")
async def set_current(
    history: HistoryDep, replay: ReplayDep, user: CurrentUser, conversation_id: ConversationId, body: SetCurrent
) -> dict[str, Any]:
    """Show this version: the current path goes through it, down to its newest descendants (the
    most recently made child at each step). 409 turn_in_progress while an answer streams in
    the conversation."""
    await history.get_message(user, conversation_id, body.message_id)
    if await turn_in_progress(replay, conversation_id):
        raise Conflict("an answer is streaming in this conversation; switch when it ends", code="turn_in_progress")
    return conversation_json(await history.set_current(user, conversation_id, body.message_id))


async def turn_in_progress(replay: ReplayLog, conversation_id: str) -> bool:
    """Whether the conversation's latest turn (which the orchestrator's turn order keeps in
    Redis) is still running."""
    latest = await replay.redis.get(latest_turn_key(replay.namespace, conversation_id))
    if not latest:
        return False
    response_id = latest.decode() if isinstance(latest, bytes) else str(latest)
    frames = await replay.read_after(response_id, 0)
    if frames and is_terminal(frames[-1]):
        return False
    return not await replay.finished(response_id)
