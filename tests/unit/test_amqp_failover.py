"""PARLEY_AMQP_URL with a cluster's nodes: parsed, tried in turn, credentials kept per node."""

from __future__ import annotations

import pytest

from parley_common.messaging.amqp import FailoverConnection, broker_urls


def test_one_url_or_a_comma_separated_list_of_nodes() -> None:
    assert broker_urls("amqp://u:p@a:5672/") == ["amqp://u:p@a:5672/"]
    assert broker_urls(" amqp://u:p@a/ , amqp://u:p@b/,") == ["amqp://u:p@a/", "amqp://u:p@b/"]
    with pytest.raises(ValueError):
        broker_urls(" , ")


async def test_every_attempt_after_a_lost_connection_goes_to_the_next_node() -> None:
    connection = FailoverConnection(["amqp://u:p@a/", "amqp://u:p@b/", "amqp://u:p@c/"], 1)
    assert connection.url.host == "b"
    connection.transport = None  # the first attempt: stays on b
    assert connection.url.host == "b"
    connection.transport = object()  # connected to b
    for expected in ("c", "a", "b"):
        connection.transport = None  # b went away: each new attempt moves on
        assert connection.url.host == expected


async def test_a_new_secret_changes_only_the_nodes_with_the_same_credentials() -> None:
    connection = FailoverConnection(["amqp://a:pa@h1/", "amqp://b:pb@h2/", "amqp://a:pa@h3/"], 0)
    connection.url = connection.url.with_password("new")
    assert [(u.user, u.password) for u in connection._urls] == [("a", "new"), ("b", "pb"), ("a", "new")]
