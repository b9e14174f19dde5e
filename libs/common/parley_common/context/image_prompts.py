"""Which chat messages ask for a picture (see the orchestrator's image_turns): the gateway
prices such a turn before admitting it, the orchestrator draws it.

A message asks for a picture when it starts (any case, after leading spaces) with one of:

    /image <prompt>     /imagine <prompt>     draw <prompt>
    generate|create|make an image|a picture of <prompt>
"""

from __future__ import annotations

import re

_ASKS_FOR_IMAGE = re.compile(
    r"^\s*(?:/image|/imagine|draw|(?:generate|create|make)\s+(?:an?\s+)?(?:image|picture)\s+of)"
    r"\s+(?P<prompt>\S.*)$",
    re.IGNORECASE | re.DOTALL,
)


def image_prompt(content: str) -> str | None:
    """The picture a message asks for, or None when it asks for none."""
    match = _ASKS_FOR_IMAGE.match(content)
    return match.group("prompt").strip() if match else None


__all__ = ["image_prompt"]
