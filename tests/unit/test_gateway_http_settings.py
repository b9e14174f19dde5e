"""The gateway's HTTP limits are settings with sane defaults and bounds."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from parley_gateway.settings import GatewaySettings

KEY = SecretStr("k" * 20)


def test_http_limits_have_defaults() -> None:
    settings = GatewaySettings(dev_api_key=KEY)
    assert (settings.max_header_bytes, settings.max_header_line_bytes) == (32_768, 8192)
    assert (settings.header_read_timeout_s, settings.body_read_timeout_s, settings.body_min_bytes_per_s) == (
        20.0,
        20.0,
        1000,
    )
    assert settings.api_docs is False


@pytest.mark.parametrize(
    "bad",
    [
        {"max_header_bytes": 100},
        {"max_header_line_bytes": 10},
        {"max_header_bytes": 8192, "max_header_line_bytes": 16_384},
        {"header_read_timeout_s": 0},
        {"body_read_timeout_s": -1},
        {"body_min_bytes_per_s": 0},
    ],
)
def test_http_limits_out_of_bounds_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(dev_api_key=KEY, **bad)
