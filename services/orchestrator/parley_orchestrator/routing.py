"""Which model serves a request, and the chain it falls back along."""

from __future__ import annotations

from dataclasses import dataclass

from parley.v1 import chat_pb2
from parley_common.budgets.providers import BudgetLimits
from parley_common.errors import InvalidRequest
from parley_common.models import ModelConfig, ModelRegistry


@dataclass(frozen=True)
class Route:
    model: str
    spec: ModelConfig
    fallbacks: list[chat_pb2.ModelTarget]

    @property
    def limits(self) -> BudgetLimits:
        return BudgetLimits(self.spec.requests_per_minute, self.spec.tokens_per_minute)


class ModelRouter:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def route(self, name: str) -> Route:
        """The model that serves a request (its context plan's: the one named, else the one
        routing picked for the prompt, parley_common.context.model_choice), with its chain."""
        spec = self.registry.models.get(name)
        if spec is None:
            raise InvalidRequest(f"unknown model {name!r}", code="unknown_model")
        fallbacks = [
            chat_pb2.ModelTarget(
                model=f,
                provider=self.registry.models[f].provider,
                upstream_model=self.registry.models[f].upstream_model,
            )
            for f in self.registry.chain(name)[1:]
        ]
        return Route(name, spec, fallbacks)
