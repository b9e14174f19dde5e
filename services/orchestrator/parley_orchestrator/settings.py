from __future__ import annotations

from pydantic import Field

from parley_common.settings import CommonSettings


class OrchestratorSettings(CommonSettings):
    history_grpc_target: str = "127.0.0.1:50051"
    system_prompt: str = Field(default="You are Parley, a helpful assistant.", max_length=20_000)
    # How many of the latest messages go into the prompt.
    prompt_history_messages: int = Field(default=40, ge=1, le=500)
    orchestrator_prefetch: int = Field(default=256, ge=1, le=5000)
    # A turn waits at most this long for the previous turn of its conversation to finish.
    turn_max_wait_s: float = Field(default=600.0, gt=0, le=3600)
