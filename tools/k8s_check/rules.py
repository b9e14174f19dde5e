"""Parley's rules on one kustomize build (`manifest_problems`); see the package docstring."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from parley_common.models import ModelRegistry

from . import cluster
from .objects import (
    Manifest,
    all_containers,
    container_env,
    is_parley_image,
    kind_name,
    parley_module,
    pod_labels,
    pod_spec,
    selects,
)
from .services import SERVICES, WORKER_MODULE, env_problems

# Seconds between the end of PARLEY_SHUTDOWN_GRACE_S and the SIGKILL, for closing connections.
GRACE_MARGIN_S = 5.0
CLUSTER_SCOPED_KINDS = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "StorageClass",
    "PersistentVolume",
    "IngressClass",
    "RuntimeClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "ClusterTriggerAuthentication",
}
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
# The fields a ScaledObject's spec may have (KEDA 2): any other is reported as unknown.
SCALED_OBJECT_SPEC_FIELDS = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}


@dataclass
class ParleyContainer:
    """A container running a Parley service, with what the checks learned about it."""

    where: str
    workload: Manifest
    pod: Manifest
    container: Manifest
    module: str
    settings: BaseSettings | None = None
    registry_text: str | None = None
    # An initContainer (e.g. `python -m parley_history migrate`): runs to completion, serves nothing.
    init: bool = False


def port_problems(pc: ParleyContainer) -> list[str]:
    """The served port is the named containerPort; it listens beyond loopback; probes hit ports."""
    problems: list[str] = []
    ports = {p.get("name"): p.get("containerPort") for p in pc.container.get("ports") or []}
    numbers = set(ports.values())
    service = SERVICES[pc.module]
    if pc.settings is not None and service.port_field is not None and not pc.init:
        served = getattr(pc.settings, service.port_field)
        env_name = "PARLEY_" + service.port_field.upper()
        if ports.get(service.port_name) != served:
            problems.append(
                f"{pc.where}: serves on {env_name}={served}, but its containerPort {service.port_name!r}"
                f" is {ports.get(service.port_name)}"
            )
        for field in type(pc.settings).model_fields:
            if field.endswith("host") and getattr(pc.settings, field) in LOOPBACK:
                problems.append(
                    f"{pc.where}: PARLEY_{field.upper()}={getattr(pc.settings, field)} listens on loopback"
                    " only; probes and Services cannot reach it (use 0.0.0.0)"
                )
    for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = pc.container.get(probe_name)
        if not probe:
            continue
        for handler in ("httpGet", "tcpSocket", "grpc"):
            if handler in probe:
                port = probe[handler].get("port")
                if (isinstance(port, str) and port not in ports) or (isinstance(port, int) and port not in numbers):
                    problems.append(f"{pc.where}: {probe_name} asks port {port!r}, which the container does not open")
    return problems


def prestop_seconds(container: Manifest) -> float:
    pre_stop = (container.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"].get("seconds", 0))
    command = (pre_stop.get("exec") or {}).get("command") or []
    match = re.search(r"\bsleep\s+(\d+(?:\.\d+)?)", " ".join(str(w) for w in command))
    return float(match.group(1)) if match else 0.0


def grace_problems(pc: ParleyContainer) -> list[str]:
    """terminationGracePeriodSeconds >= preStop + PARLEY_SHUTDOWN_GRACE_S + margin."""
    grace = getattr(pc.settings, "shutdown_grace_s", None)
    if grace is None:
        return []
    period = float(pc.pod.get("terminationGracePeriodSeconds", 30))
    pre_stop = prestop_seconds(pc.container)
    needed = pre_stop + float(grace) + GRACE_MARGIN_S
    if period < needed:
        return [
            f"{pc.where}: terminationGracePeriodSeconds {period:g} < preStop {pre_stop:g} s"
            f" + PARLEY_SHUTDOWN_GRACE_S {grace:g} s + margin {GRACE_MARGIN_S:g} s = {needed:g} s:"
            " in-flight work would be killed, not handed back"
        ]
    return []


def hardening_problems(pc: ParleyContainer) -> list[str]:
    """The securityContext, resources and /tmp every Parley container must have."""
    pod_sc = pc.pod.get("securityContext") or {}
    sc = pc.container.get("securityContext") or {}
    missing = []
    if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
        missing.append("runAsNonRoot: true")
    seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
    if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
        missing.append("seccompProfile RuntimeDefault")
    if sc.get("allowPrivilegeEscalation") is not False:
        missing.append("allowPrivilegeEscalation: false")
    if sc.get("readOnlyRootFilesystem") is not True:
        missing.append("readOnlyRootFilesystem: true")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        missing.append("capabilities.drop [ALL]")
    resources = pc.container.get("resources") or {}
    for bound in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in (resources.get(bound) or {}):
                missing.append(f"resources.{bound}.{resource}")
    if not any(m.get("mountPath") == "/tmp" for m in pc.container.get("volumeMounts") or []):
        missing.append("a volume at /tmp (the root filesystem is read-only)")
    return [f"{pc.where}: missing {item}" for item in missing]


def mounted_configmap_file(pc: ParleyContainer, path: str, configmaps: Mapping[str, Manifest]) -> str | None:
    """The content of `path` when it lies in a ConfigMap volume mounted in the container."""
    volumes = {v.get("name"): v for v in pc.pod.get("volumes") or []}
    target = PurePosixPath(path)
    for mount in pc.container.get("volumeMounts") or []:
        mount_path = PurePosixPath(mount.get("mountPath", "/nonexistent"))
        source = (volumes.get(mount.get("name")) or {}).get("configMap")
        if source is None or (target != mount_path and mount_path not in target.parents):
            continue
        data = (configmaps.get(source.get("name", "")) or {}).get("data") or {}
        sub_path = mount.get("subPath")
        relative = sub_path if target == mount_path and sub_path else str(target.relative_to(mount_path))
        items = source.get("items")
        if items:
            by_path = {item.get("path"): item.get("key") for item in items}
            key = by_path.get(relative)
            return data.get(key) if key is not None else None
        value = data.get(relative)
        return str(value) if value is not None else None
    return None


def registry_problems(containers: list[ParleyContainer], configmaps: Mapping[str, Manifest]) -> list[str]:
    """Each container's model registry is a mounted ConfigMap file; it validates; one for all;
    each provider with models has workers, and workers serve only known providers."""
    problems: list[str] = []
    texts: dict[str, str] = {}
    for pc in containers:
        models_file = getattr(pc.settings, "models_file", None)
        if models_file is None:
            continue
        text = mounted_configmap_file(pc, str(models_file), configmaps)
        if text is None:
            problems.append(
                f"{pc.where}: PARLEY_MODELS_FILE={models_file} is in no ConfigMap volume mounted in the container"
            )
            continue
        pc.registry_text = text
        texts[pc.where] = text
    if not texts:
        return problems
    if len(set(texts.values())) > 1:
        problems.append("containers read different model registries: " + ", ".join(sorted(texts)))
    text = next(iter(texts.values()))
    try:
        registry = ModelRegistry.model_validate(yaml.safe_load(text))
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'registry'}: {e['msg']}" for e in exc.errors())
        return [*problems, f"the model registry does not validate: {reasons}"]
    except yaml.YAMLError as exc:
        return [*problems, f"the model registry is not YAML: {' '.join(str(exc).split())}"]
    served: dict[str, list[str]] = {}
    for pc in containers:
        for provider in getattr(pc.settings, "worker_providers", None) or []:
            served.setdefault(provider, []).append(kind_name(pc.workload))
    used = {model.provider for model in registry.models.values()}
    for provider in sorted(used - set(served)):
        problems.append(
            f"provider {provider!r} has models in the registry, but no provider-worker Deployment serves it"
            " (PARLEY_WORKER_PROVIDERS)"
        )
    for provider in sorted(set(served) - set(registry.providers)):
        problems.append(f"{', '.join(served[provider])} serves provider {provider!r}, which the registry lacks")
    for provider, workloads in sorted(served.items()):
        if len(workloads) > 1:
            problems.append(f"provider {provider!r} is served by several Deployments: {', '.join(workloads)}")
    return problems


def keda_problems(objects: list[Manifest], containers: list[ParleyContainer]) -> list[str]:
    """ScaledObjects target worker Deployments, on their providers' queues, with a known
    TriggerAuthentication; with KEDA on, every worker Deployment has a ScaledObject."""
    problems: list[str] = []
    scaled = [o for o in objects if o.get("kind") == "ScaledObject"]
    auths = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "TriggerAuthentication"}
    workers = {pc.workload["metadata"]["name"]: pc for pc in containers if pc.module == WORKER_MODULE}
    targeted: set[str] = set()
    for obj in scaled:
        where = kind_name(obj)
        spec = obj.get("spec") or {}
        for key in sorted(set(spec) - SCALED_OBJECT_SPEC_FIELDS):
            problems.append(f"{where}: unknown field spec.{key}")
        target = str((spec.get("scaleTargetRef") or {}).get("name"))
        if (spec.get("scaleTargetRef") or {}).get("kind", "Deployment") != "Deployment" or target not in workers:
            problems.append(f"{where}: scaleTargetRef {target!r} is no provider-worker Deployment in the build")
            continue
        targeted.add(target)
        worker = workers[target]
        if worker.settings is None:
            continue  # its settings do not load: reported already
        namespace = getattr(worker.settings, "namespace", "parley")
        expected = {f"{namespace}.provider.{p}" for p in getattr(worker.settings, "worker_providers", [])}
        queues = set()
        for trigger in spec.get("triggers") or []:
            if trigger.get("type") != "rabbitmq":
                continue
            metadata = trigger.get("metadata") or {}
            queue = metadata.get("queueName")
            queues.add(queue)
            if queue not in expected:
                problems.append(f"{where}: trigger on queue {queue!r}, but {target} consumes {sorted(expected)}")
            if "host" in metadata:
                problems.append(f"{where}: metadata.host would put broker credentials in the manifest")
            auth = (trigger.get("authenticationRef") or {}).get("name")
            if auth not in auths:
                problems.append(f"{where}: authenticationRef {auth!r} is no TriggerAuthentication in the build")
        for queue in sorted(expected - queues):
            problems.append(f"{where}: no rabbitmq trigger on {queue}")
    if scaled:
        for name in sorted(set(workers) - targeted):
            problems.append(f"Deployment/{name}: KEDA is on, but no ScaledObject scales it")
    for name, auth in auths.items():
        for ref in (auth.get("spec") or {}).get("secretTargetRef") or []:
            if not all(ref.get(k) for k in ("parameter", "name", "key")):
                problems.append(f"TriggerAuthentication/{name}: secretTargetRef needs parameter, name and key")
    return problems


def reference_problems(objects: list[Manifest]) -> list[str]:
    """Selectors select pods; Services' target ports and autoscalers' targets exist."""
    problems: list[str] = []
    pods = [(obj, pod_labels(obj), pod_spec(obj) or {}) for obj in objects if pod_spec(obj) is not None]
    names = {(o.get("kind"), o.get("metadata", {}).get("name")) for o in objects}
    for obj, labels, _ in pods:
        selector = (obj.get("spec") or {}).get("selector")
        if obj.get("kind") in ("Deployment", "StatefulSet", "DaemonSet") and not selects(selector or {}, labels):
            problems.append(f"{kind_name(obj)}: spec.selector does not match its pod template's labels")
    for obj in objects:
        kind, spec, where = obj.get("kind"), obj.get("spec") or {}, kind_name(obj)
        selectors: list[Mapping[str, Any]] = []
        if kind == "Service" and spec.get("selector"):
            selectors = [spec["selector"]]
        elif kind == "PodDisruptionBudget":
            selectors = [spec.get("selector") or {}]
        elif kind == "NetworkPolicy":
            selectors = [spec.get("podSelector") or {}]
            for rule in [*(spec.get("ingress") or []), *(spec.get("egress") or [])]:
                for peer in [*(rule.get("from") or []), *(rule.get("to") or [])]:
                    if "podSelector" in peer and "namespaceSelector" not in peer:
                        selectors.append(peer["podSelector"])
        for selector in selectors:
            if selector and not any(selects(selector, labels) for _, labels, _ in pods):
                problems.append(f"{where}: selector {json.dumps(selector, sort_keys=True)} selects no pod")
        if kind == "Service" and spec.get("selector"):
            matched = [pod for _, labels, pod in pods if selects(spec["selector"], labels)]
            port_names = {
                p.get("name") for pod in matched for c in pod.get("containers") or [] for p in c.get("ports") or []
            }
            for port in spec.get("ports") or []:
                target = port.get("targetPort")
                if isinstance(target, str) and matched and target not in port_names:
                    problems.append(f"{where}: targetPort {target!r} is no named port of the pods it selects")
        if kind == "HorizontalPodAutoscaler":
            ref = spec.get("scaleTargetRef") or {}
            if (ref.get("kind"), ref.get("name")) not in names:
                problems.append(f"{where}: scaleTargetRef {ref.get('kind')}/{ref.get('name')} is not in the build")
    return problems


def namespace_problems(objects: list[Manifest]) -> list[str]:
    return [
        f"{kind_name(obj)}: no metadata.namespace (set `namespace:` in the kustomization)"
        for obj in objects
        if obj.get("kind") not in CLUSTER_SCOPED_KINDS and not obj.get("metadata", {}).get("namespace")
    ]


def secret_keys(objects: list[Manifest]) -> set[tuple[str, str]]:
    """(Secret name, key) of every secretKeyRef and KEDA secretTargetRef in the build."""
    keys: set[tuple[str, str]] = set()
    for obj in objects:
        for container in all_containers(pod_spec(obj) or {}):
            for item in container.get("env") or []:
                ref = (item.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    keys.add((str(ref.get("name")), str(ref.get("key"))))
        if obj.get("kind") == "TriggerAuthentication":
            for ref in (obj.get("spec") or {}).get("secretTargetRef") or []:
                keys.add((str(ref.get("name")), str(ref.get("key"))))
    return keys


def manifest_problems(objects: list[Manifest], readme: str | None = None, build: str | None = None) -> list[str]:
    """Parley's rules on one kustomize build (see the module docstring); [] when it passes.
    `build` names it (`base`, `dev`, `prod`, …) for the rules that depend on the overlay."""
    problems: list[str] = []
    configmaps = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "ConfigMap"}
    containers: list[ParleyContainer] = []
    for obj in objects:
        pod = pod_spec(obj)
        if pod is None:
            continue
        for container in all_containers(pod):
            where = f"{kind_name(obj)} container {container.get('name')}"
            module = parley_module(container)
            if module is None and is_parley_image(str(container.get("image", ""))):
                problems.append(f"{where}: runs the Parley image without `command: [python, -m, parley_…]`")
            env, unresolved = container_env(container, configmaps)
            problems.extend(f"{where}: {p}" for p in unresolved)
            settings, env_issues = env_problems(where, module, env)
            problems.extend(env_issues)
            if module in SERVICES:
                init = any(container is c for c in pod.get("initContainers") or [])
                containers.append(ParleyContainer(where, obj, pod, container, module, settings, init=init))
    for pc in containers:
        problems.extend(port_problems(pc))
        problems.extend(grace_problems(pc))
        problems.extend(hardening_problems(pc))
        problems.extend(cluster.probe_problems(pc))
        problems.extend(cluster.scrape_problems(pc))
        problems.extend(cluster.worker_grace_problems(pc))
        problems.extend(cluster.prestop_problems(pc, prestop_seconds(pc.container)))
        problems.extend(cluster.grpc_target_problems(pc, objects))
    problems.extend(cluster.disruption_problems(objects))
    problems.extend(cluster.autoscaling_problems(objects, containers))
    problems.extend(cluster.egress_problems(objects, containers))
    problems.extend(cluster.edge_problems(objects, containers))
    if build is not None:
        problems.extend(cluster.image_problems(objects, build))
        problems.extend(cluster.namespace_owner_problems(objects, build))
    problems.extend(registry_problems(containers, configmaps))
    problems.extend(keda_problems(objects, containers))
    problems.extend(reference_problems(objects))
    problems.extend(namespace_problems(objects))
    if readme is not None:
        for name, key in sorted(secret_keys(objects)):
            if f"`{key}`" not in readme or f"`{name}`" not in readme:
                problems.append(f"Secret {name} key {key} is used but not documented in deploy/k8s/README.md")
    return problems
