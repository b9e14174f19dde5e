"""A real Apache Cassandra node on this machine, for tests, `make run` and `make bench`.

The jars come from Maven Central with Maven (`tools/cassandra/pom.xml` pins the version): the
first start copies cassandra-all and its runtime dependencies into a cache folder (`.cache/`
in the checkout, or PARLEY_CASSANDRA_HOME), and later starts use that folder without asking
Maven again. The node runs `org.apache.cassandra.service.CassandraDaemon` on Java 11 or 17
(what Cassandra 5.0 supports), with a cassandra.yaml written for a small machine: loopback
only, a small heap, one token, no gossip settle wait, no JMX, no snapshots on drop.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .images import image
from .infra import InfraUnavailable, free_port, terminate, use_containers

ROOT = Path(__file__).resolve().parents[3]
POM = ROOT / "tools" / "cassandra" / "pom.xml"

# What Cassandra 5.0 needs on Java 17 to reach the JDK internals it uses (the JPMS part of
# Apache Cassandra's conf/jvm17-server.options), plus the Netty settings from the same file.
JVM17_FLAGS = [
    "-Djdk.attach.allowAttachSelf=true",
    *(
        f"--add-exports={export}=ALL-UNNAMED"
        for export in (
            "java.base/jdk.internal.misc",
            "java.management.rmi/com.sun.jmx.remote.internal.rmi",
            "java.rmi/sun.rmi.registry",
            "java.rmi/sun.rmi.server",
            "java.sql/java.sql",
            "java.base/java.lang.ref",
            "jdk.unsupported/sun.misc",
            "jdk.compiler/com.sun.tools.javac.file",
            "jdk.attach/sun.tools.attach",
        )
    ),
    *(
        f"--add-opens={opened}=ALL-UNNAMED"
        for opened in (
            "java.base/java.lang.module",
            "java.base/jdk.internal.loader",
            "java.base/jdk.internal.ref",
            "java.base/jdk.internal.reflect",
            "java.base/jdk.internal.math",
            "java.base/jdk.internal.module",
            "java.base/jdk.internal.util.jar",
            "jdk.management/com.sun.management.internal",
            "java.base/sun.nio.ch",
            "java.base/java.io",
            "java.base/java.lang.reflect",
            "jdk.compiler/com.sun.tools.javac",
            "java.base/java.lang",
            "java.base/java.util",
        )
    ),
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
]

# The JVM and start-up flags of every node started here (a local one, or the image's).
NODE_FLAGS = [
    "-Xss256k",
    "-XX:+UseG1GC",
    "-XX:ParallelGCThreads=2",
    "-XX:ConcGCThreads=1",
    "-Djava.net.preferIPv4Stack=true",
    "-Dcassandra-foreground=yes",
    "-Dcassandra.skip_wait_for_gossip_to_settle=0",
    "-Dcassandra.ring_delay_ms=0",
    "-Dcassandra.superuser_setup_delay_ms=0",
    "-Dcassandra.consistent.rangemovement=false",
    *JVM17_FLAGS,
]

_LOGBACK = """<configuration>
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>{log}</file>
    <encoder><pattern>%-5level [%thread] %date{{ISO8601}} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
  <logger name="org.apache.cassandra" level="INFO"/>
  <logger name="com.thinkaurelius.thrift" level="ERROR"/>
</configuration>
"""


def cassandra_version(pom: Path = POM) -> str:
    match = re.search(r"<cassandra\.version>([^<]+)</cassandra\.version>", pom.read_text())
    if match is None:
        raise InfraUnavailable(f"{pom} names no cassandra.version")
    return match[1]


def cache_home() -> Path:
    return Path(os.environ.get("PARLEY_CASSANDRA_HOME") or ROOT / ".cache")


def java_binary() -> str:
    """A `java` Cassandra 5.0 runs on (11 or 17): JAVA_HOME's if it is one, else Debian's 17."""
    candidates: list[Path] = []
    if java_home := os.environ.get("JAVA_HOME"):
        candidates.append(Path(java_home))
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        candidates += sorted(p for p in jvm.iterdir() if re.search(r"(^|[^0-9])(17|11)([^0-9]|$)", p.name))
    for home in candidates:
        java = home / "bin" / "java"
        if java.is_file() and _java_major(str(java)) in (11, 17):
            return str(java)
    found = shutil.which("java")
    if found and _java_major(found) in (11, 17):
        return found
    raise InfraUnavailable("Cassandra 5.0 needs Java 11 or 17: run `apt-get install -y openjdk-17-jre-headless`")


def _java_major(java: str) -> int:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return 0
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if match is None:
        return 0
    major = int(match[1])
    return int(match[2] or 0) if major == 1 else major


def resolve_jars(version: str | None = None) -> Path:
    """The folder of Cassandra's jars, copied from Maven Central the first time only."""
    version = version or cassandra_version()
    lib = cache_home() / f"cassandra-{version}" / "lib"
    stamp = lib / ".complete"
    if stamp.is_file():
        return lib
    if shutil.which("mvn") is None:
        raise InfraUnavailable("Cassandra's jars come from Maven Central with Maven: run `apt-get install -y maven`")
    lib.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="lib-", dir=lib.parent))
    command = [
        "mvn",
        "-q",
        "-B",
        "-f",
        str(POM),
        "package",
        f"-Dcassandra.version={version}",
        f"-Dcassandra.lib={staging}",
        # Maven's own output folder for this pom, kept out of the checkout.
        f"-Dcassandra.target={lib.parent / 'maven-target'}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode != 0 or not any(staging.glob("cassandra-all-*.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        tail = (done.stdout + done.stderr).strip()[-3000:]
        raise InfraUnavailable(f"Maven could not fetch Cassandra {version}:\n$ {' '.join(command)}\n{tail}")
    if lib.exists():
        shutil.rmtree(lib)
    staging.rename(lib)
    stamp.write_text(version + "\n")
    return lib


@dataclass(frozen=True)
class CassandraNode:
    host: str
    port: int
    local_dc: str = "datacenter1"

    @property
    def contact_point(self) -> str:
        return f"{self.host}:{self.port}"


class LocalCassandra:
    """One Cassandra node on loopback, its data in `data_dir` (kept between starts)."""

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        *,
        native_port: int | None = None,
        heap_mb: int = 768,
        durable: bool = True,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.native_port = native_port
        self.storage_port: int | None = None
        self.heap_mb = heap_mb
        # False: system tables are not fsynced and commit logs are synced in batches, for a
        # node whose data is thrown away (tests); schema changes are then several times faster.
        self.durable = durable
        # cassandra.yaml settings over the ones written here (values as YAML text).
        self.settings = settings or {}
        self.process: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None
        self.node: CassandraNode | None = None

    def _write_config(self, native_port: int, storage_port: int) -> Path:
        conf = self.data_dir / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "cassandra.yaml").write_text(self.config_text(native_port, storage_port))
        (conf / "logback.xml").write_text(_LOGBACK.format(log=self.log_path))
        return conf

    def config_text(self, native_port: int, storage_port: int) -> str:
        """cassandra.yaml for this node (tools/containers renders the image's from it too)."""
        d = self.data_dir
        settings = {
            "cluster_name": "'parley-local'",
            "num_tokens": "1",
            "initial_token": "0",
            "partitioner": "org.apache.cassandra.dht.Murmur3Partitioner",
            "endpoint_snitch": "SimpleSnitch",
            "listen_address": "127.0.0.1",
            "rpc_address": "127.0.0.1",
            "storage_port": str(storage_port),
            "native_transport_port": str(native_port),
            "start_native_transport": "true",
            "data_file_directories": f"['{d / 'data'}']",
            "commitlog_directory": f"'{d / 'commitlog'}'",
            "saved_caches_directory": f"'{d / 'saved_caches'}'",
            "hints_directory": f"'{d / 'hints'}'",
            "cdc_raw_directory": f"'{d / 'cdc_raw'}'",
            "commitlog_sync": "periodic",
            "commitlog_sync_period": "10000ms",
            "commitlog_segment_size": "8MiB",
            "authenticator": "AllowAllAuthenticator",
            "authorizer": "AllowAllAuthorizer",
            "concurrent_reads": "8",
            "concurrent_writes": "8",
            "concurrent_counter_writes": "4",
            "concurrent_compactors": "1",
            "memtable_flush_writers": "1",
            "memtable_heap_space": "64MiB",
            "memtable_offheap_space": "64MiB",
            "key_cache_size": "8MiB",
            "counter_cache_size": "0MiB",
            "auto_snapshot": "false",
            "snapshot_before_compaction": "false",
            "compaction_throughput": "64MiB/s",
            "read_request_timeout": "5000ms",
            "write_request_timeout": "2000ms",
            "range_request_timeout": "10000ms",
            "request_timeout": "10000ms",
            "cas_contention_timeout": "1000ms",
            "hinted_handoff_enabled": "true",
            "dynamic_snitch": "false",
            "materialized_views_enabled": "false",
            "sasi_indexes_enabled": "false",
            **self.settings,
        }
        seeds = (
            "[{class_name: org.apache.cassandra.locator.SimpleSeedProvider,"
            f" parameters: [{{seeds: '127.0.0.1:{storage_port}'}}]}}]"
        )
        return "".join(f"{key}: {value}\n" for key, value in settings.items()) + f"seed_provider: {seeds}\n"

    def command(self, lib: Path, conf: Path) -> list[str]:
        flags = [
            f"-Xms{self.heap_mb}m",
            f"-Xmx{self.heap_mb}m",
            f"-Dcassandra.config=file://{conf / 'cassandra.yaml'}",
            f"-Dlogback.configurationFile=file://{conf / 'logback.xml'}",
            f"-Dcassandra.logdir={self.data_dir / 'logs'}",
            f"-Dcassandra.storagedir={self.data_dir}",
            *NODE_FLAGS,
            *([] if self.durable else ["-Dcassandra.unsafesystem=true"]),
            "-cp",
            f"{conf}:{lib}/*",
            "org.apache.cassandra.service.CassandraDaemon",
        ]
        return [java_binary(), *flags]

    def start(self, wait_s: float = 240.0) -> CassandraNode:
        lib = resolve_jars()
        # A restart keeps its ports: clients reconnect to where the node was.
        native_port = self.native_port = self.native_port or free_port()
        storage_port = self.storage_port = self.storage_port or free_port()
        conf = self._write_config(native_port, storage_port)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._out = open(self.log_path.with_suffix(".out"), "ab")
        self.process = subprocess.Popen(
            self.command(lib, conf),
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            start_new_session=True,
        )
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.stop()
                raise InfraUnavailable(f"Cassandra exited with {code} while starting:\n{self.log_tail()}")
            if _native_protocol_answers("127.0.0.1", native_port, tls="client_encryption_options" in self.settings):
                self.node = CassandraNode("127.0.0.1", native_port)
                return self.node
            time.sleep(0.5)
        self.stop()
        raise InfraUnavailable(
            f"Cassandra did not answer on 127.0.0.1:{native_port} in {wait_s:.0f}s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        texts = []
        for path in (self.log_path, self.log_path.with_suffix(".out")):
            if path.is_file():
                texts += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(texts[-lines:])

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM: Cassandra drains (flushes its memtables) and exits; killed past the timeout."""
        if self.process is not None:
            terminate(self.process, timeout_s)
        self.process = None
        self.node = None
        if self._out is not None:
            self._out.close()
            self._out = None

    def kill(self) -> None:
        """SIGKILL, as a crashed node: what is not in the commit log yet is lost."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


_OPTIONS = bytes([0x05, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00])  # v5 OPTIONS frame


def _native_protocol_answers(host: str, port: int, tls: bool = False) -> bool:
    """True once the native transport takes a connection and answers an OPTIONS request."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as raw:
            raw.settimeout(2.0)
            if not tls:
                raw.sendall(_OPTIONS)
                return len(raw.recv(9)) > 0
            # Only "does it answer": the certificate is the client's to check.
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            with context.wrap_socket(raw, server_hostname=host) as sock:
                sock.sendall(_OPTIONS)
                return len(sock.recv(9)) > 0
    except OSError:
        return False


@dataclass
class CassandraEndpoint:
    """A Cassandra cluster to use: where it is, and the local node when this process started it."""

    contact_points: tuple[str, ...]
    local_dc: str
    source: str  # "environment", "container" or "local"
    local: LocalCassandra | None = None

    def env(self, keyspace: str) -> dict[str, str]:
        """The history service's settings for this cluster (one replica per keyspace here)."""
        return {
            "PARLEY_HISTORY_STORE": "cassandra",
            "PARLEY_CASSANDRA_CONTACT_POINTS": ",".join(self.contact_points),
            "PARLEY_CASSANDRA_LOCAL_DC": self.local_dc,
            "PARLEY_CASSANDRA_KEYSPACE": keyspace,
            "PARLEY_CASSANDRA_REPLICATION_FACTOR": "1",
        }


def from_environment() -> CassandraEndpoint | None:
    """The cluster named by CASSANDRA_CONTACT_POINTS ("host" or "host:port", comma-separated)."""
    points = os.environ.get("CASSANDRA_CONTACT_POINTS", "").strip()
    if not points:
        return None
    return CassandraEndpoint(
        contact_points=tuple(p.strip() for p in points.split(",") if p.strip()),
        local_dc=os.environ.get("CASSANDRA_LOCAL_DC", "datacenter1"),
        source="environment",
    )


@contextlib.contextmanager
def provide_cassandra(
    workdir: Path, prefer_containers: bool = True, durable: bool = False, settings: dict[str, str] | None = None
) -> Iterator[CassandraEndpoint]:
    """A Cassandra cluster for a test session, a dev run or a benchmark.

    CASSANDRA_CONTACT_POINTS when set; else a container of the deployed version when a Docker
    engine answers (and `prefer_containers`; PARLEY_INFRA decides as for `infra.provide`),
    the image built here from the same jars (parley_dev.images); else a local node started
    from Maven Central's jars in `workdir`, stopped afterwards. `settings` (cassandra.yaml) and
    `durable` apply to both."""
    named = from_environment()
    if named is not None:
        yield named
        return
    if use_containers(prefer_containers):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from testcontainers.community.cassandra import CassandraContainer

            container = CassandraContainer(image("cassandra"))
            if settings:
                container.with_env("CASSANDRA_SETTINGS", json.dumps(settings))
            if not durable:
                jvm_opts = container.env.get("JVM_OPTS", "")
                container.with_env("JVM_OPTS", f"{jvm_opts} -Dcassandra.unsafesystem=true".strip())
            container.start()
        try:
            yield CassandraEndpoint(
                contact_points=tuple(f"{host}:{port}" for host, port in container.get_contact_points()),
                local_dc=container.get_local_datacenter(),
                source="container",
            )
        finally:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                container.stop()
        return
    node = LocalCassandra(workdir, workdir / "logs" / "system.log", durable=durable, settings=settings)
    started = node.start()
    try:
        yield CassandraEndpoint((started.contact_point,), started.local_dc, "local", node)
    finally:
        # A durable node drains (flushes its memtables) before it exits; a throw-away one (the
        # tests') is killed at once: nothing of it is kept, and a drain takes 15-25 s.
        node.stop(timeout_s=60.0 if durable else 0.0)
