from __future__ import annotations

from pydantic import Field, SecretStr

from parley_common.budgets.providers import ProviderBudgetSettings


class WorkerSettings(ProviderBudgetSettings):
    # Every request sent to a provider with limits holds a place in its budget; a retry waits
    # for one like any request (PARLEY_BUDGET_MAX_WAIT_S, PARLEY_BUDGET_POLL_S).
    # Which providers' queues this worker consumes (workers scale per provider).
    worker_providers: list[str] = ["demo"]
    # How many streams one worker process serves at once.
    worker_prefetch: int = Field(default=100, ge=1, le=5000)
    # Provider name -> API key, JSON in PARLEY_PROVIDER_API_KEYS. Never logged.
    provider_api_keys: dict[str, SecretStr] = {}
    # How long a job stays claimed by a worker that stopped renewing it (a crashed worker):
    # its job is taken over after at most this long. Renewed every third of it, so the worker
    # that holds a job must not pause its event loop for as long.
    worker_lease_s: float = Field(default=1.5, gt=0.5, le=300)
    # After an answer's first token, tokens arriving within this window go out as one frame.
    worker_coalesce_ms: int = Field(default=15, ge=0, le=1000)
    demo_first_token_delay_ms: int = Field(default=250, ge=0, le=60_000)
    demo_tokens_per_s: float = Field(default=50.0, gt=0, le=100_000)
    # Retries before the first token reached the client (never after).
    provider_max_retries: int = Field(default=2, ge=0, le=10)
    provider_retry_base_s: float = Field(default=0.5, gt=0, le=60)
    provider_max_retry_after_s: float = Field(default=20.0, ge=0, le=600)
    # Timeouts of a provider call.
    provider_connect_timeout_s: float = Field(default=10.0, gt=0, le=300)
    provider_first_token_timeout_s: float = Field(default=60.0, gt=0, le=900)
    provider_idle_timeout_s: float = Field(default=30.0, gt=0, le=900)
    provider_total_timeout_s: float = Field(default=600.0, gt=0, le=3600)
