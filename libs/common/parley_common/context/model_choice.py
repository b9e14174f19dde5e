"""Which model answers a request that names none.

With a `routing:` section in the registry, a simple query goes to the cheaper `routing.simple`
model and everything else to `routing.strong` (the default model unless named). A query is
simple when all of these hold — each is a sign that a small model answers it as well:

- its text is short: at most `routing.simple_max_chars` characters;
- the prompt carries no image;
- it shows no code: no ``` fence, no `inline code` with brackets or operators, no indented
  block, no line ending in `{`, `}` or `;`, no line starting with a keyword that starts code
  in common languages (def, class, import, #include, …), no SQL statement;
- the conversation is short: at most `routing.simple_max_history` earlier messages.

Without a `routing:` section (the default registry, only `demo`), every such request goes to
`default_model`. A request that names a model always gets that model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from parley.v1 import chat_pb2
from parley_common.models import ModelRegistry

_CODE = re.compile(
    r"```"
    r"|`[^`\n]*[(){};=<>][^`\n]*`"
    r"|^(?: {4}|\t)\S"
    r"|[{};]\s*$"
    r"|^\s*(?:def|class|import|from\s+\S+\s+import|function|const|let|var|public|private|#include|package|fn)\b"
    r"|\b(?:SELECT\s.+\sFROM|INSERT\s+INTO|CREATE\s+TABLE)\b",
    re.MULTILINE,
)


def looks_like_code(text: str) -> bool:
    return _CODE.search(text) is not None


def is_simple_query(messages: Sequence[chat_pb2.PromptMessage], *, max_chars: int, max_history: int) -> bool:
    """True when the prompt's last user message is a simple query (see the module doc)."""
    turns = [m for m in messages if m.role != "system"]
    if not turns or turns[-1].role != "user":
        return False
    query = turns[-1].content
    if len(query) > max_chars or any(m.images for m in messages):
        return False
    if looks_like_code(query):
        return False
    return len(turns) - 1 <= max_history


def choose_model(registry: ModelRegistry, requested: str, messages: Sequence[chat_pb2.PromptMessage]) -> str:
    """The public name of the model that serves this request (it may not exist if `requested` is wrong)."""
    if requested:
        return requested
    routing = registry.routing
    if routing is None:
        return registry.default_model
    if is_simple_query(messages, max_chars=routing.simple_max_chars, max_history=routing.simple_max_history):
        return routing.simple
    return routing.strong or registry.default_model


def candidate_models(registry: ModelRegistry, requested: str) -> list[str]:
    """The models `choose_model` may pick for a request naming `requested` ("" for none), before
    it sees the prompt; only those the registry knows."""
    if requested:
        names = [requested]
    elif registry.routing is not None:
        names = [registry.routing.simple, registry.routing.strong or registry.default_model]
    else:
        names = [registry.default_model]
    return [name for name in names if name in registry.models]


__all__ = ["candidate_models", "choose_model", "is_simple_query", "looks_like_code"]
