"""Building the provider prompt from the conversation's stored messages (shared with the
gateway's token counts: parley_common.context.prompt)."""

from __future__ import annotations

from parley_common.context.prompt import build_prompt

__all__ = ["build_prompt"]
