"""The model registry refuses what would fail a turn later: a per-model base_url on the demo
provider, or one that is not an http(s) URL."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from parley_common.models import ModelRegistry


def registry(**vllm: Any) -> dict[str, Any]:
    model = {
        "upstream_model": "m",
        "context_window": 8192,
        "max_output_tokens": 1024,
        "input_price_per_mtok": 0,
        "output_price_per_mtok": 0,
    }
    return {
        "default_model": "demo",
        "providers": {"demo": {"kind": "demo"}, "vllm": {"kind": "openai"}},
        "models": {"demo": {**model, "provider": "demo"}, "qwen": {**model, "provider": "vllm", **vllm}},
    }


def test_a_model_may_name_its_own_server() -> None:
    loaded = ModelRegistry.model_validate(registry(base_url="http://vllm-1.internal:8000/v1"))
    assert loaded.models["qwen"].base_url == "http://vllm-1.internal:8000/v1"
    assert loaded.models["demo"].base_url == ""


@pytest.mark.parametrize("url", ["ftp://x/v1", "vllm:8000", "http://a b/v1", "javascript:alert(1)"])
def test_a_base_url_must_be_http(url: str) -> None:
    with pytest.raises(ValidationError):
        ModelRegistry.model_validate(registry(base_url=url))


def test_the_demo_model_has_no_server() -> None:
    raw = registry()
    raw["models"]["demo"]["base_url"] = "http://x/v1"
    with pytest.raises(ValidationError, match="demo"):
        ModelRegistry.model_validate(raw)
