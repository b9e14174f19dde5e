"""`make k8s-play`: deploy/k8s/overlays/local rendered by kustomize and played with `podman kube
play`; every probe of every container passes; a turn with a resume through the gateway's
published port, stored in history on Cassandra; then everything is torn down.

What podman 4.3 (Debian bookworm's) plays and what it does not, and so what this proves:
- Played: Deployments (one pod each, named <name>-pod-0, which is its DNS name on the play's
  network), ConfigMaps (envFrom and mounted as files), env from Secrets (secretKeyRef),
  initContainers, emptyDir volumes, a read-only root filesystem, runAsUser/runAsGroup, dropped
  capabilities, memory and CPU limits, and a hostPort; `for_podman` says what is adapted.
- Checked here rather than by podman: the probes (podman 4.3 runs none of them): each
  startupProbe, livenessProbe and readinessProbe (httpGet, grpc, tcpSocket, exec) is evaluated
  against the pod's address until it passes, as the kubelet would.
- Not played, checked only by `make k8s-check` (schemas and Parley's rules): Services (podman
  runs no Service; the overlay addresses pods by name instead), PodDisruptionBudgets,
  ServiceAccounts, the Namespace and its Pod Security labels, NetworkPolicies, KEDA and HPA
  (not in this overlay), rolling-update strategies, topology spread, preStop hooks.
- Ordering: podman runs an initContainer once when the pod starts, not again with back-off, so
  the data stores are played and probed first, then Parley's services (whose history pod runs
  its `migrate` initContainer against the ready Cassandra).
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from parley_dev import images
from parley_dev.infra import free_port

from .engine import REPO, EngineError, image_exists, podman, podman_binary, podman_env

OVERLAY = REPO / "deploy" / "k8s" / "overlays" / "local"
NETWORK = "parley-play"
PLAYED_KINDS = ("ConfigMap", "Deployment")
API_USER = "local"
# The play's own podman volumes (one per emptyDir), removed at teardown.
PREFIX = "parley-play-"


@dataclass
class Played:
    """One played Deployment: its pod, containers and probes."""

    name: str
    manifest: dict[str, Any]

    @property
    def pod(self) -> str:
        return f"{self.name}-pod-0"

    def containers(self) -> list[dict[str, Any]]:
        return list(self.manifest["spec"]["template"]["spec"]["containers"])


def render() -> list[dict[str, Any]]:
    from tools.k8s_check.cli import DEFAULT_TOOLS_DIR, build, ensure_tools

    text, problems = build(ensure_tools(DEFAULT_TOOLS_DIR), OVERLAY)
    if problems:
        raise EngineError("; ".join(problems))
    return [dict(o) for o in yaml.safe_load_all(text) if o]


def check_images(objects: list[dict[str, Any]]) -> None:
    """Every image the play runs is built here (`make images`), under the names it uses."""
    wanted = {f"{images.APP}:latest", *(images.default_image(n) for n in images.INFRA)}
    used = {
        c["image"]
        for o in objects
        if o.get("kind") == "Deployment"
        for c in [
            *o["spec"]["template"]["spec"].get("initContainers", []),
            *o["spec"]["template"]["spec"]["containers"],
        ]
    }
    if used - wanted:
        raise EngineError(f"the local overlay runs images `make images` does not build: {sorted(used - wanted)}")
    missing = sorted(name for name in used if not image_exists(name))
    if missing:
        raise EngineError(f"not built: {missing}; run `make images`")


def publish_gateway(objects: list[dict[str, Any]]) -> int:
    """The gateway's http port on a free loopback port of this machine (a hostPort)."""
    port: int = free_port()
    for obj in objects:
        if obj.get("kind") == "Deployment" and obj["metadata"]["name"] == "gateway":
            for container_port in obj["spec"]["template"]["spec"]["containers"][0]["ports"]:
                if container_port.get("name") == "http":
                    container_port.update(hostPort=port, hostIP="127.0.0.1")
                    return port
    raise EngineError("the local overlay has no gateway Deployment with an `http` port")


def for_podman(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects as podman 4.3 must be given them to mean what they mean in Kubernetes:
    - it publishes every containerPort on the host's same port (in Kubernetes a containerPort
      publishes nothing), so only ports with a hostPort are kept; probes and services reach the
      pods by their addresses, as in a cluster;
    - it makes an emptyDir a named volume, shared by every pod whose emptyDir has that name and
      kept after the play, so each emptyDir is named after its Deployment (`play_volumes` lists
      them, and the ConfigMaps' volumes, removed at teardown);
    - it applies the pod's restart policy to initContainers too: under `Always` it restarts a
      `migrate` that finished, then fails to remove it, so a pod with initContainers restarts
      its containers on failure only;
    - it refuses the downward API's `metadata.namespace` (it has no namespaces), so that field
      becomes the Deployment's namespace written out, which is what a cluster would fill in."""
    copies: list[dict[str, Any]] = json.loads(json.dumps(objects))
    for obj in copies:
        if obj.get("kind") != "Deployment":
            continue
        spec = obj["spec"]["template"]["spec"]
        if spec.get("initContainers"):
            spec["restartPolicy"] = "OnFailure"
        renamed = {}
        for volume in spec.get("volumes", []):
            if "emptyDir" in volume:
                renamed[volume["name"]] = volume["name"] = f"{PREFIX}{obj['metadata']['name']}-{volume['name']}"
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            kept = [p for p in container.get("ports", []) if p.get("hostPort")]
            if kept:
                container["ports"] = kept
            else:
                container.pop("ports", None)
            for mount in container.get("volumeMounts", []):
                mount["name"] = renamed.get(mount["name"], mount["name"])
            for env in container.get("env", []):
                field = env.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                if field == "metadata.namespace":
                    del env["valueFrom"]
                    env["value"] = obj["metadata"].get("namespace", "default")
    return copies


def play_volumes(objects: list[dict[str, Any]]) -> list[str]:
    """The podman volumes a play makes: one per emptyDir, one per mounted ConfigMap."""
    names = []
    for obj in objects:
        if obj.get("kind") == "Deployment":
            for volume in obj["spec"]["template"]["spec"].get("volumes", []):
                if "emptyDir" in volume:
                    names.append(volume["name"])
                elif "configMap" in volume:
                    names.append(volume["configMap"]["name"])
    return sorted(set(names))


def make_secrets() -> tuple[dict[str, dict[str, str]], str]:
    """parley-secrets and parley-dev-infra with fresh random values; and the API key."""
    rabbit = secrets.token_hex(16)
    api_key = "pk_play_" + secrets.token_urlsafe(24)
    return {
        "parley-dev-infra": {"rabbitmq-password": rabbit},
        "parley-secrets": {
            "amqp-url": f"amqp://parley:{rabbit}@rabbitmq-pod-0:5672/",
            "redis-url": "redis://redis-pod-0:6379/0",
            "api-keys": json.dumps({API_USER: api_key}),
            "s3-access-key": "PK" + secrets.token_hex(9).upper(),
            "s3-secret-key": secrets.token_urlsafe(30),
        },
    }, api_key


def create_secrets(values: dict[str, dict[str, str]], folder: Path) -> None:
    """podman 4.3 reads a secretKeyRef from a podman secret holding a JSON object of
    base64-encoded values (a Secret manifest it cannot use), so the play creates those."""
    for name, data in values.items():
        podman("secret", "rm", name, check=False, capture=True)
        path = folder / f"{name}.json"
        path.write_text(json.dumps({k: base64.b64encode(v.encode()).decode() for k, v in data.items()}))
        path.chmod(0o600)
        podman("secret", "create", name, str(path), capture=True)
        path.unlink()


def pod_address(pod: str) -> str:
    infra = podman("pod", "inspect", pod, "--format", "{{.InfraContainerID}}", capture=True).strip()
    fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
    address = podman("inspect", infra, "--format", fmt, capture=True).strip()
    if not address:
        raise EngineError(f"pod {pod} has no address on {NETWORK}")
    return address


def container_state(name: str) -> str:
    return podman("inspect", name, "--format", "{{.State.Status}}", capture=True, check=False).strip() or "missing"


def container_logs(name: str, lines: int = 30) -> str:
    return podman("logs", "--tail", str(lines), name, capture=True, check=False).strip()


def probe_passes(probe: dict[str, Any], container: dict[str, Any], address: str, container_name: str) -> bool:
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}

    def port_of(spec: dict[str, Any]) -> int:
        port = spec["port"]
        return int(ports[port]) if isinstance(port, str) else int(port)

    timeout = float(probe.get("timeoutSeconds", 1))
    try:
        if "httpGet" in probe:
            spec = probe["httpGet"]
            url = f"http://{address}:{port_of(spec)}{spec.get('path', '/')}"
            return 200 <= httpx.get(url, timeout=timeout).status_code < 400
        if "tcpSocket" in probe:
            with socket.create_connection((address, port_of(probe["tcpSocket"])), timeout=timeout):
                return True
        if "grpc" in probe:
            with grpc.insecure_channel(f"{address}:{port_of(probe['grpc'])}") as channel:
                request = health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", ""))
                reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout)
                return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
        if "exec" in probe:
            done = subprocess.run(
                [podman_binary(), "exec", container_name, *probe["exec"]["command"]], env=podman_env(),
                capture_output=True, timeout=timeout + 10, check=False,
            )  # fmt: skip
            return done.returncode == 0
    except (OSError, httpx.HTTPError, grpc.RpcError, subprocess.TimeoutExpired):
        return False
    raise EngineError(f"{container_name}: a probe of a kind the play does not know: {sorted(probe)}")


def wait_for_probes(played: list[Played], timeout_s: float) -> None:
    """Until every probe of every container passes; a container that stops fails the play."""
    started = time.monotonic()
    pending = {
        (p.pod, c["name"], kind): (p, c, c[kind])
        for p in played
        for c in p.containers()
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
        if kind in c
    }
    addresses: dict[str, str] = {}
    while pending:
        for key, (played_one, container, probe) in list(pending.items()):
            name = f"{played_one.pod}-{container['name']}"
            state = container_state(name)
            if state not in ("running", "created", "configured"):
                how = "exit code {{.State.ExitCode}}, OOM-killed {{.State.OOMKilled}}, {{.State.Error}}"
                detail = podman("inspect", name, "--format", how, capture=True, check=False).strip()
                raise EngineError(f"{name} is {state} ({detail}):\n{container_logs(name)}")
            address = addresses.get(played_one.pod) or addresses.setdefault(played_one.pod, pod_address(played_one.pod))
            if probe_passes(probe, container, address, name):
                print(f"  {name}: {key[2]} passes ({time.monotonic() - started:.0f} s)", flush=True)
                del pending[key]
        if pending and time.monotonic() - started > timeout_s:
            waiting = sorted(f"{pod}/{c} {kind}" for pod, c, kind in pending)
            logs = "\n".join(f"--- {p}-{c}\n{container_logs(f'{p}-{c}')}" for p, c, _ in pending)
            raise EngineError(f"probes still failing after {timeout_s:.0f} s: {waiting}\n{logs}")
        time.sleep(1.0)


def sse_frames(response: httpx.Response, limit: int | None = None) -> list[dict[str, Any]]:
    """SSE frames as dicts (event, id, data), up to `done`/`error` or `limit` frames."""
    out: list[dict[str, Any]] = []
    event, data, frame_id = "message", list[str](), None
    for line in response.iter_lines():
        if line == "":
            if data:
                out.append({"event": event, "id": frame_id, "data": json.loads("\n".join(data))})
                if out[-1]["event"] in ("done", "error") or (limit is not None and len(out) >= limit):
                    return out
            event, data, frame_id = "message", [], None
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                frame_id = int(value)
    return out


def turn_with_resume(port: int, api_key: str, timeout_s: float = 60.0) -> str:
    """A message through the published gateway port: read three frames, drop the connection,
    resume with Last-Event-ID to `done`; the answer is then stored in history (on Cassandra)."""
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as client:
        created = client.post("/v1/conversations", json={"title": "k8s-play"})
        if created.status_code != 201:
            raise EngineError(f"POST /v1/conversations: {created.status_code} {created.text[:300]}")
        conversation = created.json()["id"]
        body = {"content": "Hello from podman kube play", "model": "demo"}
        with client.stream("POST", f"/v1/conversations/{conversation}/messages", json=body) as r:
            if r.status_code != 200:
                raise EngineError(f"POST messages: {r.status_code} {r.read()[:300]!r}")
            response_id = r.headers["x-parley-response-id"]
            first = sse_frames(r, limit=3)
        last = first[-1]["id"]
        resume_headers = {"Last-Event-ID": str(last)}
        with client.stream("GET", f"/v1/responses/{response_id}/events", headers=resume_headers) as r:
            if r.status_code != 200:
                raise EngineError(f"resume: {r.status_code}")
            rest = sse_frames(r)
        if not rest or rest[0]["id"] != last + 1 or rest[-1]["event"] != "done":
            raise EngineError(f"the resume did not continue after frame {last} to done: {rest[:2]} … {rest[-1:]}")
        text = "".join(f["data"]["text"] for f in first + rest if f["event"] == "delta")
        deadline = time.monotonic() + timeout_s
        while True:
            stored = client.get(f"/v1/conversations/{conversation}/messages").json().get("data", [])
            if [(m["role"], m["status"]) for m in stored] == [("assistant", "complete"), ("user", "complete")]:
                if stored[0]["content"] != text:
                    raise EngineError("the stored answer is not the streamed one")
                return text
            if time.monotonic() > deadline:
                raise EngineError(f"the turn was not stored in history within {timeout_s:.0f} s: {stored}")
            time.sleep(0.5)


def play_local() -> int:
    started = time.monotonic()
    objects = render()
    check_images(objects)
    skipped = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objects if o.get("kind") not in PLAYED_KINDS)
    print(f"not played (podman runs none; checked by make k8s-check): {', '.join(skipped)}", flush=True)
    played_objects = [o for o in objects if o.get("kind") in PLAYED_KINDS]
    port = publish_gateway(played_objects)
    parley = [o for o in played_objects if o["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "parley"]
    stores = [o for o in played_objects if o not in parley]
    values, api_key = make_secrets()
    with tempfile.TemporaryDirectory(prefix="k8s-play-") as tmp:
        folder = Path(tmp)
        files = []
        groups = {"stores": stores, "parley": parley}
        pods = [f"{o['metadata']['name']}-pod-0" for o in played_objects if o["kind"] == "Deployment"]
        volumes: list[str] = []
        for name, group in groups.items():
            path = folder / f"{name}.yaml"
            given = for_podman(group)
            volumes += play_volumes(given)
            path.write_text(yaml.safe_dump_all(given, sort_keys=False))
            files.append(path)
        if NETWORK not in podman("network", "ls", "--format", "{{.Name}}", capture=True).split():
            podman("network", "create", NETWORK, capture=True)
        try:
            # What a play that was killed left behind, gone first.
            podman("pod", "rm", "--force", "--ignore", *pods, check=False, capture=True, timeout=180)
            create_secrets(values, folder)
            for path, timeout_s in zip(files, (300.0, 240.0), strict=True):
                since = time.monotonic()
                podman("kube", "play", "--replace", "--network", NETWORK, str(path), capture=True)
                deployments = [Played(o["metadata"]["name"], o) for o in groups[path.stem] if o["kind"] == "Deployment"]
                print(f"played {path.stem}: {', '.join(d.pod for d in deployments)}", flush=True)
                wait_for_probes(deployments, timeout_s)
                print(f"{path.stem}: every probe passes ({time.monotonic() - since:.0f} s)", flush=True)
            since = time.monotonic()
            text = turn_with_resume(port, api_key)
            print(f"a turn with a resume through 127.0.0.1:{port}: {len(text)} characters, stored in history "
                  f"({time.monotonic() - since:.1f} s)", flush=True)  # fmt: skip
        except EngineError as exc:
            print(f"k8s-play failed: {exc}", flush=True)
            return 1
        finally:
            for path in reversed(files):
                podman("kube", "play", "--down", str(path), check=False, capture=True, timeout=180)
            # A play that failed half-way leaves pods `--down` does not know of.
            podman("pod", "rm", "--force", "--ignore", *pods, check=False, capture=True, timeout=180)
            for name in values:
                podman("secret", "rm", name, check=False, capture=True)
            for volume in volumes:
                podman("volume", "rm", "--force", volume, check=False, capture=True)
            podman("network", "rm", NETWORK, check=False, capture=True)
    print(f"k8s-play passed in {time.monotonic() - started:.0f} s", flush=True)
    return 0
