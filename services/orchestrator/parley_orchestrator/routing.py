"""Which model and provider serve a request."""

from __future__ import annotations

from dataclasses import dataclass

from parley_common.errors import InvalidRequest

from .settings import ModelSpec


@dataclass(frozen=True)
class Route:
    model: str
    spec: ModelSpec


class ModelRouter:
    def __init__(self, models: dict[str, ModelSpec], default_model: str) -> None:
        if default_model not in models:
            raise ValueError(f"default model {default_model!r} is not among the configured models")
        self.models = models
        self.default_model = default_model

    def route(self, requested: str) -> Route:
        name = requested or self.default_model
        spec = self.models.get(name)
        if spec is None:
            raise InvalidRequest(f"unknown model {name!r}", code="unknown_model")
        return Route(name, spec)
