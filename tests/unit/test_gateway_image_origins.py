"""PARLEY_IMAGE_ORIGINS: origins the web client may show images from, and nothing that could
bend the Content-Security-Policy they go into."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from parley_dev.stack import origin_of
from parley_gateway.routes.web import content_security_policy
from parley_gateway.settings import GatewaySettings


def settings(origins: list[str]) -> GatewaySettings:
    return GatewaySettings(dev_api_key=SecretStr("k" * 20), image_origins=origins)


def test_origins_are_normalised_and_added_to_img_src_only() -> None:
    origins = settings(["https://Media.Example.com/", "http://127.0.0.1:8333"]).image_origins
    assert origins == ["https://media.example.com", "http://127.0.0.1:8333"]
    policy = content_security_policy(origins).split("; ")
    assert "img-src 'self' blob: https://media.example.com http://127.0.0.1:8333" in policy
    # Every other directive stays as strict as without images.
    others = [d for d in policy if not d.startswith("img-src")]
    assert others == [d for d in content_security_policy().split("; ") if not d.startswith("img-src")]
    assert "connect-src 'self'" in others and "script-src 'self'" in others


@pytest.mark.parametrize(
    "bad",
    [
        "media.example.com",
        "ftp://media.example.com",
        "https://media.example.com/bucket",
        "https://media.example.com?x=1",
        "https://user@media.example.com",
        "https://media.example.com; script-src *",
        "https://*.example.com",
    ],
)
def test_anything_but_an_origin_is_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="is not an origin"):
        settings([bad])


def test_the_dev_stack_allows_the_origin_it_presigns_for() -> None:
    assert origin_of("http://127.0.0.1:8333/") == "http://127.0.0.1:8333"
    assert origin_of("https://s3.example.com/prefix") == "https://s3.example.com"
