from __future__ import annotations

from typing import Literal

from pydantic import Field

from parley_common.budgets.providers import ProviderBudgetSettings
from parley_common.budgets.users import PlanSettings
from parley_common.context.prompt import (
    DEFAULT_HISTORY_MESSAGES,
    DEFAULT_RESERVED_OUTPUT_TOKENS,
    DEFAULT_SYSTEM_PROMPT,
    MAX_CONTEXT_MESSAGES,
)


class OrchestratorSettings(PlanSettings, ProviderBudgetSettings):
    history_grpc_target: str = "127.0.0.1:50051"
    system_prompt: str = Field(default=DEFAULT_SYSTEM_PROMPT, max_length=20_000)
    # The most stored messages a prompt starts from: the newest ones until the model's context
    # window less the output reserve is full, at most this many (trimming may keep fewer).
    prompt_history_messages: int = Field(default=DEFAULT_HISTORY_MESSAGES, ge=1, le=MAX_CONTEXT_MESSAGES)
    # Tokens kept free for the answer when the client sets no max_output_tokens (capped at the
    # model's maximum); the prompt gets the rest of the context window.
    reserved_output_tokens: int = Field(default=DEFAULT_RESERVED_OUTPUT_TOKENS, ge=1, le=1_000_000)
    orchestrator_prefetch: int = Field(default=256, ge=1, le=5000)
    # A turn waits at most this long for the previous turn of its conversation to finish.
    turn_max_wait_s: float = Field(default=600.0, gt=0, le=3600)
    # The provider budget's wait (PARLEY_BUDGET_MAX_WAIT_S, PARLEY_BUDGET_POLL_S):
    # ProviderBudgetSettings. The users' plans (PARLEY_PLANS, …), for each turn's exact worst
    # case: PlanSettings, the same as the gateway's.
    # Deterministic answers (temperature 0) are served from the cache for this long; 0 turns it off.
    response_cache_ttl_s: int = Field(default=3600, ge=0, le=30 * 24 * 3600)
    # The media service, which resolves a message's media ids into images.
    media_grpc_target: str = "127.0.0.1:50052"
    # inline: the image bytes travel with the job (works with private object storage and every
    # provider); url: a presigned URL the provider fetches (object storage must be reachable
    # from the provider's side, i.e. PARLEY_S3_PUBLIC_ENDPOINT is public).
    media_prompt_delivery: Literal["inline", "url"] = "inline"
