"""Parley's services as the manifests run them, and their settings classes: which variables
exist (`env_names`) and whether a container's values validate (`settings_from_env`)."""

from __future__ import annotations

import difflib
import json
import os
import typing
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from parley_gateway.settings import GatewaySettings
from parley_history.settings import HistorySettings
from parley_media.settings import MediaSettings
from parley_orchestrator.settings import OrchestratorSettings
from parley_worker.settings import WorkerSettings

from .objects import EnvVar

PLACEHOLDER_SECRET = "placeholder-secret-value-0123456789"
# Variables a Parley container may get that are not Parley settings: OpenTelemetry's SDK reads
# OTEL_RESOURCE_ATTRIBUTES itself, built from the downward API's pod name and namespace.
NOT_SETTINGS = {"OTEL_RESOURCE_ATTRIBUTES", "POD_NAME", "POD_NAMESPACE"}


@dataclass(frozen=True)
class Service:
    """A Parley service as the manifests run it: `python -m <module>`."""

    settings: type[BaseSettings]
    # The settings field of the port it serves, and the name its containerPort must have.
    port_field: str | None = None
    port_name: str | None = None


SERVICES: dict[str, Service] = {
    "parley_gateway": Service(GatewaySettings, "port", "http"),
    "parley_orchestrator": Service(OrchestratorSettings),
    "parley_worker": Service(WorkerSettings),
    "parley_history": Service(HistorySettings, "history_grpc_port", "grpc"),
    "parley_media": Service(MediaSettings, "media_grpc_port", "grpc"),
}
WORKER_MODULE = "parley_worker"


def env_names(settings: type[BaseSettings]) -> dict[str, str]:
    """Environment variable (upper case) -> field name, as pydantic-settings reads them."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    names: dict[str, str] = {}
    for field_name, field in settings.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else field.alias
        names[(alias or prefix + field_name).upper()] = field_name
    return names


def _placeholder(annotation: Any) -> str:
    """A value the field accepts, for a variable whose real value is in a Secret."""
    origin = typing.get_origin(annotation)
    if origin is dict:
        return json.dumps({"placeholder": PLACEHOLDER_SECRET})
    if origin is list:
        return json.dumps([PLACEHOLDER_SECRET])
    return PLACEHOLDER_SECRET


@contextmanager
def _environment(prefix: str, values: Mapping[str, str]) -> Iterator[None]:
    """os.environ with exactly `values` among the variables starting with `prefix`."""
    saved = {name: value for name, value in os.environ.items() if name.upper().startswith(prefix)}
    for name in saved:
        del os.environ[name]
    os.environ.update(values)
    try:
        yield
    finally:
        for name in values:
            os.environ.pop(name, None)
        os.environ.update(saved)


def settings_from_env(settings: type[BaseSettings], env: list[EnvVar]) -> tuple[BaseSettings | None, list[str]]:
    """Build the settings a container would build from `env`; or the reasons it would fail."""
    names = env_names(settings)
    values: dict[str, str] = {}
    for var in env:
        field = names.get(var.name.upper())
        if field is None:
            continue
        if var.value is not None:
            values[var.name] = var.value
        else:
            values[var.name] = _placeholder(settings.model_fields[field].annotation)
    by_field = {field: name for name, field in names.items()}
    prefix = str(settings.model_config.get("env_prefix", "")).upper()
    try:
        with _environment(prefix, values):
            return settings(), []
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = err["loc"]
            name = by_field.get(str(loc[0]), str(loc[0])) if loc else None
            if name is None:
                problems.append(f"{settings.__name__} does not validate: {err['msg']}")
            else:
                shown = values.get(name, "<unset>")
                problems.append(f"{name}={shown!r} does not validate in {settings.__name__}: {err['msg']}")
        return None, problems


def env_problems(where: str, module: str | None, env: list[EnvVar]) -> tuple[BaseSettings | None, list[str]]:
    """Every PARLEY_* variable exists in the service's settings, once; the settings validate."""
    problems: list[str] = []
    if module is None:
        for var in env:
            if var.name.upper().startswith("PARLEY_"):
                problems.append(f"{where}: {var.name} (from {var.source}) is set, but it runs no Parley service")
        return None, problems
    service = SERVICES.get(module)
    if service is None:
        return None, [f"{where}: runs unknown module {module}; add it to SERVICES in tools/k8s_check/services.py"]
    cls = service.settings
    known = env_names(cls)
    seen: dict[str, str] = {}
    for var in env:
        key = var.name.upper()
        if key in NOT_SETTINGS:
            continue
        if key in seen:
            problems.append(f"{where}: {var.name} is set twice ({seen[key]}, {var.source}); set it in one place")
        seen[key] = var.source
        if key not in known:
            owners = [s.settings.__name__ for s in SERVICES.values() if key in env_names(s.settings)]
            close = difflib.get_close_matches(key, known, n=1)
            if owners:
                hint = f"; it is a setting of {', '.join(owners)}"
            else:
                hint = f"; did you mean {close[0]}?" if close else ""
            problems.append(
                f"{where}: {var.name} (from {var.source}) is not a setting of {cls.__name__} ({cls.__module__}){hint}"
            )
    settings, invalid = settings_from_env(cls, env)
    problems.extend(f"{where}: {p}" for p in invalid)
    return settings, problems
