"""The Docker SDK, imported without the deprecation warnings it raises on import (the tests
turn warnings into errors)."""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import docker
    from docker.errors import ImageNotFound

__all__ = ["ImageNotFound", "docker"]
