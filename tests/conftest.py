"""Settings for every test directory.

`make test` runs the suite on two pytest-xdist workers (`-n 2`): each worker is a session of its
own (its own stacks, namespaces, ports: parley_dev.infra.port_share), and the hooks below keep
together what shares a session's server: the browser suite (one stack and one Chromium for the
package), every module that touches the session's Cassandra node, and those of the RabbitMQ test
cluster; any other module is a unit of its own. The local RabbitMQ and Redis
are started once, by the controller, before the workers start (a worker that started them would
stop them at its end, under the other). Tests marked `serial` restart those shared servers, so
they run apart, after the rest (`-m serial`), and refuse to run in a worker.

Property tests (hypothesis) explore the same examples on every run, so a `make test` — and CI —
judges the code, not the luck of the draw; `HYPOTHESIS_PROFILE=explore` draws new examples (run
it when changing a parser, the SSE writer or the trimming), and a failure it finds becomes a
fixed example in its test.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings

from parley_dev.cassandra import CassandraEndpoint, provide_cassandra
from parley_dev.infra import InfraUnavailable, provide, use_containers
from tests.required import unavailable
from tests.support.fixtures import fake_provider, provider_http, redis  # noqa: F401 (fixtures for every test)

settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

# The modules outside tests/browser and tests/contract that use a server the session shares (a
# test that uses one from a module not listed here fails, saying so).
SHARED_GROUPS = {
    "tests/integration/test_cassandra_end_to_end.py": "cassandra",
    "tests/integration/test_rabbit_cluster.py": "rabbit-cluster",
    "tests/integration/test_cluster_failover.py": "rabbit-cluster",
}
SHARED_FIXTURES = {"cassandra": "cassandra", "cassandra_target": "cassandra", "rabbit_cluster": "rabbit-cluster"}
# Started first, so that the long units do not end up last on one worker.
FIRST_GROUPS = ("browser", "tests/integration/test_budgets_hold.py", "cassandra", "rabbit-cluster")


def work_unit(nodeid: str) -> str:
    """The unit of work a worker takes whole: a shared server's group, else the test's module."""
    path = nodeid.split("::", 1)[0]
    if path.startswith("tests/browser/"):
        return "browser"  # one stack and one Chromium for the package
    if path.startswith("tests/contract/"):
        return "cassandra"  # the contract tests ask for the store by name (request.getfixturevalue)
    return SHARED_GROUPS.get(path, path)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's own `--dist loadgroup` no longer groups anything under pytest 9.2 (it renames the
    node ids through an attribute pytest 9.2 dropped), so the groups are made here."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    config.option.loadscopereorder = False  # the workers' collection order (FIRST_GROUPS first)
    return GroupScheduling(config, log)


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return
    servers = contextlib.ExitStack()
    try:
        if use_containers():
            return  # each worker starts containers of its own
        servers.enter_context(provide())  # the local servers, stopped at the end if started here
    except InfraUnavailable:
        return  # the workers' fixtures say why, as in a run without workers
    config.add_cleanup(servers.close)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker, the long groups first (every worker sorts alike, as xdist requires)."""
    if hasattr(config, "workerinput"):
        first = {group: rank for rank, group in enumerate(FIRST_GROUPS)}
        items.sort(key=lambda item: first.get(work_unit(item.nodeid), len(first)))


def pytest_runtest_setup(item: pytest.Item) -> None:
    if not hasattr(item.config, "workerinput"):
        return
    if item.get_closest_marker("serial"):
        pytest.fail("a serial test restarts servers the other workers use: run it alone (-m serial), not in a worker")
    for fixture in SHARED_FIXTURES.keys() & set(item.fixturenames):
        if work_unit(item.nodeid) != SHARED_FIXTURES[fixture]:
            pytest.fail(f"{item.path.name} uses the session's {fixture}: add it to SHARED_GROUPS in tests/conftest.py")


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
