"""Runs every benchmark and writes bench/results/*.json."""

from __future__ import annotations

import asyncio

from . import ttft


def main() -> None:
    asyncio.run(ttft.main())


main()
