"""tools/k8s_check: Parley's rules on small hand-made builds (no kustomize needed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from parley_gateway.settings import GatewaySettings
from parley_history.settings import HistorySettings
from tools.k8s_check.objects import EnvVar, container_env
from tools.k8s_check.rules import manifest_problems
from tools.k8s_check.services import env_names, env_problems

ROOT = Path(__file__).resolve().parents[2]

Manifest = dict[str, Any]

REGISTRY = """
default_model: demo
providers:
  demo: {kind: demo}
models:
  demo:
    provider: demo
    upstream_model: parley-demo-1
    context_window: 8192
    max_output_tokens: 1024
    input_price_per_mtok: 0
    output_price_per_mtok: 0
"""


def configmap(name: str, data: dict[str, str]) -> Manifest:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "parley"}, "data": data}


def deployment(name: str, module: str, config: str, env: list[Manifest] | None = None) -> Manifest:
    """A Deployment as deploy/k8s/base writes them: hardened, registry mounted, config from `config`."""
    labels = {"app.kubernetes.io/name": name}
    container: Manifest = {
        "name": name,
        "image": "parley:0.1.0",
        "command": ["python", "-m", module],
        "envFrom": [{"configMapRef": {"name": config}}],
        "env": env or [],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "models", "mountPath": "/etc/parley", "readOnly": True},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "parley"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [
                        {"name": "tmp", "emptyDir": {}},
                        {"name": "models", "configMap": {"name": "parley-models"}},
                    ],
                },
            },
        },
    }


def secret_env(name: str, key: str) -> Manifest:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": "parley-secrets", "key": key}}}


def good_build() -> list[Manifest]:
    """A worker for the registry's one provider, and a gateway: passes every rule."""
    return [
        configmap("parley-models", {"models.yaml": REGISTRY}),
        configmap(
            "parley-worker",
            {"PARLEY_MODELS_FILE": "/etc/parley/models.yaml", "PARLEY_WORKER_PROVIDERS": '["demo"]'},
        ),
        configmap(
            "parley-gateway",
            {"PARLEY_MODELS_FILE": "/etc/parley/models.yaml", "PARLEY_HOST": "0.0.0.0", "PARLEY_PORT": "8080"},
        ),
        deployment(
            "provider-worker-demo", "parley_worker", "parley-worker", [secret_env("PARLEY_AMQP_URL", "amqp-url")]
        ),
        with_port(
            deployment("gateway", "parley_gateway", "parley-gateway", [secret_env("PARLEY_API_KEYS", "api-keys")]),
            "http",
            8080,
        ),
    ]


def with_port(obj: Manifest, name: str, port: int) -> Manifest:
    obj["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"name": name, "containerPort": port}]
    return obj


def find(objects: list[Manifest], kind: str, name: str) -> Manifest:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def test_env_names_are_the_prefixed_fields_common_ones_included() -> None:
    gateway = env_names(GatewaySettings)
    assert gateway["PARLEY_PORT"] == "port"
    assert gateway["PARLEY_NAMESPACE"] == "namespace"  # from CommonSettings
    assert "PARLEY_HISTORY_SQLITE_PATH" not in gateway
    assert "PARLEY_HISTORY_SQLITE_PATH" in env_names(HistorySettings)


def test_a_build_that_follows_the_rules_passes() -> None:
    assert manifest_problems(good_build()) == []


def test_an_unknown_variable_in_a_configmap_is_named_with_its_source_and_class() -> None:
    objects = good_build()
    find(objects, "ConfigMap", "parley-gateway")["data"]["PARLEY_PROT"] = "8080"
    problems = manifest_problems(objects)
    assert len(problems) == 1
    assert "PARLEY_PROT (from ConfigMap parley-gateway) is not a setting of GatewaySettings" in problems[0]
    assert "did you mean PARLEY_PORT?" in problems[0]


def test_another_services_variable_says_whose_it_is() -> None:
    env = [EnvVar("PARLEY_HISTORY_SQLITE_PATH", "env", "/data/h.sqlite3")]
    _, problems = env_problems("Deployment/gateway container gateway", "parley_gateway", env)
    assert any(
        "is not a setting of GatewaySettings" in p and "it is a setting of HistorySettings" in p for p in problems
    )


def test_parley_variables_on_a_container_that_runs_no_parley_service_fail() -> None:
    _, problems = env_problems("StatefulSet/redis container redis", None, [EnvVar("PARLEY_LOG_LEVEL", "env", "INFO")])
    assert problems == [
        "StatefulSet/redis container redis: PARLEY_LOG_LEVEL (from env) is set, but it runs no Parley service"
    ]


def test_values_are_validated_by_the_settings_class() -> None:
    objects = good_build()
    find(objects, "ConfigMap", "parley-worker")["data"]["PARLEY_WORKER_PREFETCH"] = "0"
    problems = manifest_problems(objects)
    assert any("PARLEY_WORKER_PREFETCH='0' does not validate in WorkerSettings" in p for p in problems)


def test_secret_values_are_placeholders_so_a_missing_secret_reference_is_caught() -> None:
    objects = good_build()
    container = find(objects, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]
    container["env"] = []  # no PARLEY_API_KEYS: the gateway would refuse to start
    problems = manifest_problems(objects)
    assert any("no API key configured" in p for p in problems)


def test_a_variable_set_twice_and_an_envfrom_secret_fail() -> None:
    container: Manifest = {
        "envFrom": [{"configMapRef": {"name": "c"}}, {"secretRef": {"name": "parley-secrets"}}],
        "env": [{"name": "PARLEY_LOG_LEVEL", "value": "DEBUG"}],
    }
    env, unresolved = container_env(container, {"c": configmap("c", {"PARLEY_LOG_LEVEL": "INFO"})})
    assert any("envFrom Secret parley-secrets" in p for p in unresolved)
    _, problems = env_problems("x", "parley_media", env)
    assert any("PARLEY_LOG_LEVEL is set twice (ConfigMap c, env)" in p for p in problems)


def test_ports_and_grace_period_follow_the_settings() -> None:
    objects = good_build()
    find(objects, "ConfigMap", "parley-gateway")["data"]["PARLEY_PORT"] = "9090"
    find(objects, "ConfigMap", "parley-gateway")["data"]["PARLEY_SHUTDOWN_GRACE_S"] = "40"
    problems = manifest_problems(objects)
    assert any("serves on PARLEY_PORT=9090, but its containerPort 'http' is 8080" in p for p in problems)
    assert any("terminationGracePeriodSeconds 30 < preStop 0 s + PARLEY_SHUTDOWN_GRACE_S 40 s" in p for p in problems)


def test_a_provider_with_models_needs_a_worker() -> None:
    objects = [o for o in good_build() if o["metadata"]["name"] != "provider-worker-demo"]
    problems = manifest_problems(objects)
    assert any("provider 'demo' has models in the registry, but no provider-worker Deployment" in p for p in problems)


@pytest.mark.parametrize(
    ("queue", "expected"),
    [
        ("parley.provider.demo", None),
        ("parley.provider.openai", "trigger on queue 'parley.provider.openai'"),
    ],
)
def test_keda_triggers_watch_the_workers_queue(queue: str, expected: str | None) -> None:
    objects = good_build()
    scaled = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "provider-worker-demo", "namespace": "parley"},
        "spec": {
            "scaleTargetRef": {"name": "provider-worker-demo"},
            "triggers": [
                {
                    "type": "rabbitmq",
                    "metadata": {"protocol": "http", "mode": "QueueLength", "value": "60", "queueName": queue},
                    "authenticationRef": {"name": "auth"},
                }
            ],
        },
    }
    auth = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": "auth", "namespace": "parley"},
        "spec": {
            "secretTargetRef": [{"parameter": "host", "name": "parley-secrets", "key": "rabbitmq-management-url"}]
        },
    }
    problems = manifest_problems([*objects, scaled, auth])
    if expected is None:
        assert problems == []
    else:
        assert any(expected in p for p in problems)
        assert any("no rabbitmq trigger on parley.provider.demo" in p for p in problems)


def test_the_deployed_cassandra_is_the_version_the_tests_run() -> None:
    """The node the tests start (tools/cassandra/pom.xml) is the version deploy/k8s runs."""
    from parley_dev.cassandra import cassandra_version

    manifest = (ROOT / "deploy/k8s/overlays/dev/infra/cassandra.yaml").read_text()
    images = re.findall(r"image:\s*cassandra:(\S+)", manifest)
    assert images == [cassandra_version()], images
