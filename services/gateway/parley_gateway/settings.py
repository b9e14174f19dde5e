from __future__ import annotations

import re
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator, model_validator

from parley_common.budgets.users import PlanSettings
from parley_common.context.assembly import PromptSettings

from .auth import configured_digest

# Host (a name, IPv4 or [IPv6]) and port: nothing that could end or extend a CSP directive.
_ORIGIN_CHARS = re.compile(r"[A-Za-z0-9.\-\[\]:]+")


class GatewaySettings(PlanSettings, PromptSettings):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # user id -> API key, JSON in PARLEY_API_KEYS. Each value is the key (at least 16
    # characters) or its digest `sha256:<64 hex>` (`python -m parley_gateway hash-key` prints
    # it), so production configuration can hold digests only. Keys are kept only as digests.
    api_keys: dict[str, SecretStr] = {}
    # The key of the user "dev" (what `make run` prints), or its digest.
    dev_api_key: SecretStr | None = None
    history_grpc_target: str = "127.0.0.1:50051"
    media_grpc_target: str = "127.0.0.1:50052"
    max_body_bytes: int = Field(default=1_000_000, ge=1024, le=100_000_000)
    # Direct uploads (POST /v1/media) may be this large; every other body keeps max_body_bytes.
    # The media service enforces its own PARLEY_MEDIA_MAX_UPLOAD_BYTES on the file itself.
    max_upload_bytes: int = Field(default=20_000_000, ge=1024, le=500_000_000)
    max_content_chars: int = Field(default=32_000, ge=1, le=1_000_000)
    # HTTP connections (http_protocol.py). A request's line and headers together, and any one
    # line of them, may be at most this large: past either the gateway answers 431 and closes
    # the connection as soon as the excess arrives, before any of it reaches the app.
    max_header_bytes: int = Field(default=32_768, ge=4096, le=1_048_576)
    max_header_line_bytes: int = Field(default=8192, ge=1024, le=1_048_576)
    # A request's headers must have arrived this long after its first byte (or after the
    # connection was opened); a body must keep coming: at least body_min_bytes_per_s on average
    # once its first body_read_timeout_s have passed. Otherwise 408 and the connection is closed.
    header_read_timeout_s: float = Field(default=20.0, ge=0.1, le=600)
    body_read_timeout_s: float = Field(default=20.0, ge=0.1, le=3600)
    body_min_bytes_per_s: int = Field(default=1000, ge=1, le=1_000_000_000)
    # Interactive API documentation at /docs and /redoc. Off by default: those pages load their
    # scripts from a public CDN, on the web client's origin. /openapi.json is always served.
    api_docs: bool = False
    # No frame from the backend for this long ends a stream with a retryable error.
    stream_idle_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    # A comment line this often keeps idle proxies from cutting the stream.
    heartbeat_s: float = Field(default=15.0, gt=0, le=300)
    shutdown_grace_s: float = Field(default=10.0, gt=0, le=600)
    # Answers one user may have generating at once (across all gateways).
    max_streams_per_user: int = Field(default=20, ge=1, le=10_000)
    # Requests one user may make per minute (across all gateways).
    requests_per_minute: int = Field(default=600, ge=1, le=1_000_000)
    # Browser origins allowed to call the API (CORS); empty = none.
    cors_origins: list[str] = []
    # Origins the web client may show images from (its Content-Security-Policy img-src), JSON:
    # the object store that media URLs are presigned for, i.e. the media service's
    # PARLEY_S3_PUBLIC_ENDPOINT, or its PARLEY_S3_ENDPOINT when that is unset.
    image_origins: list[str] = []
    # Deltas that arrive close together go out as one SSE event: after the first delta,
    # text is held at most this long, or until this many bytes are waiting.
    coalesce_ms: int = Field(default=20, ge=0, le=1000)
    coalesce_max_bytes: int = Field(default=4096, ge=1, le=1_000_000)
    # Event streams compressed (gzip or deflate) for clients whose Accept-Encoding allows it,
    # flushed frame by frame; false: always sent as they are.
    sse_compression: bool = True
    # Frames one live stream may buffer for a slow client; past that it reads from the replay log.
    live_buffer_frames: int = Field(default=512, ge=16, le=100_000)
    # How a prompt is assembled, for token counts before sending (POST /v1/tokens/count) and the
    # hold at admission (PARLEY_SYSTEM_PROMPT, …): PromptSettings, the orchestrator's own.
    # Per-user monthly limits (PARLEY_PLANS, PARLEY_USER_PLANS, PARLEY_DEFAULT_PLAN): PlanSettings.

    @field_validator("image_origins")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        origins = []
        for value in values:
            parsed = urlparse(value.strip())
            if (
                parsed.scheme not in ("http", "https")
                or not parsed.hostname
                or parsed.path not in ("", "/")
                or parsed.params
                or parsed.query
                or parsed.fragment
                or "@" in parsed.netloc
                or not _ORIGIN_CHARS.fullmatch(parsed.netloc)
            ):
                raise ValueError(f"{value!r} is not an origin like https://media.example.com or http://127.0.0.1:9000")
            origins.append(f"{parsed.scheme}://{parsed.netloc.lower()}")
        return origins

    @field_validator("api_keys")
    @classmethod
    def _key_forms(cls, keys: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for user, key in keys.items():
            try:
                configured_digest(key.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"the API key of user {user!r}: {exc}") from None
        return keys

    @field_validator("dev_api_key")
    @classmethod
    def _dev_key_form(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None:
            configured_digest(key.get_secret_value())
        return key

    @model_validator(mode="after")
    def _some_key(self) -> GatewaySettings:
        if not self.api_keys and self.dev_api_key is None:
            raise ValueError("no API key configured: set PARLEY_DEV_API_KEY or PARLEY_API_KEYS")
        users: dict[bytes, str] = {}
        for user, key in self.all_keys().items():
            digest = configured_digest(key.get_secret_value())
            if digest in users:
                raise ValueError(f"users {users[digest]!r} and {user!r} have the same API key")
            users[digest] = user
        return self

    @model_validator(mode="after")
    def _header_limits(self) -> GatewaySettings:
        if self.max_header_line_bytes > self.max_header_bytes:
            raise ValueError("PARLEY_MAX_HEADER_LINE_BYTES is larger than PARLEY_MAX_HEADER_BYTES")
        return self

    def all_keys(self) -> dict[str, SecretStr]:
        keys = dict(self.api_keys)
        if self.dev_api_key is not None:
            keys["dev"] = self.dev_api_key
        return keys
