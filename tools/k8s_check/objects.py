"""Reading kustomize output: workloads, their pods and containers, env sources, selectors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Manifest = dict[str, Any]


@dataclass(frozen=True)
class EnvVar:
    """One variable a container gets. `value` is None when it is known only in the cluster."""

    name: str
    source: str
    value: str | None
    secret: bool = False


def kind_name(obj: Manifest) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def pod_spec(obj: Manifest) -> Manifest | None:
    """The pod spec of a workload (Deployment, StatefulSet, DaemonSet, Job, CronJob, Pod)."""
    kind = obj.get("kind")
    spec: Manifest = obj.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    template = spec.get("template")
    return (template.get("spec") or {}) if isinstance(template, dict) else None


def pod_labels(obj: Manifest) -> dict[str, str]:
    if obj.get("kind") == "Pod":
        return dict(obj.get("metadata", {}).get("labels") or {})
    spec = obj.get("spec") or {}
    if obj.get("kind") == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return dict(((spec.get("template") or {}).get("metadata") or {}).get("labels") or {})


def all_containers(pod: Manifest) -> list[Manifest]:
    return [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]


def parley_module(container: Manifest) -> str | None:
    """`parley_x` when the container runs `python -m parley_x`."""
    words = [str(w) for w in [*(container.get("command") or []), *(container.get("args") or [])]]
    for i, word in enumerate(words[:-1]):
        if word == "-m" and words[i + 1].startswith("parley_"):
            return words[i + 1]
    return None


def is_parley_image(image: str) -> bool:
    repository = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return repository.split(":", 1)[0] == "parley"


def container_env(container: Manifest, configmaps: Mapping[str, Manifest]) -> tuple[list[EnvVar], list[str]]:
    """Every variable the container gets, with where it comes from; and what cannot be resolved."""
    out: list[EnvVar] = []
    problems: list[str] = []
    for ref in container.get("envFrom") or []:
        prefix = ref.get("prefix", "")
        if "configMapRef" in ref:
            name = ref["configMapRef"].get("name", "")
            configmap = configmaps.get(name)
            if configmap is None:
                if not ref["configMapRef"].get("optional", False):
                    problems.append(f"envFrom ConfigMap {name} is not in the build")
                continue
            for key, value in (configmap.get("data") or {}).items():
                out.append(EnvVar(prefix + key, f"ConfigMap {name}", str(value)))
        elif "secretRef" in ref:
            problems.append(
                f"envFrom Secret {ref['secretRef'].get('name')}: its keys cannot be checked;"
                " use env with valueFrom.secretKeyRef, one variable at a time"
            )
    for item in container.get("env") or []:
        name = item.get("name", "")
        source = item.get("valueFrom")
        if source is None:
            out.append(EnvVar(name, "env", str(item.get("value", ""))))
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            out.append(EnvVar(name, f"Secret {ref.get('name')} key {ref.get('key')}", None, secret=True))
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            data = (configmaps.get(ref.get("name", "")) or {}).get("data") or {}
            value = data.get(ref.get("key"))
            if value is None:
                problems.append(f"{name}: ConfigMap {ref.get('name')} key {ref.get('key')} is not in the build")
            out.append(EnvVar(name, f"ConfigMap {ref.get('name')} key {ref.get('key')}", value))
        else:
            out.append(EnvVar(name, "env (valueFrom)", None))
    return out, problems


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a label selector (matchLabels / matchExpressions, or a plain map) matches."""
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        match_labels: Mapping[str, Any] = selector
        expressions: list[Manifest] = []
    else:
        match_labels = selector.get("matchLabels") or {}
        expressions = selector.get("matchExpressions") or []
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for expr in expressions:
        key, operator, values = str(expr.get("key")), expr.get("operator"), expr.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True
