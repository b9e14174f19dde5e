from __future__ import annotations

from pydantic import BaseModel, Field

from parley_common.settings import CommonSettings


class ModelSpec(BaseModel):
    provider: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    upstream_model: str
    max_output_tokens: int = Field(default=1024, ge=1, le=200_000)


class OrchestratorSettings(CommonSettings):
    history_grpc_target: str = "127.0.0.1:50051"
    # Public model name -> where it runs. JSON in PARLEY_MODELS.
    models: dict[str, ModelSpec] = {"demo": ModelSpec(provider="demo", upstream_model="parley-demo-1")}
    default_model: str = "demo"
    system_prompt: str = Field(default="You are Parley, a helpful assistant.", max_length=20_000)
    # How many of the latest messages go into the prompt.
    prompt_history_messages: int = Field(default=40, ge=1, le=500)
    orchestrator_prefetch: int = Field(default=64, ge=1, le=1000)
