"""Bearer API keys -> user ids. Keys are held only as SHA-256 digests."""

from __future__ import annotations

import hashlib

from fastapi import Request
from pydantic import SecretStr

from parley_common.errors import Unauthenticated


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    def __init__(self, keys: dict[str, SecretStr]) -> None:
        self._users = {_digest(key.get_secret_value()): user for user, key in keys.items()}

    def user_for(self, authorization: str | None) -> str:
        if not authorization:
            raise Unauthenticated("missing Authorization: Bearer <api key>", code="missing_api_key")
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated("expected Authorization: Bearer <api key>", code="invalid_api_key")
        user = self._users.get(_digest(key.strip()))
        if user is None:
            raise Unauthenticated("unknown API key", code="invalid_api_key")
        return user


async def current_user(request: Request) -> str:
    """FastAPI dependency: the authenticated user's id, counted against their request rate."""
    keys: ApiKeys = request.app.state.api_keys
    user = keys.user_for(request.headers.get("authorization"))
    request.state.rate_limit = await request.app.state.rate_limit.check(user)
    return user
