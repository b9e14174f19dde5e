from __future__ import annotations

from pydantic import Field

from parley_common.settings import CommonSettings


class WorkerSettings(CommonSettings):
    # Which providers' queues this worker consumes (workers scale per provider).
    worker_providers: list[str] = ["demo"]
    # How many streams one worker process serves at once.
    worker_prefetch: int = Field(default=100, ge=1, le=5000)
    demo_first_token_delay_ms: int = Field(default=250, ge=0, le=60_000)
    demo_tokens_per_s: float = Field(default=50.0, gt=0, le=100_000)
