"""PARLEY_API_KEYS may hold `sha256:<hex>` digests instead of keys; keys never leak from settings."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from parley_common.errors import Unauthenticated
from parley_common.settings import load_settings
from parley_gateway.auth import ApiKeys
from parley_gateway.settings import GatewaySettings

ALICE_KEY = "pk_live_alice_0123456789abcdef"
BOB_KEY = "pk_live_bob_plaintext_fedcba9876"


def digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def settings_from_env(monkeypatch: pytest.MonkeyPatch, api_keys: dict[str, str]) -> GatewaySettings:
    monkeypatch.delenv("PARLEY_DEV_API_KEY", raising=False)
    monkeypatch.setenv("PARLEY_API_KEYS", json.dumps(api_keys))
    return load_settings(GatewaySettings)


def test_a_key_configured_as_its_digest_authenticates_and_others_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    carol_upper = "sha256:" + hashlib.sha256(("pk_live_carol_" + "Z" * 20).encode()).hexdigest().upper()
    settings = settings_from_env(monkeypatch, {"alice": digest(ALICE_KEY), "carol": carol_upper, "bob": BOB_KEY})
    keys = ApiKeys(settings.all_keys())
    assert keys.user_for(f"Bearer {ALICE_KEY}") == "alice"
    assert keys.user_for("Bearer pk_live_carol_" + "Z" * 20) == "carol"  # upper-case hex is fine
    assert keys.user_for(f"Bearer {BOB_KEY}") == "bob"  # a plain key still works
    for wrong in (ALICE_KEY[:-1], ALICE_KEY + "x", digest(ALICE_KEY), digest(ALICE_KEY).removeprefix("sha256:")):
        with pytest.raises(Unauthenticated):
            keys.user_for(f"Bearer {wrong}")  # not even the digest itself is a key


@pytest.mark.parametrize(
    "bad",
    [
        "sha256:",
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 65,
        "sha256:" + "g" * 64,
        "sha256: " + "a" * 64,
        "SHA256:" + "a" * 63,
    ],
)
def test_a_malformed_digest_stops_start_up_naming_the_variable_and_user(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    with pytest.raises(SystemExit) as stop:
        settings_from_env(monkeypatch, {"alice": bad, "bob": BOB_KEY})
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "PARLEY_API_KEYS" in err and "'alice'" in err and "sha256:<64 hex digits>" in err
    assert BOB_KEY not in err


def test_short_plain_keys_and_shared_keys_are_refused() -> None:
    with pytest.raises(ValidationError, match="at least 16 characters"):
        GatewaySettings(api_keys={"alice": "short"})
    with pytest.raises(ValidationError, match="'alice' and 'bob' have the same API key"):
        GatewaySettings(api_keys={"alice": ALICE_KEY, "bob": digest(ALICE_KEY)})


def test_keys_never_show_in_settings_or_their_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from_env(monkeypatch, {"alice": digest(ALICE_KEY), "bob": BOB_KEY})
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert BOB_KEY not in text and digest(ALICE_KEY) not in text
    monkeypatch.delenv("PARLEY_API_KEYS")
    key = "0123456789abcdef"  # short enough that an echoed input would not be elided
    with pytest.raises(ValidationError) as failure:
        GatewaySettings(api_keys={"b": key, "a": "sha256:x"})
    assert key not in str(failure.value)  # what a traceback or a log of the error shows


def test_hash_key_prints_the_digest_that_authenticates() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "parley_gateway", "hash-key"],
        input=ALICE_KEY + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    printed = run.stdout.strip()
    assert printed == digest(ALICE_KEY) and ALICE_KEY not in run.stdout + run.stderr
    keys = ApiKeys(GatewaySettings(api_keys={"alice": printed}).all_keys())
    assert keys.user_for(f"Bearer {ALICE_KEY}") == "alice"

    short = subprocess.run(
        [sys.executable, "-m", "parley_gateway", "hash-key"],
        input="tiny\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert short.returncode == 2 and "at least 16 characters" in short.stderr and short.stdout == ""
