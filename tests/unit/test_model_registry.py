"""The model registry refuses what would fail a turn later: a per-model base_url on the demo
provider, or one that is not an http(s) URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from parley_common.models import ModelRegistry
from tests.support.models import model


def registry(**vllm: Any) -> dict[str, Any]:
    return {
        "default_model": "demo",
        "providers": {"demo": {"kind": "demo"}, "vllm": {"kind": "openai"}},
        "models": {"demo": model("demo", "m"), "qwen": model("vllm", "m", **vllm)},
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


def test_a_model_says_which_temperature_it_takes_and_which_output_limit_field() -> None:
    loaded = ModelRegistry.model_validate(registry())
    qwen = loaded.models["qwen"]
    # Nothing set: no temperature is sent unless the user sets one, and the output limit goes
    # in `max_tokens`, the field vLLM, Ollama and llama.cpp's server document.
    assert (qwen.temperature, qwen.accepts_temperature, qwen.max_tokens_field) == (None, True, "max_tokens")
    assert qwen.temperature_to_send(None) is None and qwen.temperature_to_send(0.0) == 0.0
    tuned = ModelRegistry.model_validate(registry(temperature=0.3)).models["qwen"]
    assert tuned.temperature_to_send(None) == 0.3 and tuned.temperature_to_send(0.9) == 0.9
    reasoning = ModelRegistry.model_validate(
        registry(accepts_temperature=False, max_tokens_field="max_completion_tokens")
    ).models["qwen"]
    assert reasoning.temperature_to_send(0.0) is None and reasoning.max_tokens_field == "max_completion_tokens"


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"temperature": 2.5}, "less than or equal to 2"),
        ({"temperature": -1}, "greater than or equal to 0"),
        ({"accepts_temperature": False, "temperature": 0.5}, "accepts_temperature"),
        ({"max_tokens_field": "max_new_tokens"}, "max_tokens_field"),
    ],
)
def test_sampling_options_that_cannot_work_are_refused(options: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        ModelRegistry.model_validate(registry(**options))


def test_only_an_openai_compatible_model_names_its_output_limit_field() -> None:
    raw = registry()
    raw["providers"]["claude"] = {"kind": "anthropic", "base_url": "https://api.anthropic.com"}
    raw["models"]["sonnet"] = {**raw["models"]["qwen"], "provider": "claude", "max_tokens_field": "max_tokens"}
    with pytest.raises(ValidationError, match="max_tokens_field"):
        ModelRegistry.model_validate(raw)


def test_generated_images_have_a_price_per_size() -> None:
    loaded = ModelRegistry.model_validate(
        {**registry(), "images": {"price_per_image": 0.04, "size_prices": {"1024x1536": 0.06}}}
    )
    assert loaded.images.cost_micros() == 40_000, "the default size"
    assert loaded.images.cost_micros("auto") == 40_000 and loaded.images.cost_micros("512x512", 3) == 120_000
    assert loaded.images.cost_micros("1024x1536", 2) == 120_000
    assert ModelRegistry.model_validate(registry()).images.cost_micros("1024x1024", 4) == 0, "unpriced: free"


@pytest.mark.parametrize(
    "images",
    [
        {"price_per_image": -0.01},
        {"price_per_image": "free"},
        {"price_per_image": 0.04, "size_prices": {"1024x1536": -1}},
        {"price_per_image": 0.04, "size_prices": {"big": 0.1}},
        {"price_per_image": 0.04, "size_prices": {"4096x4096": 0.1}},
        {"price_per_image": 0.04, "per_image": 0.04},
    ],
)
def test_an_image_price_must_be_valid(images: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ModelRegistry.model_validate({**registry(), "images": images})


def test_the_configs_price_images() -> None:
    root = Path(__file__).resolve().parents[2]
    example = ModelRegistry.load(root / "config" / "models.example.yaml")
    assert example.images.cost_micros() > 0 and example.images.size_prices, "the example shows real prices"
    for demo in ("config/models.yaml", "deploy/k8s/base/config/models.yaml"):
        assert "price_per_image" in ModelRegistry.load(root / demo).images.model_fields_set
