"""History's Cassandra settings: the sync settle window cannot be set below what a late write
needs, and TLS settings that would be silently ignored are refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from parley_history.settings import HistorySettings
from parley_history.stores import cassandra_config


def settings(**values: object) -> HistorySettings:
    return HistorySettings(**values)  # type: ignore[arg-type]


def test_the_settle_window_is_the_request_timeout_plus_the_clock_skew_unless_longer() -> None:
    assert settings().sync_settle_ms() == 7_000 + 1_000
    assert settings(cassandra_request_timeout_s=2, history_clock_skew_ms=500).sync_settle_ms() == 2_500
    assert settings(history_sync_settle_ms=30_000).sync_settle_ms() == 30_000
    with pytest.raises(ValidationError, match="at least the Cassandra request timeout"):
        settings(history_sync_settle_ms=7_000)  # no room for clock skew


def test_tls_settings_reach_the_driver_and_a_ca_without_tls_is_refused() -> None:
    config = cassandra_config(settings(cassandra_tls=True, cassandra_tls_ca_file="/etc/ssl/ca.pem"))
    assert config.tls and str(config.tls_ca_file) == "/etc/ssl/ca.pem" and config.tls_verify_hostname
    assert config.protocol_version == 5 and config.request_timeout_s == 7.0
    with pytest.raises(ValidationError, match="PARLEY_CASSANDRA_TLS is not"):
        settings(cassandra_tls_ca_file="/etc/ssl/ca.pem")
