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
    worker = scraped(
        with_port(
            deployment(
                "provider-worker-demo", "parley_worker", "parley-worker", [secret_env("PARLEY_AMQP_URL", "amqp-url")]
            ),
            "metrics",
            9464,
        ),
        9464,
    )
    worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 620
    gateway = scraped(
        with_port(
            deployment("gateway", "parley_gateway", "parley-gateway", [secret_env("PARLEY_API_KEYS", "api-keys")]),
            "http",
            8080,
        ),
        8080,
    )
    gateway["spec"]["template"]["spec"]["containers"][0]["lifecycle"] = {"preStop": {"sleep": {"seconds": 15}}}
    return [
        configmap("parley-models", {"models.yaml": REGISTRY}),
        configmap(
            "parley-worker",
            {
                "PARLEY_MODELS_FILE": "/etc/parley/models.yaml",
                "PARLEY_WORKER_PROVIDERS": '["demo"]',
                "PARLEY_METRICS_PORT": "9464",
                "PARLEY_SHUTDOWN_GRACE_S": "600",
            },
        ),
        configmap(
            "parley-gateway",
            {
                "PARLEY_MODELS_FILE": "/etc/parley/models.yaml",
                "PARLEY_HOST": "0.0.0.0",
                "PARLEY_PORT": "8080",
                "PARLEY_SHUTDOWN_GRACE_S": "10",
            },
        ),
        worker,
        gateway,
    ]


def scraped(obj: Manifest, port: int) -> Manifest:
    obj["spec"]["template"]["metadata"]["annotations"] = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
    }
    return obj


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
    assert any("terminationGracePeriodSeconds 30 < preStop 15 s + PARLEY_SHUTDOWN_GRACE_S 40 s" in p for p in problems)


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
        "spec": {"secretTargetRef": [{"parameter": "host", "name": "parley-keda", "key": "rabbitmq-management-url"}]},
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


# What breaks or hurts on a real cluster (issue 23, tools/k8s_check/cluster.py): each rule fails
# on the mistake it is for, and the good build passes.


def gateway_container(objects: list[Manifest]) -> Manifest:
    return dict(find(objects, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0])


def set_image(objects: list[Manifest], image: str) -> list[Manifest]:
    for obj in objects:
        if obj["kind"] == "Deployment":
            obj["spec"]["template"]["spec"]["containers"][0]["image"] = image
    return objects


@pytest.mark.parametrize(
    ("build", "image", "expected"),
    [
        ("dev", "parley:dev", "but `make image` builds localhost/parley:latest"),
        ("dev", "localhost/parley:latest", None),
        ("local", "localhost/parley:latest", None),
        ("prod", "registry.example.com/parley/parley:0.1.0", "a tag that can be pushed again"),
        ("prod", "registry.example.com/parley/parley@sha256:" + "ab" * 32, None),
    ],
)
def test_overlays_run_what_make_image_builds_or_a_digest(build: str, image: str, expected: str | None) -> None:
    problems = manifest_problems(set_image(good_build(), image), build=build)
    if expected is None:
        assert problems == []
    else:
        assert any(expected in p for p in problems), problems


def test_the_application_does_not_own_its_namespace() -> None:
    namespace: Manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "parley"}}
    problems = manifest_problems([*set_image(good_build(), "localhost/parley:latest"), namespace], build="dev")
    assert problems == [
        "dev: contains Namespace/parley: deleting the application would delete the namespace and the"
        " operator's Secrets in it; it belongs in deploy/k8s/namespace"
    ]


def test_liveness_never_asks_the_grpc_health() -> None:
    objects = good_build()
    container = find(objects, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]
    container["ports"].append({"name": "grpc", "containerPort": 50052})
    container["livenessProbe"] = {"grpc": {"port": 50052}}
    problems = manifest_problems(objects)
    assert any("livenessProbe asks the gRPC health, which follows the service's dependencies" in p for p in problems)


def test_startup_probes_last_the_connect_timeout() -> None:
    objects = good_build()
    find(objects, "ConfigMap", "parley-gateway")["data"]["PARLEY_CONNECT_TIMEOUT_S"] = "60"
    container = find(objects, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]
    container["startupProbe"] = {
        "httpGet": {"path": "/healthz", "port": "http"},
        "periodSeconds": 2,
        "failureThreshold": 30,
    }
    problems = manifest_problems(objects)
    assert any(
        "startupProbe gives up after 60 s, but starting may take 1 x PARLEY_CONNECT_TIMEOUT_S 60 s" in p
        for p in problems
    )
    container["startupProbe"]["failureThreshold"] = 75
    assert manifest_problems(objects) == []


def test_workers_let_answers_finish_and_gateways_wait_for_the_load_balancers() -> None:
    objects = good_build()
    find(objects, "ConfigMap", "parley-worker")["data"]["PARLEY_SHUTDOWN_GRACE_S"] = "20"
    gateway_spec = find(objects, "Deployment", "gateway")["spec"]["template"]["spec"]
    gateway_spec["containers"][0]["lifecycle"] = {"preStop": {"sleep": {"seconds": 5}}}
    problems = manifest_problems(objects)
    assert any("PARLEY_SHUTDOWN_GRACE_S 20 s < PARLEY_PROVIDER_TOTAL_TIMEOUT_S 600 s" in p for p in problems)
    assert any("preStop sleeps 5 s; load balancers that target pod IPs need 10 s" in p for p in problems)


def test_every_service_serves_metrics_where_its_pods_say() -> None:
    objects = good_build()
    del find(objects, "Deployment", "gateway")["spec"]["template"]["metadata"]["annotations"]
    find(objects, "ConfigMap", "parley-worker")["data"]["PARLEY_METRICS_PORT"] = "9465"
    problems = manifest_problems(objects)
    assert any("gateway: the pod template needs prometheus.io/scrape" in p for p in problems)
    assert any("PARLEY_METRICS_PORT=9465, but its containerPort 'metrics' is 9464" in p for p in problems)


def service(name: str, headless: bool) -> Manifest:
    spec: Manifest = {"selector": {"app.kubernetes.io/name": "gateway"}, "ports": [{"port": 80, "targetPort": "http"}]}
    if headless:
        spec["clusterIP"] = "None"
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "parley"}, "spec": spec}


def test_grpc_clients_balance_over_a_headless_service() -> None:
    objects = good_build()
    find(objects, "ConfigMap", "parley-gateway")["data"]["PARLEY_HISTORY_GRPC_TARGET"] = "history:50051"
    problems = manifest_problems([*objects, service("history", headless=False)])
    assert any("PARLEY_HISTORY_GRPC_TARGET=history:50051 names Service history without dns:///" in p for p in problems)
    assert any("goes to Service/history, which is not headless" in p for p in problems)
    find(objects, "ConfigMap", "parley-gateway")["data"]["PARLEY_HISTORY_GRPC_TARGET"] = "dns:///history:50051"
    assert manifest_problems([*objects, service("history", headless=True)]) == []


def test_disruption_budgets_and_spread_never_stall_a_drain_or_a_scale_up() -> None:
    objects = good_build()
    pdb: Manifest = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "gateway", "namespace": "parley"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}},
    }
    find(objects, "Deployment", "gateway")["spec"]["template"]["spec"]["topologySpreadConstraints"] = [
        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}
    ]
    problems = manifest_problems([*objects, pdb])
    assert any("PodDisruptionBudget/gateway: needs unhealthyPodEvictionPolicy: AlwaysAllow" in p for p in problems)
    assert any("Deployment/gateway: a hard per-node topology spread" in p for p in problems)
    pdb["spec"]["unhealthyPodEvictionPolicy"] = "AlwaysAllow"
    find(objects, "Deployment", "gateway")["spec"]["template"]["spec"]["topologySpreadConstraints"][0][
        "whenUnsatisfiable"
    ] = "ScheduleAnyway"
    assert manifest_problems([*objects, pdb]) == []


def test_the_gateway_scales_on_streams_and_keda_has_a_secret_of_its_own() -> None:
    hpa: Manifest = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "gateway", "namespace": "parley"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"},
            "metrics": [{"type": "Resource", "resource": {"name": "cpu"}}],
        },
    }
    auth: Manifest = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": "auth", "namespace": "parley"},
        "spec": {"secretTargetRef": [{"parameter": "host", "name": "parley-secrets", "key": "management"}]},
    }
    problems = manifest_problems([*good_build(), hpa, auth])
    assert any("scales the gateway without a Pods metric parley_active_streams" in p for p in problems)
    assert any("reads Secret parley-secrets, which Parley's pods read too" in p for p in problems)
    hpa["spec"]["metrics"].append({"type": "Pods", "pods": {"metric": {"name": "parley_active_streams"}}})
    auth["spec"]["secretTargetRef"][0]["name"] = "parley-keda"
    assert manifest_problems([*good_build(), hpa, auth]) == []


def test_network_policies_let_out_the_ports_the_settings_dial() -> None:
    objects = good_build()
    for name in ("parley-gateway", "parley-worker"):
        find(objects, "ConfigMap", name)["data"]["PARLEY_OTLP_ENDPOINT"] = "http://otel-collector.observability:4318"
    policy: Manifest = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "egress-otel-collector", "namespace": "parley"},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"ports": [{"protocol": "TCP", "port": 4317}]}],
        },
    }
    problems = manifest_problems([*objects, policy])
    assert any("gateway: dials port 4318 (PARLEY_OTLP_ENDPOINT)" in p for p in problems), problems
    policy["spec"]["egress"][0]["ports"][0]["port"] = 4318
    assert manifest_problems([*objects, policy]) == []


def ingress(annotations: dict[str, str], tls: bool) -> Manifest:
    spec: Manifest = {
        "ingressClassName": "nginx",
        "rules": [
            {
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": "gateway", "port": {"name": "http"}}},
                        }
                    ]
                }
            }
        ],
    }
    if tls:
        spec["tls"] = [{"hosts": ["parley.example.com"], "secretName": "parley-tls"}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "gateway", "namespace": "parley", "annotations": annotations},
        "spec": spec,
    }


def test_an_nginx_ingress_is_set_for_sse_streams_and_uploads() -> None:
    problems = manifest_problems([*good_build(), ingress({}, tls=False)])
    for expected in (
        'proxy-buffering must be "off"',
        "proxy-read-timeout 60 (default) is not well above PARLEY_HEARTBEAT_S 15 s",
        "proxy-body-size 1m (default) is below the largest upload",
        "no tls: browsers get HTTP/2",
    ):
        assert any(expected in p for p in problems), (expected, problems)
    nginx = "nginx.ingress.kubernetes.io/"
    good = {
        nginx + "proxy-buffering": "off",
        nginx + "proxy-read-timeout": "3600",
        nginx + "proxy-send-timeout": "3600",
        nginx + "proxy-body-size": "25m",
    }
    assert manifest_problems([*good_build(), ingress(good, tls=True)]) == []


def test_an_http_route_to_the_gateway_has_no_whole_response_timeout() -> None:
    route: Manifest = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "gateway", "namespace": "parley"},
        "spec": {"rules": [{"backendRefs": [{"name": "gateway", "port": 80}]}]},
    }
    problems = manifest_problems([*good_build(), route])
    assert any('timeouts.request must be "0s" (off)' in p for p in problems), problems
    route["spec"]["rules"][0]["timeouts"] = {"request": "0s", "backendRequest": "0s"}
    assert manifest_problems([*good_build(), route]) == []
