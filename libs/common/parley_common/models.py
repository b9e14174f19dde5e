"""The model registry (config/models.yaml): public model name -> provider, limits, prices, fallbacks.

Every service loads the same file; it is validated at start-up, so a typo in a fallback
chain or a provider name stops the service with a clear message instead of failing a turn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

NAME = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"


class ProviderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["demo", "openai", "anthropic", "gemini"]
    base_url: str = ""
    # Whether the provider can go on from a partial answer (ProviderJob.continue_from), see
    # `can_continue`. None: what the kind's API documents. For an OpenAI-compatible server
    # that supports continuing the final message (vLLM's `continue_final_message` with
    # `add_generation_prompt: false`) set it true; OpenAI's own API cannot.
    continue_final_message: bool | None = None

    @property
    def can_continue(self) -> bool:
        """Whether this provider can continue a partial answer: Anthropic (the partial answer as
        the last assistant turn, docs.anthropic.com "Prefill Claude's response") and the demo
        provider always; an OpenAI-compatible server only when `continue_final_message: true`
        (vLLM); OpenAI's own Chat Completions and Gemini document no way to, unless the entry
        says so (the fake provider server continues every format)."""
        if self.continue_final_message is not None:
            return self.continue_final_message
        return self.kind in ("anthropic", "demo")


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    provider: str
    upstream_model: str = Field(min_length=1)
    context_window: int = Field(ge=256, le=10_000_000)
    max_output_tokens: int = Field(ge=1, le=1_000_000)
    input_price_per_mtok: float = Field(ge=0)
    output_price_per_mtok: float = Field(ge=0)
    tokenizer: str = "cl100k_base"
    fallbacks: tuple[str, ...] = ()
    # The provider's rate limits for this model, shared by every orchestrator replica; a
    # request over them waits its turn. None: no limit.
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    # Where this model is served, when not at its provider's base_url: e.g. several vLLM or
    # llama.cpp servers, one model each, behind one OpenAI-compatible provider entry.
    base_url: str = Field(default="", max_length=2048, pattern=r"^(https?://\S+)?$")
    # The temperature sent when the user sets none; None: the field is left out and the
    # provider uses its own default.
    temperature: float | None = Field(default=None, ge=0, le=2)
    # False for models that refuse the field (OpenAI's reasoning models answer 400
    # "Unsupported parameter: 'temperature'"): no temperature is ever sent to them, the
    # user's included (a request may fall back to such a model, so it is not refused), and
    # their answers are never treated as deterministic by the response cache.
    accepts_temperature: bool = True
    # OpenAI-compatible providers only: the request field of the output limit. `max_tokens`
    # is what vLLM, Ollama and llama.cpp's server document; OpenAI's own API wants
    # `max_completion_tokens` (its reasoning models refuse `max_tokens`).
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    # Whether this model can go on from a partial answer, when it differs from its provider's
    # `continue_final_message` (e.g. an Anthropic model that refuses a prefilled assistant
    # turn); None: as its provider. See ModelRegistry.can_continue.
    continue_final_message: bool | None = None

    @model_validator(mode="after")
    def _sampling(self) -> ModelConfig:
        if not self.accepts_temperature and self.temperature is not None:
            raise ValueError("a model with accepts_temperature: false cannot set a temperature")
        return self

    def temperature_to_send(self, requested: float | None) -> float | None:
        """The temperature this model's request carries when the user asked for `requested`
        (None: they did not say): theirs, else the registry's default, else None (the field is
        left out); always None for a model that refuses the field."""
        if not self.accepts_temperature:
            return None
        return requested if requested is not None else self.temperature

    def cost_micros(self, input_tokens: int, output_tokens: int) -> int:
        """Cost in micro-dollars: prices are dollars per million tokens, so 1 token = price micro-dollars."""
        return round(input_tokens * self.input_price_per_mtok + output_tokens * self.output_price_per_mtok)


IMAGE_SIZE = r"^[0-9]{2,4}x[0-9]{2,4}$"


class ImagePricing(BaseModel):
    """What one generated image costs, in US dollars: `price_per_image` for the default size
    (a request that names none, and every chat `/image` turn) and for any size not listed,
    `size_prices` for the sizes whose price differs ("WxH", 64..2048 px a side)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    price_per_image: float = Field(default=0, ge=0, le=1000)
    size_prices: dict[str, float] = {}

    @model_validator(mode="after")
    def _sizes(self) -> ImagePricing:
        import re

        for size, price in self.size_prices.items():
            if not re.match(IMAGE_SIZE, size) or not all(64 <= int(side) <= 2048 for side in size.split("x")):
                raise ValueError(f"images.size_prices: {size!r} is not a size WxH of 64..2048 px a side")
            if not 0 <= price <= 1000:
                raise ValueError(f"images.size_prices[{size!r}]: {price} is not a price between 0 and 1000 dollars")
        return self

    def cost_micros(self, size: str = "", count: int = 1) -> int:
        """Cost in micro-dollars of `count` images of `size` ("" or "auto": the default size)."""
        price = self.size_prices.get(size, self.price_per_image)
        return round(price * 1_000_000) * count


class RoutingConfig(BaseModel):
    """Which model answers when the client names none: `simple` for a short, plain question
    in a short conversation (see parley_common.context.model_choice), `strong` for everything else."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    simple: str
    strong: str | None = None  # default: the registry's default_model
    # A simple query: the message has at most this many characters, no code, no image…
    simple_max_chars: int = Field(default=400, ge=1, le=100_000)
    # … and at most this many earlier messages in the conversation.
    simple_max_history: int = Field(default=6, ge=0, le=1000)


class ModelRegistry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    default_model: str
    providers: dict[str, ProviderConfig]
    models: dict[str, ModelConfig]
    # Without it, a request that names no model goes to default_model.
    routing: RoutingConfig | None = None
    # What generated images cost (charged against the user's monthly cost budget); absent: 0.
    images: ImagePricing = ImagePricing()

    @model_validator(mode="after")
    def _consistent(self) -> ModelRegistry:
        import re

        for name, model in self.models.items():
            if not re.match(NAME, name):
                raise ValueError(f"model name {name!r} is not allowed")
            if model.provider not in self.providers:
                raise ValueError(f"model {name!r} names unknown provider {model.provider!r}")
            if model.base_url and self.providers[model.provider].kind == "demo":
                raise ValueError(f"model {name!r} sets a base_url, but its provider is the demo model")
            if "max_tokens_field" in model.model_fields_set and self.providers[model.provider].kind != "openai":
                raise ValueError(f"model {name!r} sets max_tokens_field, but its provider is not OpenAI-compatible")
            for fallback in model.fallbacks:
                if fallback not in self.models or fallback == name:
                    raise ValueError(f"model {name!r} falls back to unknown model {fallback!r}")
        if self.default_model not in self.models:
            raise ValueError(f"default_model {self.default_model!r} is not among the models")
        if self.routing is not None:
            named: list[tuple[str, str | None]] = [("simple", self.routing.simple), ("strong", self.routing.strong)]
            for role, target in named:
                if target is not None and target not in self.models:
                    raise ValueError(f"routing.{role} names unknown model {target!r}")
        return self

    @classmethod
    def load(cls, path: Path) -> ModelRegistry:
        """Read and validate a registry file; raises ValueError with a readable reason."""
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read model registry {path}: {exc}") from None
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ValueError(f"invalid model registry {path}: {exc}") from None

    def can_continue(self, model: str) -> bool:
        """Whether `model`'s provider can go on from a partial answer, so that an interrupted or
        length-stopped answer can be continued (POST .../messages/{id}/continue; a job with
        `ProviderJob.continue_from` set) and an answer whose worker died is taken over by
        another worker instead of ending `interrupted`. False for an unknown model.
        See ProviderConfig.can_continue for which providers can."""
        spec = self.models.get(model)
        if spec is None:
            return False
        if spec.continue_final_message is not None:
            return spec.continue_final_message
        return self.providers[spec.provider].can_continue

    def chain(self, name: str) -> list[str]:
        """The model and its fallbacks, in order, each once (fallbacks of fallbacks included)."""
        order: list[str] = []
        pending = [name]
        while pending:
            current = pending.pop(0)
            if current in order:
                continue
            order.append(current)
            pending.extend(self.models[current].fallbacks)
        return order


DEFAULT_MODELS_FILE = Path(__file__).resolve().parents[3] / "config" / "models.yaml"
