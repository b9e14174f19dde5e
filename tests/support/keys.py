"""The API keys of the integration tests' shared stack (fresh each session)."""

from __future__ import annotations

import secrets

DEV_KEY = "pk_test_" + secrets.token_urlsafe(18)
BOB_KEY = "pk_test_bob_" + secrets.token_urlsafe(18)
