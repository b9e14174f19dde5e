"""What a turn may cost at most, as far as the gateway can tell before it publishes it: what it
holds of the user's monthly budget at admission (parley_common.budgets.users).

A message in a conversation: the system prompt and the message counted with the model's
tokenizer (the conversation's history is not known here), plus the longest answer allowed,
priced; an `/image` turn: the picture's price. A stateless (OpenAI-compatible) request: its
own messages. With no model named, the least among the models routing may pick: the estimate
never asks for more than the exact worst case, which the orchestrator holds instead once it
has assembled the prompt and picked the model. Both assemble with parley_common.context.assembly.
"""

from __future__ import annotations

from dataclasses import dataclass

from parley.v1 import chat_pb2, history_pb2
from parley_common.context.assembly import ContextSource, PromptSettings, assemble_context
from parley_common.context.image_prompts import image_prompt
from parley_common.context.model_choice import candidate_models
from parley_common.errors import ParleyError
from parley_common.models import ModelRegistry


@dataclass(frozen=True)
class TurnEstimates:
    registry: ModelRegistry
    settings: PromptSettings

    async def worst_case(self, request: chat_pb2.ChatRequest) -> tuple[int, int]:
        """(tokens, cost in micro-dollars) the turn may use at most, as far as is known here."""
        if request.conversation_id and image_prompt(request.content) is not None:
            return 0, self.registry.images.cost_micros()
        if request.conversation_id:
            draft = history_pb2.Message(role="user", content=request.content)
            source = ContextSource.conversation([draft], complete=True)
        else:
            source = ContextSource.messages(request.inline_messages)
        found: list[tuple[int, int]] = []
        for model in candidate_models(self.registry, request.model):
            try:
                plan = await assemble_context(
                    self.registry, self.settings, source, model=model, max_output_tokens=request.max_output_tokens
                )
            except ParleyError:
                continue  # it cannot be answered as it is: the orchestrator says why
            found.append((plan.reserved_tokens(), plan.spec.cost_micros(plan.fit.input_tokens, plan.max_output_tokens)))
        if not found:
            return 0, 0
        return min(tokens for tokens, _ in found), min(cost for _, cost in found)


__all__ = ["TurnEstimates"]
