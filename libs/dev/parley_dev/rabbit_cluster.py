"""A RabbitMQ cluster of three nodes on loopback, for tests of what a cluster does to Parley.

Each node is Debian's `rabbitmq-server` run as the current user from /usr/lib/rabbitmq/bin (not
/usr/sbin's wrapper, which switches to the `rabbitmq` user, its home and its cookie), with all
of its own in the caller's folder: a node name `parley-<run>-<letter>@localhost` (the run id
keeps two test sessions apart in the machine's shared epmd), AMQP and distribution ports chosen
free at start and kept across restarts, its database, logs, config file and pid file. The nodes
and the tools that talk to them share one generated Erlang cookie in a private HOME (`.erlang.cookie`, mode
600), so the machine's own node (on 5672) is never reachable from here, let alone stopped.

The nodes boot in parallel and find each other while booting (classic_config peer discovery:
each node's config names all of them, and a lock lets one form the cluster while the others
join it); a node that booted alone anyway joins the first one with the CLI (`stop_app`,
`reset`, `join_cluster`, `start_app`). The cluster is ready once every node sees all of them
running. A restarted node rejoins from its own data. Questions (running nodes, queue
leaders, members, depths) go to a running node through Erlang's `erl_call`, about 10 ms each;
the methods block, so call them through `asyncio.to_thread` from async tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any, TypeVar

from .infra import InfraUnavailable, ephemeral_low, port_in

# Debian's scripts run as any user; /usr/sbin/rabbitmq-server is a wrapper that `su`s to rabbitmq.
DEBIAN_SCRIPTS = Path("/usr/lib/rabbitmq/bin")
INSTALL = "apt-get install -y rabbitmq-server"
MAX_NODES = 7
_T = TypeVar("_T")


class RabbitCommandFailed(RuntimeError):
    """A question to a node or a CLI call that failed or timed out (the node may be down)."""


def rabbitmq_scripts() -> Path:
    """The folder holding `rabbitmq-server` and `rabbitmqctl` that run as the current user."""
    candidates = [DEBIAN_SCRIPTS]
    found = shutil.which("rabbitmq-server", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    # A generic-unix install runs from its own sbin; Debian's /usr/sbin one is the `su` wrapper.
    if found and "rabbitmq-script-wrapper" not in os.path.realpath(found):
        candidates.append(Path(found).parent)
    for folder in candidates:
        if (folder / "rabbitmq-server").is_file() and (folder / "rabbitmqctl").is_file():
            return folder
    raise InfraUnavailable(f"rabbitmq-server is not installed: run `{INSTALL}`")


def erl_call_binary() -> Path:
    """Erlang's `erl_call` (Debian's erlang-base, which rabbitmq-server depends on)."""
    found = shutil.which("erl_call")
    candidates = [Path(found)] if found else []
    candidates += sorted(Path("/usr/lib/erlang").glob("erts-*/bin/erl_call"))
    candidates += sorted(Path("/usr/lib/erlang").glob("lib/erl_interface-*/bin/erl_call"))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InfraUnavailable(f"Erlang's erl_call is missing (it comes with rabbitmq-server): run `{INSTALL}`")


@dataclass
class RabbitNode:
    """One node of the cluster: its name, its ports and its folder (kept across restarts)."""

    name: str
    amqp_port: int
    dist_port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _out: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def log_path(self) -> Path:
        return self.folder / "log" / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.folder / "beam.pid"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        texts: list[str] = []
        for path in (self.folder / "stdout.log", self.log_path):
            if path.is_file():
                texts += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(texts[-lines:])


class RabbitCluster:
    """RabbitMQ nodes clustered on loopback, their data and logs under `workdir`.

    Use `provide_rabbit_cluster`, which starts it and always stops it. Node arguments are node
    names as in `nodes` (e.g. "parley-3fa9c1-a@localhost")."""

    def __init__(self, workdir: Path, size: int = 3, *, boot_timeout_s: float = 180.0) -> None:
        if not 1 <= size <= MAX_NODES:
            raise ValueError(f"a cluster has 1 to {MAX_NODES} nodes, not {size}")
        self.workdir = workdir
        self.size = size
        self.boot_timeout_s = boot_timeout_s
        self.scripts = rabbitmq_scripts()
        self.erl_call = erl_call_binary()
        self.home = workdir / "home"
        self.run_id = ""
        self._nodes: list[RabbitNode] = []
        # Of the last start: seconds from the first spawn to every node running as one cluster,
        # and the nodes that had to join with the CLI (peer discovery left them alone).
        self.formed_in_s = 0.0
        self.joined_by_cli: list[str] = []

    # What the services and tests use.

    @property
    def nodes(self) -> list[str]:
        return [node.name for node in self._nodes]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self._nodes]

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated, as services read PARLEY_AMQP_URL."""
        return ",".join(self.urls)

    def url_of(self, node: str) -> str:
        return self._node(node).url

    def running(self, node: str) -> bool:
        """True while this cluster's process of `node` runs (it may still be booting)."""
        return self._node(node).alive

    # Starting and stopping the cluster.

    def start_all(self, attempts: int = 3) -> None:
        """Boot every node in parallel, join them, and return once all of them run as one cluster.

        A node that exits while booting (a port taken between choosing and binding it) means a
        new attempt on new ports and a new run id; anything else raises InfraUnavailable."""
        for attempt in range(1, attempts + 1):
            try:
                self._start_once()
                return
            except _NodeExited as exc:
                self.close()
                if attempt == attempts:
                    raise InfraUnavailable(str(exc)) from exc
            except (InfraUnavailable, RabbitCommandFailed, subprocess.TimeoutExpired, OSError) as exc:
                self.close()
                raise InfraUnavailable(f"the RabbitMQ cluster did not form: {exc}") from exc

    def close(self, timeout_s: float = 60.0) -> None:
        """Stop every node this cluster started (SIGTERM together, SIGKILL past the timeout).

        The folders stay where they are: they are the caller's, and hold the logs."""
        for node in self._nodes:
            if node.alive:
                assert node.process is not None
                node.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for node in self._nodes:
            self._wait_stopped(node, max(0.1, deadline - time.monotonic()))

    def kill(self, node: str) -> None:
        """SIGKILL the node's Erlang VM (beam.smp), as a crashed machine; returns once it is gone."""
        target = self._node(node)
        pid = self._beam_pid(target)
        os.kill(pid, signal.SIGKILL)
        self._wait_stopped(target, 30.0)
        deadline = time.monotonic() + 30.0
        while Path(f"/proc/{pid}").exists() and _state_of(pid) not in ("Z", "X"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node}'s beam.smp ({pid}) outlived SIGKILL")
            time.sleep(0.05)

    def stop(self, node: str, timeout_s: float = 60.0) -> None:
        """Stop the node gracefully, as `rabbitmqctl stop` does (SIGTERM: RabbitMQ closes its
        client connections and stops its queue replicas in order); killed past `timeout_s`."""
        target = self._node(node)
        if not target.alive:
            raise ValueError(f"{node} is not running")
        assert target.process is not None
        target.process.send_signal(signal.SIGTERM)
        self._wait_stopped(target, timeout_s)

    def start(self, node: str) -> None:
        """Start a stopped or killed node again on its ports and its data, and return once it
        has rejoined: it runs, and every other running node lists it as running."""
        target = self._node(node)
        if target.alive:
            raise ValueError(f"{node} is already running")
        deadline = time.monotonic() + self.boot_timeout_s
        self._spawn(target)
        try:
            self._await_booted(target, deadline)
            running = [n for n in self._nodes if n.alive]
            expected = {n.name for n in running}
            _in_parallel([partial(self._await_running_nodes, peer, expected, deadline) for peer in running])
        except (_NodeExited, InfraUnavailable) as exc:
            # Not InfraUnavailable here: a node that cannot come back is the test's failure.
            raise RuntimeError(str(exc)) from exc

    def restore(self) -> None:
        """Start every stopped or killed node again, one by one, so that all of them run as one
        cluster (what a test that took nodes down does before it ends)."""
        for node in self._nodes:
            if not node.alive:
                self.start(node.name)

    # Questions about the cluster and its queues.

    def running_nodes(self) -> list[str]:
        """The nodes of the cluster where RabbitMQ runs, as a running node sees them."""
        return sorted(self._ask(lambda n: self._status(n))["running"])

    def leader_of(self, queue: str, vhost: str = "/") -> str:
        """The node leading the quorum queue `queue` now (as the cluster last recorded it)."""
        return str(self._queue(queue, vhost)["leader"])

    def members_of(self, queue: str, vhost: str = "/") -> list[str]:
        """The nodes holding a replica of the quorum queue `queue`, reachable or not."""
        return sorted(str(m) for m in self._queue(queue, vhost)["members"])

    def online_members_of(self, queue: str, vhost: str = "/") -> list[str]:
        """The replicas of the quorum queue `queue` that are up now."""
        return sorted(str(m) for m in self._queue(queue, vhost)["online"])

    def queue_depths(self, vhost: str = "/") -> dict[str, int]:
        """Messages (ready and unacknowledged) per queue of `vhost`.

        A quorum queue's count is the one its leader last reported (every second here). A queue
        whose count is unknown (a classic queue on a node that is down, a quorum queue whose
        leader does not answer) raises RabbitCommandFailed rather than counting as empty."""
        depths: dict[str, int] = {}
        for name, row in self._queue_rows(vhost).items():
            if not isinstance(row.get("messages"), int):
                raise RabbitCommandFailed(f"the depth of {name} is unknown (state {row.get('state')!r})")
            depths[name] = row["messages"]
        return depths

    def ctl(self, node: str, *args: str, tool: str = "rabbitmqctl", timeout_s: float = 60.0) -> str:
        """Run a RabbitMQ CLI tool against one of this cluster's nodes; its standard output."""
        if tool not in ("rabbitmqctl", "rabbitmq-queues", "rabbitmq-diagnostics"):
            raise ValueError(f"not a RabbitMQ CLI tool here: {tool}")
        command = [str(self.scripts / tool), "-n", self._node(node).name, "-q", *args]
        try:
            done = subprocess.run(
                command,
                env=self._cli_env(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired as exc:
            raise RabbitCommandFailed(f"`{tool} {' '.join(args)}` on {node} took over {timeout_s:.0f}s") from exc
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip()[-1500:]
            raise RabbitCommandFailed(f"`{tool} {' '.join(args)}` on {node} exited {done.returncode}: {output}")
        return done.stdout

    def evaluate(self, node: str, expression: str, timeout_s: float = 30.0) -> Any:
        """The value of an Erlang expression evaluated on `node`, which `rabbit_json` can encode
        (maps, lists, binaries, atoms, numbers), as JSON.

        Through `erl_call`, a small C program: about 10 ms a question, where `rabbitmqctl` starts
        an Erlang VM each time (0.7 s of CPU; 6 to 10 s when the machine's two cores are busy)."""
        wrapped = f"binary_to_list(binary:encode_hex(rabbit_json:encode({expression})))."
        command = [str(self.erl_call), "-sname", self._node(node).name, "-timeout", str(int(timeout_s)), "-e"]
        try:
            done = subprocess.run(
                command,
                input=wrapped + "\n",
                env=self._cli_env(),
                cwd=self.workdir,
                capture_output=True,
                text=True,
                timeout=timeout_s + 5,
            )
        except subprocess.TimeoutExpired as exc:
            raise RabbitCommandFailed(f"{node} did not answer in {timeout_s:.0f}s") from exc
        answer = re.fullmatch(r'\{ok,\s*"([0-9A-F]*)"\}\s*', done.stdout)
        if done.returncode != 0 or answer is None:
            output = (done.stdout + done.stderr).strip()[-1500:]
            raise RabbitCommandFailed(f"{node} could not evaluate {expression[:80]!r}: {output}")
        return json.loads(bytes.fromhex(answer[1]))

    # Internals.

    def _status(self, node: str) -> dict[str, list[str]]:
        status = self.evaluate(
            node, "#{running => rabbit_nodes:all_running(), members => rabbit_mnesia:cluster_nodes(all)}"
        )
        return {"running": [str(n) for n in status["running"]], "members": [str(n) for n in status["members"]]}

    def _queues(self, node: str, vhost: str) -> list[dict[str, Any]]:
        # What `rabbitmqctl list_queues` lists, with the queue's name as text and anything
        # else that JSON cannot hold (a state such as {syncing, 3}) as Erlang prints it.
        expression = (
            "[maps:from_list([{K, case V of {resource, _, queue, N} -> N;"
            ' _ when is_tuple(V) orelse is_pid(V) -> iolist_to_binary(io_lib:format("~p", [V])); _ -> V end}'
            " || {K, V} <- I])"
            f' || I <- rabbit_amqqueue:info_all(binary:decode_hex(<<"{vhost.encode().hex().upper()}">>),'
            " [name, type, leader, members, online, messages, state])]"
        )
        return list(self.evaluate(node, expression))

    def _node(self, name: str) -> RabbitNode:
        for node in self._nodes:
            if node.name == name:
                return node
        raise ValueError(f"{name!r} is not a node of this cluster ({', '.join(self.nodes)})")

    def _queue(self, queue: str, vhost: str) -> dict[str, Any]:
        row = self._queue_rows(vhost).get(queue)
        if row is None:
            raise LookupError(f"no queue {queue!r} in vhost {vhost!r}")
        if row.get("type") != "quorum":
            raise ValueError(f"{queue} in {vhost} is a {row.get('type')} queue, not a quorum queue")
        return row

    def _queue_rows(self, vhost: str) -> dict[str, dict[str, Any]]:
        """Every queue of `vhost` by name, as every running node lists it. A quorum queue's
        message count is known only on the node that leads it (each node keeps the counts of the
        queues it leads), so its row comes from there; elsewhere its count is None."""
        answers: dict[str, list[dict[str, Any]]] = {}
        failures: list[str] = []

        def ask(node: str) -> None:
            try:
                answers[node] = self._queues(node, vhost)
            except RabbitCommandFailed as exc:
                failures.append(str(exc))

        _in_parallel([partial(ask, node.name) for node in self._nodes if node.alive])
        if not answers:
            raise RabbitCommandFailed("no running node answered: " + ("; ".join(failures) or "none runs"))
        rows: dict[str, dict[str, Any]] = {}
        for node, listed in answers.items():
            for row in listed:
                if row.get("type") == "quorum" and row.get("leader") != node:
                    row = {**row, "messages": None}
                name = str(row["name"])
                if name not in rows or rows[name].get("messages") is None:
                    rows[name] = row
        return rows

    def _ask(self, question: Callable[[str], _T]) -> _T:
        """The answer of the first running node that gives one."""
        failures: list[str] = []
        for node in self._nodes:
            if not node.alive:
                continue
            try:
                return question(node.name)
            except RabbitCommandFailed as exc:
                failures.append(str(exc))
        raise RabbitCommandFailed("no running node answered: " + ("; ".join(failures) or "none runs"))

    def _start_once(self) -> None:
        started = time.monotonic()
        self.run_id = secrets.token_hex(3)
        self._prepare_shared_files()
        self._nodes = []
        taken: set[int] = set()
        for letter in string.ascii_lowercase[: self.size]:
            amqp_port, dist_port = _free_ports(2, taken)
            name = f"parley-{self.run_id}-{letter}@localhost"
            self._nodes.append(RabbitNode(name, amqp_port, dist_port, self.workdir / f"{self.run_id}-{letter}"))
        for node in self._nodes:
            self._write_config(node)
            self._spawn(node)
        deadline = started + self.boot_timeout_s
        _in_parallel([partial(self._await_booted, node, deadline) for node in self._nodes])
        # The nodes found each other while booting (classic_config peer discovery, which takes a
        # lock so that one forms the cluster and the others join it). A node that did not make
        # it (it booted alone) joins the first one with the CLI.
        first = self._nodes[0]
        status = self._status(first.name)
        if set(status["running"]) >= set(self.nodes):
            self.formed_in_s = time.monotonic() - started
            return
        strays = [node for node in self._nodes if node.name not in status["members"]]
        self.joined_by_cli = [node.name for node in strays]
        if strays:
            _in_parallel([partial(self.ctl, node.name, "stop_app") for node in strays])
            # One at a time: each join changes the cluster's schema. A reset first, in case the
            # node formed a cluster of its own with another stray.
            for node in strays:
                self.ctl(node.name, "reset")
                self.ctl(node.name, "join_cluster", first.name)
            _in_parallel([partial(self.ctl, node.name, "start_app") for node in strays])
        self._await_running_nodes(first, set(self.nodes), deadline)
        self.formed_in_s = time.monotonic() - started

    def _prepare_shared_files(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        if not cookie.exists():
            descriptor = os.open(cookie, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as out:
                out.write(secrets.token_hex(20).upper())
        # No plugins (no management listener on 15672 to collide with the machine's node), and
        # no /etc/rabbitmq/rabbitmq-env.conf: its NODENAME or ports would apply to every node.
        (self.workdir / "enabled_plugins").write_text("[].\n")
        (self.workdir / "rabbitmq-env.conf").write_text("")

    def _write_config(self, node: RabbitNode) -> None:
        node.folder.mkdir(parents=True, exist_ok=True)
        (node.folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{node.amqp_port}\n"
            "loopback_users.guest = true\n"
            "log.console = false\n"
            "log.file.level = info\n"
            "cluster_formation.peer_discovery_backend = classic_config\n"
            + "".join(f"cluster_formation.classic_config.nodes.{i} = {n.name}\n" for i, n in enumerate(self._nodes, 1))
            + "cluster_formation.discovery_retry_limit = 2\n"
            "cluster_formation.discovery_retry_interval = 250\n"
        )
        # Quorum queues report their depth every tick (5 s by default): 1 s keeps the depths that
        # tests read at most a second old, at no cost worth measuring for a few queues.
        (node.folder / "advanced.config").write_text("[{rabbit, [{quorum_tick_interval, 1000}]}].\n")

    def _node_env(self, node: RabbitNode) -> dict[str, str]:
        return {
            **self._base_env(),
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(node.amqp_port),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_CONFIG_FILE": str(node.folder / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(node.folder / "advanced.config"),
            "RABBITMQ_MNESIA_BASE": str(node.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(node.folder / "log"),
            "RABBITMQ_PID_FILE": str(node.pid_file),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.workdir / "enabled_plugins"),
            # Several VMs share two cores: schedulers bound to cores would fight over them.
            "RABBITMQ_SCHEDULER_BIND_TYPE": "u",
            # Inter-node traffic on loopback only (the default is every interface).
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_CRASH_DUMP": str(node.folder / "erl_crash.dump"),
        }

    def _cli_env(self) -> dict[str, str]:
        # Any free port for the CLI's own distribution listener: the default range (35672-35682)
        # is shared by every CLI call on the machine and runs out under parallel calls.
        return {**self._base_env(), "RABBITMQ_CTL_DIST_PORT_MIN": "0", "RABBITMQ_CTL_DIST_PORT_MAX": "0"}

    def _base_env(self) -> dict[str, str]:
        kept = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("RABBITMQ_", "ERL_")) or key in ("ERL_EPMD_PORT", "ERL_EPMD_ADDRESS")
        }
        return {
            **kept,
            "HOME": str(self.home),
            "RABBITMQ_CONF_ENV_FILE": str(self.workdir / "rabbitmq-env.conf"),
            "RABBITMQ_USE_LONGNAME": "false",
        }

    def _spawn(self, node: RabbitNode) -> None:
        node.pid_file.unlink(missing_ok=True)
        if node._out is not None:
            node._out.close()
        node._out = open(node.folder / "stdout.log", "ab")
        node.process = subprocess.Popen(
            [str(self.scripts / "rabbitmq-server")],
            env=self._node_env(node),
            cwd=node.folder,
            stdin=subprocess.DEVNULL,
            stdout=node._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _await_booted(self, node: RabbitNode, deadline: float) -> None:
        # The AMQP listener opens at the end of the boot, after the node has joined its cluster.
        while not _accepts(node.amqp_port):
            self._check_alive(node)
            if time.monotonic() > deadline:
                raise InfraUnavailable(f"{node.name} did not boot in time; its log ends:\n{node.log_tail()}")
            time.sleep(0.2)

    def _await_running_nodes(self, asked: RabbitNode, expected: set[str], deadline: float) -> None:
        seen: object = "nothing"
        while time.monotonic() < deadline:
            self._check_alive(asked)
            try:
                running = self._status(asked.name)["running"]
            except RabbitCommandFailed as exc:  # still starting RabbitMQ itself
                seen = exc
            else:
                if set(running) >= expected:
                    return
                seen = sorted(running)
            time.sleep(0.2)
        raise InfraUnavailable(f"{asked.name} lists {seen} as running, not all of {sorted(expected)}")

    def _check_alive(self, node: RabbitNode) -> None:
        if node.process is not None and node.process.poll() is not None:
            raise _NodeExited(
                f"{node.name} exited with {node.process.returncode} while booting; its log ends:\n{node.log_tail()}"
            )

    def _wait_stopped(self, node: RabbitNode, timeout_s: float) -> None:
        if node.process is None:
            return
        try:
            node.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(RuntimeError, ProcessLookupError):
                os.kill(self._beam_pid(node), signal.SIGKILL)
            node.process.kill()
            node.process.wait()
        if node._out is not None:
            node._out.close()
            node._out = None

    def _beam_pid(self, node: RabbitNode) -> int:
        """The OS pid of the node's beam.smp: the pid file RabbitMQ writes, or the child of the
        start script, checked to be a beam.smp started with this node's name."""
        if not node.alive or node.process is None:
            raise ValueError(f"{node.name} is not running")
        candidates: list[int] = []
        with contextlib.suppress(OSError, ValueError):
            candidates.append(int(node.pid_file.read_text().strip()))
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{node.process.pid}/task/{node.process.pid}/children").read_text()
            candidates += [int(pid) for pid in children.split()]
        for pid in candidates:
            if _is_beam_of(pid, node.name):
                return pid
        raise RuntimeError(f"no beam.smp process found for {node.name} (start script pid {node.process.pid})")


class _NodeExited(RuntimeError):
    pass


@contextlib.contextmanager
def provide_rabbit_cluster(workdir: Path, size: int = 3) -> Iterator[RabbitCluster]:
    """`size` RabbitMQ nodes clustered on loopback, data and logs in `workdir`; every node is
    stopped afterwards, and nothing outside `workdir` is written or removed.

    Raises InfraUnavailable when rabbitmq-server is not installed or the cluster cannot form."""
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = RabbitCluster(workdir, size)
    cluster.start_all()
    try:
        yield cluster
    finally:
        cluster.close()


def _free_ports(count: int, taken: set[int]) -> list[int]:
    """Free loopback ports below the kernel's ephemeral range: a node keeps its ports across a
    restart, and while it is down an outgoing connection could take an ephemeral one."""
    low, high = 20_000, ephemeral_low() - 1
    if high - low < 1_000:
        low, high = 20_000, 65_535
    ports: list[int] = []
    while len(ports) < count and (port := port_in(low, high, taken, attempts=1_000)) is not None:
        ports.append(port)
    if len(ports) == count:
        return ports
    raise InfraUnavailable(f"found no {count} free ports between {low} and {high}")


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _state_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "X"


def _is_beam_of(pid: int, node_name: str) -> bool:
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != "beam.smp":
            return False
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"RABBITMQ_NODENAME={node_name}".encode() in environ


def _in_parallel(calls: Sequence[Callable[[], object]]) -> None:
    """Run the calls on threads; the first error is raised once all have ended."""
    with ThreadPoolExecutor(max_workers=max(1, len(calls))) as pool:
        futures = [pool.submit(call) for call in calls]
    for future in futures:
        future.result()
