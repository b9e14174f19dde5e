"""GET /v1/models: what this deployment offers (the model registry), OpenAI's list format."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..deps import RATE_LIMITED, CurrentUser, RegistryDep

router = APIRouter(prefix="/v1", tags=["models"], dependencies=RATE_LIMITED)


@router.get("/models")
async def list_models(registry: RegistryDep, user: CurrentUser) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": model.provider,
                "context_window": model.context_window,
                "max_output_tokens": model.max_output_tokens,
                "default": name == registry.default_model,
            }
            for name, model in registry.models.items()
        ],
    }
