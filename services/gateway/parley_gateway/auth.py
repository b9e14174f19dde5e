"""Bearer API keys -> user ids. Keys are held only as SHA-256 digests.

A configured key (PARLEY_API_KEYS, PARLEY_DEV_API_KEY) is either the key itself or its digest
written `sha256:<64 hex digits>` (the SHA-256 of the key's UTF-8 bytes; `python -m
parley_gateway hash-key` prints it), so production configuration need not hold keys at all.
"""

from __future__ import annotations

import hashlib
import re

from pydantic import SecretStr

from parley_common.errors import InvalidRequest, Unauthenticated

DIGEST_PREFIX = "sha256:"
_DIGEST = re.compile(r"sha256:[0-9a-fA-F]{64}")
# The shortest and the longest key accepted, in configuration or by `hash-key`.
MIN_KEY_CHARS = 16
MAX_KEY_CHARS = 512
# An Authorization header longer than this holds no key of ours: refused before it is looked at.
MAX_AUTHORIZATION_CHARS = MAX_KEY_CHARS + 64


class HeaderTooLarge(InvalidRequest):
    http_status = 431
    code = "header_too_large"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_digest(key: str) -> str:
    """The configuration form of a key's digest: `sha256:<64 lowercase hex digits>`."""
    return DIGEST_PREFIX + _digest(key).hex()


def is_digest(value: str) -> bool:
    """True when a configured value is meant as a digest (it may still be malformed)."""
    return value.lower().startswith(DIGEST_PREFIX)


def configured_digest(value: str) -> bytes:
    """The digest of a configured value: a key, or `sha256:<64 hex>`; ValueError when neither.

    The message never repeats the value."""
    if is_digest(value):
        if not _DIGEST.fullmatch(value):
            raise ValueError(f"a digest must be written {DIGEST_PREFIX}<64 hex digits> (the SHA-256 of the key)")
        return bytes.fromhex(value[len(DIGEST_PREFIX) :])
    if len(value) < MIN_KEY_CHARS:
        raise ValueError(
            f"an API key must be at least {MIN_KEY_CHARS} characters (or given as its {DIGEST_PREFIX} digest)"
        )
    if len(value) > MAX_KEY_CHARS:
        raise ValueError(f"an API key must be at most {MAX_KEY_CHARS} characters")
    return _digest(value)


class ApiKeys:
    def __init__(self, keys: dict[str, SecretStr]) -> None:
        # Looked up by digest: what the lookup's timing depends on is the SHA-256 of the
        # presented key, which tells an attacker nothing about any configured key.
        self._users = {configured_digest(key.get_secret_value()): user for user, key in keys.items()}

    def user_for(self, authorization: str | None) -> str:
        if not authorization:
            raise Unauthenticated("missing Authorization: Bearer <api key>", code="missing_api_key")
        if len(authorization) > MAX_AUTHORIZATION_CHARS:
            raise HeaderTooLarge(
                f"the Authorization header is longer than {MAX_AUTHORIZATION_CHARS} characters",
                code="authorization_too_long",
            )
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated("expected Authorization: Bearer <api key>", code="invalid_api_key")
        user = self._users.get(_digest(key.strip()))
        if user is None:
            raise Unauthenticated("unknown API key", code="invalid_api_key")
        return user
