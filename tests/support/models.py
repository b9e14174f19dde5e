"""Model registries (`PARLEY_MODELS_FILE`) for the stacks and settings under test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# A priced model's rates (US dollars per million tokens).
PRICES = {"input_price_per_mtok": 1.0, "output_price_per_mtok": 2.0}


def model(
    provider: str,
    upstream: str,
    *,
    context_window: int = 8192,
    max_output_tokens: int = 1024,
    input_price_per_mtok: float = 0,
    output_price_per_mtok: float = 0,
    **extra: Any,
) -> dict[str, Any]:
    """One model entry: free, with the demo model's window and output cap unless told."""
    return {
        "provider": provider,
        "upstream_model": upstream,
        "context_window": context_window,
        "max_output_tokens": max_output_tokens,
        "input_price_per_mtok": input_price_per_mtok,
        "output_price_per_mtok": output_price_per_mtok,
        **extra,
    }


def demo_model(**extra: Any) -> dict[str, Any]:
    """The embedded demo model's entry."""
    return model("demo", "parley-demo-1", **extra)


def write_models(workdir: Path, registry: dict[str, Any]) -> Path:
    """The registry written to `workdir/models.json` (JSON is YAML), for PARLEY_MODELS_FILE."""
    path = workdir / "models.json"
    path.write_text(json.dumps(registry))
    return path


def context_registry(fake_url: str) -> dict[str, Any]:
    """A wide and a small model on the fake provider server (OpenAI's format), and the demo."""

    def fake_model(upstream: str, window: int, max_output: int) -> dict[str, Any]:
        return model("openai", upstream, context_window=window, max_output_tokens=max_output)

    return {
        "default_model": "wide",
        "providers": {"demo": {"kind": "demo"}, "openai": {"kind": "openai", "base_url": f"{fake_url}/v1"}},
        "models": {
            "demo": demo_model(),
            "wide": fake_model("wide-test", 100_000, 2000),
            "small": fake_model("small-test", 1000, 200),
        },
    }
