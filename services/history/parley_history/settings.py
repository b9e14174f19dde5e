from __future__ import annotations

from pathlib import Path

from pydantic import Field

from parley_common.settings import CommonSettings


class HistorySettings(CommonSettings):
    history_grpc_host: str = "127.0.0.1"
    history_grpc_port: int = Field(default=50051, ge=0, le=65535)
    history_sqlite_path: Path = Path("var/history.sqlite3")
    # FULL: a commit is on disk before the broker message that caused it is acked.
    history_sqlite_synchronous: str = Field(default="FULL", pattern="^(FULL|NORMAL)$")
    # How many completion events are handled at once.
    history_prefetch: int = Field(default=32, ge=1, le=1000)
