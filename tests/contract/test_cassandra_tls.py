"""TLS to Cassandra, against a real node that takes only TLS connections: the store connects
when it trusts the node's certificate (hostname checked against the address dialled), and
refuses a node it cannot trust or one that speaks plain text to it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from parley_common.errors import Unavailable
from parley_dev.cassandra import CassandraNode, LocalCassandra, java_binary
from parley_dev.infra import InfraUnavailable
from parley_history.cassandra_session import CassandraConfig, CassandraSession
from tests.required import unavailable

PASSWORD = "parley-test"


def self_signed(workdir: Path) -> tuple[Path, Path]:
    """A PKCS12 keystore for the node (a self-signed certificate for 127.0.0.1 and localhost),
    and that certificate in PEM, for the client to trust."""
    keytool = str(Path(java_binary()).parent / "keytool")
    keystore, pem = workdir / "node.p12", workdir / "node.pem"
    subprocess.run(
        [
            keytool, "-genkeypair", "-alias", "node", "-keyalg", "RSA", "-keysize", "2048", "-validity", "2",
            "-dname", "CN=localhost", "-ext", "SAN=ip:127.0.0.1,dns:localhost", "-keystore", str(keystore),
            "-storetype", "PKCS12", "-storepass", PASSWORD, "-keypass", PASSWORD,
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    subprocess.run(
        [keytool, "-exportcert", "-alias", "node", "-keystore", str(keystore), "-storepass", PASSWORD, "-rfc",
         "-file", str(pem)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return keystore, pem


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CassandraNode, Path]]:
    workdir = tmp_path_factory.mktemp("cassandra-tls")
    try:
        keystore, pem = self_signed(workdir)
        encryption = (
            f"{{enabled: true, optional: false, keystore: '{keystore}', keystore_password: '{PASSWORD}',"
            " store_type: PKCS12, require_client_auth: false}"
        )
        node = LocalCassandra(
            workdir, workdir / "logs" / "system.log", durable=False, settings={"client_encryption_options": encryption}
        )
        started = node.start()
    except (InfraUnavailable, OSError, subprocess.CalledProcessError) as exc:
        unavailable("cassandra", f"no local Cassandra node with TLS: {exc}")
    try:
        yield started, pem
    finally:
        node.stop()


def config(node: CassandraNode, **tls: object) -> CassandraConfig:
    return CassandraConfig(contact_points=(node.contact_point,), local_dc=node.local_dc, connect_timeout_s=10, **tls)  # type: ignore[arg-type]


async def test_the_store_connects_over_tls_to_a_node_it_trusts(tls_node: tuple[CassandraNode, Path]) -> None:
    node, pem = tls_node
    session = await CassandraSession.connect(config(node, tls=True, tls_ca_file=pem, tls_verify_hostname=True))
    try:
        rows = await session.execute("SELECT release_version FROM system.local")
        assert rows[0]["release_version"].startswith("5.0")
    finally:
        await session.close()


async def test_a_node_it_cannot_trust_or_plain_text_is_refused(tls_node: tuple[CassandraNode, Path]) -> None:
    node, _ = tls_node
    with pytest.raises(Unavailable):  # the system's CAs do not know a self-signed certificate
        await CassandraSession.connect(config(node, tls=True))
    with pytest.raises(Unavailable):  # the node takes TLS only
        await CassandraSession.connect(config(node))
