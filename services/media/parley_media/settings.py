from __future__ import annotations

from pydantic import Field

from parley_common.settings import CommonSettings


class MediaSettings(CommonSettings):
    media_grpc_host: str = "127.0.0.1"
    media_grpc_port: int = Field(default=50052, ge=0, le=65535)
