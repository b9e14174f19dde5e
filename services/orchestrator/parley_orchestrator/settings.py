from __future__ import annotations

from typing import Literal

from pydantic import Field

from parley_common.budgets.providers import ProviderBudgetSettings
from parley_common.budgets.users import PlanSettings
from parley_common.context.assembly import PromptSettings


class OrchestratorSettings(PlanSettings, ProviderBudgetSettings, PromptSettings):
    history_grpc_target: str = "127.0.0.1:50051"
    # The prompt (PARLEY_SYSTEM_PROMPT, PARLEY_PROMPT_HISTORY_MESSAGES,
    # PARLEY_RESERVED_OUTPUT_TOKENS): PromptSettings, the same as the gateway's.
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
