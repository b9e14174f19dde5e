"""Settings for every test directory.

Property tests (hypothesis) explore the same examples on every run, so a `make test` — and CI —
judges the code, not the luck of the draw; `HYPOTHESIS_PROFILE=explore` draws new examples (run
it when changing a parser, the SSE writer or the trimming), and a failure it finds becomes a
fixed example in its test.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from parley_dev.cassandra import CassandraEndpoint, provide_cassandra
from parley_dev.infra import InfraUnavailable
from tests.required import unavailable
from tests.support.fixtures import fake_provider, provider_http, redis  # noqa: F401 (fixtures for every test)

settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(scope="session")
def cassandra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CassandraEndpoint]:
    """One Cassandra cluster for the session, started on first use: CASSANDRA_CONTACT_POINTS,
    else a container when a Docker engine answers, else a local node from Maven Central's jars
    (tools/cassandra/pom.xml). Missing, its tests skip — or fail under PARLEY_REQUIRE."""
    stack = contextlib.ExitStack()
    try:
        # A low tombstone failure threshold (the default is 100,000), so that a test can make a
        # read fail on the replica in a second.
        endpoint = stack.enter_context(
            provide_cassandra(tmp_path_factory.mktemp("cassandra"), settings={"tombstone_failure_threshold": "2000"})
        )
    except InfraUnavailable as exc:
        stack.close()
        unavailable("cassandra", f"no Cassandra: {exc}")
    with stack:
        yield endpoint
