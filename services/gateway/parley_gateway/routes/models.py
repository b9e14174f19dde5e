"""GET /v1/models: what this deployment offers (the model registry), OpenAI's list format."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from parley_common.models import ModelRegistry

from ..auth import current_user

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models")
async def list_models(request: Request, user: Annotated[str, Depends(current_user)]) -> dict[str, Any]:
    registry: ModelRegistry = request.app.state.registry
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
