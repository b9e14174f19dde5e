from parley.v1 import chat_pb2 as _chat_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MediaKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEDIA_KIND_UNSPECIFIED: _ClassVar[MediaKind]
    MEDIA_KIND_IMAGE: _ClassVar[MediaKind]
    MEDIA_KIND_VIDEO: _ClassVar[MediaKind]

class ImageDelivery(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_DELIVERY_UNSPECIFIED: _ClassVar[ImageDelivery]
    IMAGE_DELIVERY_INLINE: _ClassVar[ImageDelivery]
    IMAGE_DELIVERY_URL: _ClassVar[ImageDelivery]
MEDIA_KIND_UNSPECIFIED: MediaKind
MEDIA_KIND_IMAGE: MediaKind
MEDIA_KIND_VIDEO: MediaKind
IMAGE_DELIVERY_UNSPECIFIED: ImageDelivery
IMAGE_DELIVERY_INLINE: ImageDelivery
IMAGE_DELIVERY_URL: ImageDelivery

class UploadStart(_message.Message):
    __slots__ = ("user_id", "content_type", "filename", "declared_size")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    DECLARED_SIZE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    content_type: str
    filename: str
    declared_size: int
    def __init__(self, user_id: _Optional[str] = ..., content_type: _Optional[str] = ..., filename: _Optional[str] = ..., declared_size: _Optional[int] = ...) -> None: ...

class UploadChunk(_message.Message):
    __slots__ = ("start", "data")
    START_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    start: UploadStart
    data: bytes
    def __init__(self, start: _Optional[_Union[UploadStart, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Rendition(_message.Message):
    __slots__ = ("name", "url", "mime_type", "width", "height", "size_bytes", "at_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    url: str
    mime_type: str
    width: int
    height: int
    size_bytes: int
    at_ms: int
    def __init__(self, name: _Optional[str] = ..., url: _Optional[str] = ..., mime_type: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., size_bytes: _Optional[int] = ..., at_ms: _Optional[int] = ...) -> None: ...

class Media(_message.Message):
    __slots__ = ("id", "kind", "source_mime_type", "width", "height", "duration_ms", "frame_count", "source_size_bytes", "created_at_ms", "origin", "prompt", "renditions", "urls_expire_at_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SOURCE_MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    FRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    RENDITIONS_FIELD_NUMBER: _ClassVar[int]
    URLS_EXPIRE_AT_MS_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: MediaKind
    source_mime_type: str
    width: int
    height: int
    duration_ms: int
    frame_count: int
    source_size_bytes: int
    created_at_ms: int
    origin: str
    prompt: str
    renditions: _containers.RepeatedCompositeFieldContainer[Rendition]
    urls_expire_at_ms: int
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[MediaKind, str]] = ..., source_mime_type: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., duration_ms: _Optional[int] = ..., frame_count: _Optional[int] = ..., source_size_bytes: _Optional[int] = ..., created_at_ms: _Optional[int] = ..., origin: _Optional[str] = ..., prompt: _Optional[str] = ..., renditions: _Optional[_Iterable[_Union[Rendition, _Mapping]]] = ..., urls_expire_at_ms: _Optional[int] = ...) -> None: ...

class CreateUploadRequest(_message.Message):
    __slots__ = ("user_id", "content_type", "size_bytes", "filename")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    content_type: str
    size_bytes: int
    filename: str
    def __init__(self, user_id: _Optional[str] = ..., content_type: _Optional[str] = ..., size_bytes: _Optional[int] = ..., filename: _Optional[str] = ...) -> None: ...

class PendingUpload(_message.Message):
    __slots__ = ("media_id", "url", "method", "headers", "expires_at_ms", "max_bytes", "fields")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MEDIA_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    media_id: str
    url: str
    method: str
    headers: _containers.ScalarMap[str, str]
    expires_at_ms: int
    max_bytes: int
    fields: _containers.ScalarMap[str, str]
    def __init__(self, media_id: _Optional[str] = ..., url: _Optional[str] = ..., method: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ..., expires_at_ms: _Optional[int] = ..., max_bytes: _Optional[int] = ..., fields: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CompleteUploadRequest(_message.Message):
    __slots__ = ("user_id", "media_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    MEDIA_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    media_id: str
    def __init__(self, user_id: _Optional[str] = ..., media_id: _Optional[str] = ...) -> None: ...

class GetMediaRequest(_message.Message):
    __slots__ = ("user_id", "media_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    MEDIA_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    media_id: str
    def __init__(self, user_id: _Optional[str] = ..., media_id: _Optional[str] = ...) -> None: ...

class DeleteMediaRequest(_message.Message):
    __slots__ = ("user_id", "media_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    MEDIA_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    media_id: str
    def __init__(self, user_id: _Optional[str] = ..., media_id: _Optional[str] = ...) -> None: ...

class DeleteMediaResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CheckMediaRequest(_message.Message):
    __slots__ = ("user_id", "media_ids")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    MEDIA_IDS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    media_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user_id: _Optional[str] = ..., media_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CheckMediaResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResolveImagesRequest(_message.Message):
    __slots__ = ("user_id", "media_ids", "detail", "delivery")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    MEDIA_IDS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    media_ids: _containers.RepeatedScalarFieldContainer[str]
    detail: str
    delivery: ImageDelivery
    def __init__(self, user_id: _Optional[str] = ..., media_ids: _Optional[_Iterable[str]] = ..., detail: _Optional[str] = ..., delivery: _Optional[_Union[ImageDelivery, str]] = ...) -> None: ...

class ResolveImagesResponse(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[_chat_pb2.ImagePart]
    def __init__(self, images: _Optional[_Iterable[_Union[_chat_pb2.ImagePart, _Mapping]]] = ...) -> None: ...

class GenerateImageRequest(_message.Message):
    __slots__ = ("user_id", "prompt", "size", "idempotency_key", "include_data")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_DATA_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    prompt: str
    size: str
    idempotency_key: str
    include_data: bool
    def __init__(self, user_id: _Optional[str] = ..., prompt: _Optional[str] = ..., size: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., include_data: _Optional[bool] = ...) -> None: ...

class GeneratedImage(_message.Message):
    __slots__ = ("media", "generator", "revised_prompt", "data", "mime_type")
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_FIELD_NUMBER: _ClassVar[int]
    REVISED_PROMPT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    media: Media
    generator: str
    revised_prompt: str
    data: bytes
    mime_type: str
    def __init__(self, media: _Optional[_Union[Media, _Mapping]] = ..., generator: _Optional[str] = ..., revised_prompt: _Optional[str] = ..., data: _Optional[bytes] = ..., mime_type: _Optional[str] = ...) -> None: ...
