"""Writes this node's cassandra.yaml and runs Cassandra in the foreground, its log on stdout.

The settings are /opt/cassandra/conf/cassandra.yaml (rendered at build time from
parley_dev.cassandra's settings for one small node) with this container's address, data
directory and the variables below; the JVM flags are /opt/cassandra/conf/jvm.options."""

import json
import os
import shlex
import socket
from pathlib import Path

CONF = Path("/opt/cassandra/conf")
DATA = Path("/var/lib/cassandra")


def address() -> str:
    """This container's address on its network (what clients and the node's peers reach)."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


settings: dict[str, str] = {}
for line in (CONF / "cassandra.yaml").read_text().splitlines():
    key, _, value = line.partition(": ")
    if key and not key.startswith("#"):
        settings[key] = value
here = address()
snitch = os.environ.get("CASSANDRA_ENDPOINT_SNITCH") or "GossipingPropertyFileSnitch"
settings.update(
    {
        "cluster_name": json.dumps(os.environ.get("CASSANDRA_CLUSTER_NAME") or "parley-local"),
        "listen_address": here,
        "rpc_address": "0.0.0.0",
        "broadcast_rpc_address": here,
        "endpoint_snitch": snitch,
        "seed_provider": (
            f"[{{class_name: org.apache.cassandra.locator.SimpleSeedProvider, parameters: [{{seeds: '{here}:7000'}}]}}]"
        ),
    }
)
extra = os.environ.get("CASSANDRA_SETTINGS", "").strip()
if extra:
    parsed = json.loads(extra)
    if not isinstance(parsed, dict):
        raise SystemExit("CASSANDRA_SETTINGS must be a JSON object of cassandra.yaml settings")
    settings.update({str(k): str(v) for k, v in parsed.items()})

run = DATA / "conf"
run.mkdir(parents=True, exist_ok=True)
(run / "cassandra.yaml").write_text("".join(f"{k}: {v}\n" for k, v in settings.items()))
dc = os.environ.get("CASSANDRA_DC") or "datacenter1"
(run / "cassandra-rackdc.properties").write_text(f"dc={dc}\nrack=rack1\nprefer_local=true\n")
(run / "logback.xml").write_text((CONF / "logback.xml").read_text())

heap = os.environ.get("MAX_HEAP_SIZE") or "512M"
young = os.environ.get("HEAP_NEWSIZE") or "128M"
flags = [line.strip() for line in (CONF / "jvm.options").read_text().splitlines() if line.strip()]
command = [
    "java",
    f"-Xms{heap}",
    f"-Xmx{heap}",
    f"-Xmn{young}",
    *flags,
    *shlex.split(os.environ.get("JVM_OPTS", "")),
    f"-Dcassandra.config=file://{run / 'cassandra.yaml'}",
    f"-Dlogback.configurationFile=file://{run / 'logback.xml'}",
    f"-Dcassandra.logdir={DATA / 'logs'}",
    f"-Dcassandra.storagedir={DATA}",
    "-cp",
    f"{run}:/opt/cassandra/lib/*",
    "org.apache.cassandra.service.CassandraDaemon",
]
os.execvp("java", command)
