"""tools/containers: what a build is given of the host's package configuration, and how the
local overlay is handed to podman so that it means what it means on Kubernetes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tools.containers.engine import apt_sources
from tools.containers.play import for_podman, play_volumes


def test_a_build_gets_the_hosts_enabled_debian_sources_in_one_line_form(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main contrib\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n"
        "Enabled: no\n"
    )
    # A third-party repository (its own key) would not verify inside the image.
    (tmp_path / "sources.list.d" / "vendor.sources").write_text(
        "Types: deb\nURIs: https://vendor.example/apt\nSuites: stable\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/vendor.gpg\n"
    )
    (tmp_path / "sources.list.d" / "old.list.disabled").write_text("deb http://elsewhere/debian bookworm main\n")
    assert apt_sources(tmp_path).splitlines() == [
        "deb http://mirror.example/debian bookworm main contrib",
        "deb http://mirror.example/debian bookworm-updates main contrib",
    ]


def deployment(name: str, **spec: Any) -> dict[str, Any]:
    return {"kind": "Deployment", "metadata": {"name": name}, "spec": {"template": {"spec": spec}}}


def test_podman_is_given_only_published_ports_and_volumes_of_each_pods_own() -> None:
    gateway = deployment(
        "gateway",
        containers=[
            {
                "name": "gateway",
                "ports": [{"name": "http", "containerPort": 8080, "hostPort": 40123}, {"containerPort": 9464}],
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "models", "mountPath": "/etc/p"}],
            }
        ],
        volumes=[{"name": "tmp", "emptyDir": {}}, {"name": "models", "configMap": {"name": "parley-models-x"}}],
    )
    history = deployment(
        "history",
        initContainers=[{"name": "migrate", "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}],
        containers=[{"name": "history", "ports": [{"containerPort": 50051}]}],
        volumes=[{"name": "tmp", "emptyDir": {}}],
    )
    given = for_podman([gateway, history])
    g, h = (o["spec"]["template"]["spec"] for o in given)
    assert g["containers"][0]["ports"] == [{"name": "http", "containerPort": 8080, "hostPort": 40123}]
    assert "ports" not in h["containers"][0]
    assert [m["name"] for m in g["containers"][0]["volumeMounts"]] == ["parley-play-gateway-tmp", "models"]
    assert h["initContainers"][0]["volumeMounts"][0]["name"] == "parley-play-history-tmp"
    assert "restartPolicy" not in g and h["restartPolicy"] == "OnFailure"
    assert play_volumes(given) == ["parley-models-x", "parley-play-gateway-tmp", "parley-play-history-tmp"]
    # The rendered objects themselves are left as kustomize built them.
    assert gateway["spec"]["template"]["spec"]["volumes"][0]["name"] == "tmp"


def test_podman_gets_the_namespace_written_out_where_a_cluster_would_fill_it_in() -> None:
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    gateway = deployment("gateway", containers=[{"name": "gateway", "env": env}])
    gateway["metadata"]["namespace"] = "parley"
    (given,) = for_podman([gateway])
    assert given["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "value": "parley"},
    ]
