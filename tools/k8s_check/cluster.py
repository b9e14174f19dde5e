"""Rules for what breaks or hurts on a real cluster, beyond consistency (issue 23): probes that
mean what they say and are sized from the settings, graceful stops long enough for the work,
scraping and autoscaling on what matters, gRPC balanced over pods, the edge set for SSE, data
stores reachable through the network policies, images that `make image` makes or digests."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from parley_dev import images

from .objects import Manifest, all_containers, kind_name, pod_labels, pod_spec, selects

if TYPE_CHECKING:
    from .rules import ParleyContainer

# A started process may still wait this long on top of its connection timeouts (imports, the
# model registry, tiktoken's encodings).
STARTUP_MARGIN_S = 20.0
# A gateway keeps serving after it is marked terminating until load balancers that target pod
# IPs have deregistered it (their health checks and sync take 10 s or more).
MIN_GATEWAY_PRESTOP_S = 10.0
# Edge read/idle timeouts must be well above the keep-alive comment's interval.
HEARTBEATS_PER_EDGE_TIMEOUT = 10
# The image `make image` builds and `kind load`/`make k8s-play` use (tools/containers).
LOCAL_IMAGE = f"{images.APP}:latest"
LOCAL_OVERLAYS = {"dev", "local"}
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
ACTIVE_STREAMS = "parley_active_streams"


def _probe_budget(probe: Manifest) -> float:
    """Seconds a probe keeps trying before the kubelet gives up (Kubernetes' defaults)."""
    return float(probe.get("initialDelaySeconds", 0)) + float(probe.get("periodSeconds", 10)) * float(
        probe.get("failureThreshold", 3)
    )


def probe_problems(pc: ParleyContainer) -> list[str]:
    """Liveness never follows a dependency; the startup budget covers the connect timeouts."""
    if pc.init or pc.settings is None:
        return []
    problems: list[str] = []
    for name in ("startupProbe", "livenessProbe"):
        probe = pc.container.get(name) or {}
        if "grpc" in probe:
            problems.append(
                f"{pc.where}: {name} asks the gRPC health, which follows the service's dependencies;"
                " a dependency's outage would restart every pod: probe /healthz on the operations port"
            )
    startup = pc.container.get("startupProbe")
    connect = float(getattr(pc.settings, "connect_timeout_s", 0))
    # history connects to its store, then to the broker, each up to the connect timeout.
    waits = 2 if getattr(pc.settings, "history_store", None) == "cassandra" else 1
    needed = waits * connect + STARTUP_MARGIN_S
    if startup is not None and _probe_budget(startup) < needed:
        problems.append(
            f"{pc.where}: startupProbe gives up after {_probe_budget(startup):g} s, but starting may take"
            f" {waits} x PARLEY_CONNECT_TIMEOUT_S {connect:g} s + {STARTUP_MARGIN_S:g} s = {needed:g} s:"
            " pods would be killed during a failover just before they connect"
        )
    return problems


def served_metrics_port(pc: ParleyContainer) -> int | None:
    """Where the container serves /metrics: the gateway on its HTTP port, the others on the
    operations port (None when not served)."""
    if pc.module == "parley_gateway":
        return int(getattr(pc.settings, "port", 0)) or None
    return int(getattr(pc.settings, "metrics_port", 0)) or None


def scrape_problems(pc: ParleyContainer) -> list[str]:
    """Every service serves /metrics on its named port, and its pods say where to scrape it."""
    if pc.init or pc.settings is None:
        return []
    problems: list[str] = []
    ports = {p.get("name"): p.get("containerPort") for p in pc.container.get("ports") or []}
    served = served_metrics_port(pc)
    if pc.module != "parley_gateway":
        if served is None:
            problems.append(f"{pc.where}: PARLEY_METRICS_PORT is 0: no /metrics, /healthz or /readyz is served")
        elif ports.get("metrics") != served:
            problems.append(
                f"{pc.where}: serves its operations port on PARLEY_METRICS_PORT={served}, but its"
                f" containerPort 'metrics' is {ports.get('metrics')}"
            )
    annotations = ((pc.workload.get("spec") or {}).get("template") or {}).get("metadata", {}).get("annotations") or {}
    if annotations.get("prometheus.io/scrape") != "true" or str(annotations.get("prometheus.io/port")) != str(served):
        problems.append(
            f'{pc.where}: the pod template needs prometheus.io/scrape "true" and prometheus.io/port'
            f' "{served}" (where it serves /metrics)'
        )
    return problems


def worker_grace_problems(pc: ParleyContainer) -> list[str]:
    """A worker lets its running answers finish: its grace covers the longest answer."""
    total = getattr(pc.settings, "provider_total_timeout_s", None)
    grace = getattr(pc.settings, "shutdown_grace_s", None)
    if pc.init or total is None or grace is None or float(grace) >= float(total):
        return []
    return [
        f"{pc.where}: PARLEY_SHUTDOWN_GRACE_S {grace:g} s < PARLEY_PROVIDER_TOTAL_TIMEOUT_S {total:g} s:"
        " every rollout, scale-in and node drain would cut running answers short"
    ]


def prestop_problems(pc: ParleyContainer, prestop_s: float) -> list[str]:
    if pc.module != "parley_gateway" or pc.init or prestop_s >= MIN_GATEWAY_PRESTOP_S:
        return []
    return [
        f"{pc.where}: preStop sleeps {prestop_s:g} s; load balancers that target pod IPs need"
        f" {MIN_GATEWAY_PRESTOP_S:g} s or more to stop sending it requests"
    ]


def _services(objects: list[Manifest]) -> dict[str, Manifest]:
    return {o["metadata"]["name"]: o for o in objects if o.get("kind") == "Service"}


def grpc_target_problems(pc: ParleyContainer, objects: list[Manifest]) -> list[str]:
    """A gRPC target naming a Service goes through DNS to a headless Service (round-robin)."""
    if pc.settings is None:
        return []
    problems: list[str] = []
    services = _services(objects)
    for field in type(pc.settings).model_fields:
        if not field.endswith("_grpc_target"):
            continue
        target = str(getattr(pc.settings, field))
        host = target.removeprefix("dns:///").rsplit(":", 1)[0].split(".", 1)[0]
        service = services.get(host)
        if service is None:
            continue
        env = f"PARLEY_{field.upper()}"
        if not target.startswith("dns:///"):
            problems.append(
                f"{pc.where}: {env}={target} names Service {host} without dns:///: the channel keeps one"
                " connection to one address, so calls never spread over the pods"
            )
        if (service.get("spec") or {}).get("clusterIP") != "None":
            problems.append(
                f"{pc.where}: {env} goes to Service/{host}, which is not headless (clusterIP: None):"
                " behind one virtual IP every client stays pinned to one pod"
            )
    return problems


def disruption_problems(objects: list[Manifest]) -> list[str]:
    """PDBs never stall a drain on a pod that is not ready; spreading never leaves pods Pending."""
    problems: list[str] = []
    for obj in objects:
        if obj.get("kind") == "PodDisruptionBudget":
            if (obj.get("spec") or {}).get("unhealthyPodEvictionPolicy") != "AlwaysAllow":
                problems.append(
                    f"{kind_name(obj)}: needs unhealthyPodEvictionPolicy: AlwaysAllow, or a drain stalls"
                    " whenever a pod's readiness drops"
                )
        pod = pod_spec(obj)
        if pod is None or obj.get("kind") != "Deployment":
            continue
        for constraint in pod.get("topologySpreadConstraints") or []:
            if (
                constraint.get("topologyKey") == "kubernetes.io/hostname"
                and constraint.get("whenUnsatisfiable", "DoNotSchedule") == "DoNotSchedule"
            ):
                problems.append(
                    f"{kind_name(obj)}: a hard per-node topology spread leaves replicas Pending once there"
                    " are more of them than schedulable nodes: use whenUnsatisfiable: ScheduleAnyway"
                )
    return problems


def autoscaling_problems(objects: list[Manifest], containers: list[ParleyContainer]) -> list[str]:
    """The gateway scales on its open streams; KEDA reads a Secret no Parley pod reads."""
    problems: list[str] = []
    gateways = {pc.workload["metadata"]["name"] for pc in containers if pc.module == "parley_gateway"}
    for obj in objects:
        spec = obj.get("spec") or {}
        if obj.get("kind") == "HorizontalPodAutoscaler" and (spec.get("scaleTargetRef") or {}).get("name") in gateways:
            metrics = [((m.get("pods") or {}).get("metric") or {}).get("name") for m in spec.get("metrics") or []]
            if ACTIVE_STREAMS not in metrics:
                problems.append(
                    f"{kind_name(obj)}: scales the gateway without a Pods metric {ACTIVE_STREAMS}: open SSE"
                    " streams cost memory and sockets, not CPU"
                )
    pod_secrets = {
        str(((item.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name"))
        for pc in containers
        for item in pc.container.get("env") or []
        if (item.get("valueFrom") or {}).get("secretKeyRef")
    }
    for obj in objects:
        if obj.get("kind") != "TriggerAuthentication":
            continue
        for ref in (obj.get("spec") or {}).get("secretTargetRef") or []:
            if ref.get("name") in pod_secrets:
                problems.append(
                    f"{kind_name(obj)}: reads Secret {ref.get('name')}, which Parley's pods read too: KEDA's"
                    " operator would be able to read provider and API keys; give it a Secret of its own"
                )
    return problems


def _port_of(url: str, default_http: int, default_https: int) -> int | None:
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    return parts.port or (default_https if parts.scheme == "https" else default_http)


def needed_egress(pc: ParleyContainer) -> dict[str, int]:
    """Ports the container dials that its settings show (what a NetworkPolicy must allow)."""
    needed: dict[str, int] = {}
    if getattr(pc.settings, "history_store", None) == "cassandra":
        needed["PARLEY_CASSANDRA_PORT"] = int(getattr(pc.settings, "cassandra_port"))  # noqa: B009
    otlp = str(getattr(pc.settings, "otlp_endpoint", "") or "")
    port = _port_of(otlp, 80, 443) if otlp else None
    if port is not None:
        needed["PARLEY_OTLP_ENDPOINT"] = port
    return needed


def _allows_egress(policies: list[Manifest], labels: Mapping[str, str], port: int) -> bool:
    for policy in policies:
        spec = policy.get("spec") or {}
        if "Egress" not in (spec.get("policyTypes") or []) or not selects(spec.get("podSelector") or {}, labels):
            continue
        for rule in spec.get("egress") or []:
            ports = rule.get("ports")
            if not ports or any(p.get("port") == port or p.get("port") is None for p in ports):
                return True
    return False


def egress_problems(objects: list[Manifest], containers: list[ParleyContainer]) -> list[str]:
    """With network policies on, every port a service's settings dial is allowed out."""
    policies = [o for o in objects if o.get("kind") == "NetworkPolicy"]
    if not policies:
        return []
    problems: list[str] = []
    for pc in containers:
        if pc.settings is None:
            continue
        labels = pod_labels(pc.workload)
        for setting, port in sorted(needed_egress(pc).items()):
            if not _allows_egress(policies, labels, port):
                problems.append(
                    f"{pc.where}: dials port {port} ({setting}), which no NetworkPolicy lets it reach:"
                    " patch the port of the matching egress policy in the overlay"
                )
    return problems


def _seconds(value: Any) -> float | None:
    """A Gateway API duration ("0s", "1h", "30m", "15s", "500ms") or nginx's plain seconds."""
    text = str(value).strip()
    if re.fullmatch(r"\d+", text):
        return float(text)
    total, found = 0.0, False
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text):
        found = True
        total += float(amount) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return total if found else None


def _bytes(value: Any) -> float | None:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgG]?)", str(value).strip())
    if match is None:
        return None
    return float(match.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2).lower()]


def edge_problems(objects: list[Manifest], containers: list[ParleyContainer]) -> list[str]:
    """Ingresses and HTTPRoutes to the gateway are set for long SSE streams and 20 MB uploads."""
    gateway = next((pc for pc in containers if pc.module == "parley_gateway" and pc.settings), None)
    media = next((pc for pc in containers if pc.module == "parley_media" and pc.settings), None)
    if gateway is None:
        return []
    heartbeat = float(getattr(gateway.settings, "heartbeat_s", 15))
    upload = float(getattr(media.settings, "media_max_upload_bytes", 20_000_000)) if media else 20_000_000.0
    problems: list[str] = []
    for obj in objects:
        where, spec = kind_name(obj), obj.get("spec") or {}
        if obj.get("kind") == "Ingress" and _ingress_backends(spec) & {gateway.workload["metadata"]["name"]}:
            notes = (obj.get("metadata") or {}).get("annotations") or {}
            prefix = "nginx.ingress.kubernetes.io/"
            if spec.get("ingressClassName") == "nginx" or any(k.startswith(prefix) for k in notes):
                if notes.get(prefix + "proxy-buffering") != "off":
                    problems.append(f'{where}: {prefix}proxy-buffering must be "off": SSE frames would be held')
                for name in ("proxy-read-timeout", "proxy-send-timeout"):
                    seconds = _seconds(notes.get(prefix + name, "60"))
                    if seconds is None or seconds < HEARTBEATS_PER_EDGE_TIMEOUT * heartbeat:
                        problems.append(
                            f"{where}: {prefix}{name} {notes.get(prefix + name, '60 (default)')} is not well above"
                            f" PARLEY_HEARTBEAT_S {heartbeat:g} s (at least {HEARTBEATS_PER_EDGE_TIMEOUT}x)"
                        )
                size = _bytes(notes.get(prefix + "proxy-body-size", "1m"))
                if size is None or size < upload:
                    problems.append(
                        f"{where}: {prefix}proxy-body-size {notes.get(prefix + 'proxy-body-size', '1m (default)')}"
                        f" is below the largest upload ({upload:.0f} bytes, PARLEY_MEDIA_MAX_UPLOAD_BYTES)"
                    )
            if not spec.get("tls"):
                problems.append(f"{where}: no tls: browsers get HTTP/2 (many streams on one connection) only over TLS")
        if obj.get("kind") == "HTTPRoute":
            for rule in spec.get("rules") or []:
                names = {ref.get("name") for ref in rule.get("backendRefs") or []}
                if gateway.workload["metadata"]["name"] not in names:
                    continue
                timeouts = rule.get("timeouts") or {}
                for name in ("request", "backendRequest"):
                    if _seconds(timeouts.get(name, "15s")) != 0:
                        problems.append(
                            f'{where}: timeouts.{name} must be "0s" (off): a whole-response timeout'
                            f" (Envoy's default 15 s) ends every longer SSE answer; it is {timeouts.get(name, 'unset')}"
                        )
        if obj.get("kind") == "Gateway":
            if not any(listener.get("protocol") == "HTTPS" for listener in spec.get("listeners") or []):
                problems.append(f"{where}: no HTTPS listener: browsers get HTTP/2 only over TLS")
    return problems


def _ingress_backends(spec: Manifest) -> set[str]:
    names = {str(((spec.get("defaultBackend") or {}).get("service") or {}).get("name"))}
    for rule in spec.get("rules") or []:
        for path in (rule.get("http") or {}).get("paths") or []:
            names.add(str(((path.get("backend") or {}).get("service") or {}).get("name")))
    return names


def image_problems(objects: list[Manifest], build: str) -> list[str]:
    """dev and local run what `make image` builds; every other overlay pins a digest."""
    if build == "base":
        return []
    problems: list[str] = []
    seen: set[str] = set()
    for obj in objects:
        for container in all_containers(pod_spec(obj) or {}):
            image = str(container.get("image", ""))
            if image.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0] != "parley" or image in seen:
                continue
            seen.add(image)
            if build in LOCAL_OVERLAYS and image != LOCAL_IMAGE:
                problems.append(
                    f"{kind_name(obj)}: runs {image}, but `make image` builds {LOCAL_IMAGE} (and"
                    f" {images.APP}:<commit>): following the README would end in ErrImagePull"
                )
            if build not in LOCAL_OVERLAYS and not DIGEST.search(image):
                problems.append(
                    f"{kind_name(obj)}: runs {image}, a tag that can be pushed again: pin the image by digest"
                    " (@sha256:…)"
                )
    return problems


def namespace_owner_problems(objects: list[Manifest], build: str) -> list[str]:
    """The application does not own its Namespace (deleting it would delete the Secrets)."""
    return [
        f"{build}: contains {kind_name(obj)}: deleting the application would delete the namespace and the"
        " operator's Secrets in it; it belongs in deploy/k8s/namespace"
        for obj in objects
        if obj.get("kind") == "Namespace"
    ]
