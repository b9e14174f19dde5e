"""What a turn may cost at most, as far as the gateway can tell before it publishes it: what it
holds of the user's monthly budget at admission (parley_common.budgets.users).

A message in a conversation: the system prompt and the message counted with the model's
tokenizer (the conversation's history is not known here), plus the longest answer allowed,
priced; an `/image` turn: the picture's price. A stateless (OpenAI-compatible) request: its
own messages. With no model named, the least among the models routing may pick: the estimate
never asks for more than the exact worst case, which the orchestrator holds instead once it
has assembled the prompt and picked the model.
"""

from __future__ import annotations

from dataclasses import dataclass

from parley.v1 import chat_pb2, history_pb2
from parley_common.context.image_prompts import image_prompt
from parley_common.context.prompt import build_prompt
from parley_common.context.window import plan_context_async
from parley_common.errors import ParleyError
from parley_common.models import ModelRegistry


@dataclass(frozen=True)
class TurnEstimates:
    registry: ModelRegistry
    system_prompt: str
    default_reserve: int  # output tokens when the request sets no max_output_tokens

    def candidates(self, requested: str) -> list[str]:
        """The models that may answer a request naming `requested` ("" for none)."""
        if requested:
            names = [requested]
        elif self.registry.routing is not None:
            routing = self.registry.routing
            names = [routing.simple, routing.strong or self.registry.default_model]
        else:
            names = [self.registry.default_model]
        return [name for name in names if name in self.registry.models]

    async def worst_case(self, request: chat_pb2.ChatRequest) -> tuple[int, int]:
        """(tokens, cost in micro-dollars) the turn may use at most, as far as is known here."""
        if request.conversation_id and image_prompt(request.content) is not None:
            return 0, self.registry.images.cost_micros()
        if request.conversation_id:
            prompt = build_prompt(self.system_prompt, [history_pb2.Message(role="user", content=request.content)])
        else:
            prompt = list(request.inline_messages)
        found: list[tuple[int, int]] = []
        for model in self.candidates(request.model):
            try:
                plan = await plan_context_async(
                    self.registry,
                    model,
                    prompt,
                    requested_max_output=request.max_output_tokens,
                    default_reserve=self.default_reserve,
                )
            except ParleyError:
                continue  # it cannot be answered as it is: the orchestrator says why
            found.append((plan.reserved_tokens(), plan.spec.cost_micros(plan.fit.input_tokens, plan.max_output_tokens)))
        if not found:
            return 0, 0
        return min(tokens for tokens, _ in found), min(cost for _, cost in found)


__all__ = ["TurnEstimates"]
