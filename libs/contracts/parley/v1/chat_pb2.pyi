from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResponseStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESPONSE_STATUS_UNSPECIFIED: _ClassVar[ResponseStatus]
    RESPONSE_STATUS_COMPLETED: _ClassVar[ResponseStatus]
    RESPONSE_STATUS_INTERRUPTED: _ClassVar[ResponseStatus]
    RESPONSE_STATUS_FAILED: _ClassVar[ResponseStatus]
RESPONSE_STATUS_UNSPECIFIED: ResponseStatus
RESPONSE_STATUS_COMPLETED: ResponseStatus
RESPONSE_STATUS_INTERRUPTED: ResponseStatus
RESPONSE_STATUS_FAILED: ResponseStatus

class ImagePart(_message.Message):
    __slots__ = ("media_id", "url", "data", "mime_type", "detail", "width", "height")
    MEDIA_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    media_id: str
    url: str
    data: bytes
    mime_type: str
    detail: str
    width: int
    height: int
    def __init__(self, media_id: _Optional[str] = ..., url: _Optional[str] = ..., data: _Optional[bytes] = ..., mime_type: _Optional[str] = ..., detail: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class PromptMessage(_message.Message):
    __slots__ = ("role", "content", "images")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    images: _containers.RepeatedCompositeFieldContainer[ImagePart]
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ..., images: _Optional[_Iterable[_Union[ImagePart, _Mapping]]] = ...) -> None: ...

class ModelTarget(_message.Message):
    __slots__ = ("model", "provider", "upstream_model")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    provider: str
    upstream_model: str
    def __init__(self, model: _Optional[str] = ..., provider: _Optional[str] = ..., upstream_model: _Optional[str] = ...) -> None: ...

class ChatRequest(_message.Message):
    __slots__ = ("version", "response_id", "user_id", "conversation_id", "client_message_id", "content", "model", "reply_to", "created_at_ms", "max_output_tokens", "on_busy", "inline_messages", "temperature", "has_temperature", "media_ids", "image_detail", "regenerate_message_id", "edit_message_id", "continue_message_id")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ON_BUSY_FIELD_NUMBER: _ClassVar[int]
    INLINE_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    HAS_TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_IDS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DETAIL_FIELD_NUMBER: _ClassVar[int]
    REGENERATE_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    EDIT_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CONTINUE_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    version: int
    response_id: str
    user_id: str
    conversation_id: str
    client_message_id: str
    content: str
    model: str
    reply_to: str
    created_at_ms: int
    max_output_tokens: int
    on_busy: str
    inline_messages: _containers.RepeatedCompositeFieldContainer[PromptMessage]
    temperature: float
    has_temperature: bool
    media_ids: _containers.RepeatedScalarFieldContainer[str]
    image_detail: str
    regenerate_message_id: str
    edit_message_id: str
    continue_message_id: str
    def __init__(self, version: _Optional[int] = ..., response_id: _Optional[str] = ..., user_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., client_message_id: _Optional[str] = ..., content: _Optional[str] = ..., model: _Optional[str] = ..., reply_to: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., max_output_tokens: _Optional[int] = ..., on_busy: _Optional[str] = ..., inline_messages: _Optional[_Iterable[_Union[PromptMessage, _Mapping]]] = ..., temperature: _Optional[float] = ..., has_temperature: _Optional[bool] = ..., media_ids: _Optional[_Iterable[str]] = ..., image_detail: _Optional[str] = ..., regenerate_message_id: _Optional[str] = ..., edit_message_id: _Optional[str] = ..., continue_message_id: _Optional[str] = ...) -> None: ...

class ProviderJob(_message.Message):
    __slots__ = ("version", "response_id", "user_id", "conversation_id", "user_message_id", "model", "provider", "upstream_model", "messages", "max_output_tokens", "temperature", "reply_to", "created_at_ms", "fallbacks", "fallback_from", "attempt", "dropped_messages", "truncated_messages", "has_temperature", "continue_from")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_MODEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FROM_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    HAS_TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    CONTINUE_FROM_FIELD_NUMBER: _ClassVar[int]
    version: int
    response_id: str
    user_id: str
    conversation_id: str
    user_message_id: str
    model: str
    provider: str
    upstream_model: str
    messages: _containers.RepeatedCompositeFieldContainer[PromptMessage]
    max_output_tokens: int
    temperature: float
    reply_to: str
    created_at_ms: int
    fallbacks: _containers.RepeatedCompositeFieldContainer[ModelTarget]
    fallback_from: str
    attempt: int
    dropped_messages: int
    truncated_messages: int
    has_temperature: bool
    continue_from: str
    def __init__(self, version: _Optional[int] = ..., response_id: _Optional[str] = ..., user_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., user_message_id: _Optional[str] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., upstream_model: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[PromptMessage, _Mapping]]] = ..., max_output_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., reply_to: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., fallbacks: _Optional[_Iterable[_Union[ModelTarget, _Mapping]]] = ..., fallback_from: _Optional[str] = ..., attempt: _Optional[int] = ..., dropped_messages: _Optional[int] = ..., truncated_messages: _Optional[int] = ..., has_temperature: _Optional[bool] = ..., continue_from: _Optional[str] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("input_tokens", "output_tokens", "cost_micros")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    cost_micros: int
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cost_micros: _Optional[int] = ...) -> None: ...

class StreamMeta(_message.Message):
    __slots__ = ("model", "user_message_id", "fallback_from", "provider", "dropped_messages", "cached", "truncated_messages")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USER_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FROM_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    DROPPED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    model: str
    user_message_id: str
    fallback_from: str
    provider: str
    dropped_messages: int
    cached: bool
    truncated_messages: int
    def __init__(self, model: _Optional[str] = ..., user_message_id: _Optional[str] = ..., fallback_from: _Optional[str] = ..., provider: _Optional[str] = ..., dropped_messages: _Optional[int] = ..., cached: _Optional[bool] = ..., truncated_messages: _Optional[int] = ...) -> None: ...

class StreamQueued(_message.Message):
    __slots__ = ("position", "estimated_wait_ms")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    position: int
    estimated_wait_ms: int
    def __init__(self, position: _Optional[int] = ..., estimated_wait_ms: _Optional[int] = ...) -> None: ...

class StreamImage(_message.Message):
    __slots__ = ("media_id", "url", "mime_type", "width", "height")
    MEDIA_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    media_id: str
    url: str
    mime_type: str
    width: int
    height: int
    def __init__(self, media_id: _Optional[str] = ..., url: _Optional[str] = ..., mime_type: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class StreamDelta(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class StreamDone(_message.Message):
    __slots__ = ("finish_reason",)
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    finish_reason: str
    def __init__(self, finish_reason: _Optional[str] = ...) -> None: ...

class StreamError(_message.Message):
    __slots__ = ("code", "message", "retryable")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    retryable: bool
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., retryable: _Optional[bool] = ...) -> None: ...

class StreamEvent(_message.Message):
    __slots__ = ("response_id", "conversation_id", "seq", "meta", "delta", "usage", "done", "error", "queued", "image")
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    response_id: str
    conversation_id: str
    seq: int
    meta: StreamMeta
    delta: StreamDelta
    usage: Usage
    done: StreamDone
    error: StreamError
    queued: StreamQueued
    image: StreamImage
    def __init__(self, response_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., seq: _Optional[int] = ..., meta: _Optional[_Union[StreamMeta, _Mapping]] = ..., delta: _Optional[_Union[StreamDelta, _Mapping]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., done: _Optional[_Union[StreamDone, _Mapping]] = ..., error: _Optional[_Union[StreamError, _Mapping]] = ..., queued: _Optional[_Union[StreamQueued, _Mapping]] = ..., image: _Optional[_Union[StreamImage, _Mapping]] = ...) -> None: ...

class CancelResponse(_message.Message):
    __slots__ = ("version", "response_id", "user_id", "reason")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    version: int
    response_id: str
    user_id: str
    reason: str
    def __init__(self, version: _Optional[int] = ..., response_id: _Optional[str] = ..., user_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ResponseCompleted(_message.Message):
    __slots__ = ("version", "response_id", "user_id", "conversation_id", "user_message_id", "model", "content", "status", "usage", "finish_reason", "completed_at_ms")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    version: int
    response_id: str
    user_id: str
    conversation_id: str
    user_message_id: str
    model: str
    content: str
    status: ResponseStatus
    usage: Usage
    finish_reason: str
    completed_at_ms: int
    def __init__(self, version: _Optional[int] = ..., response_id: _Optional[str] = ..., user_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., user_message_id: _Optional[str] = ..., model: _Optional[str] = ..., content: _Optional[str] = ..., status: _Optional[_Union[ResponseStatus, str]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., finish_reason: _Optional[str] = ..., completed_at_ms: _Optional[int] = ...) -> None: ...
