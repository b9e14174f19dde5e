"""The media service sizes its image threads from its container's CPU limit, not the node's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from parley_media.settings import MediaSettings, available_cpus


def allowed() -> int:
    return len(os.sched_getaffinity(0))


def test_a_cgroup_v2_limit_of_one_and_a_half_cpus_gives_two(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert available_cpus(tmp_path) == min(2, allowed())


def test_a_cgroup_v1_quota_is_read_too(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(tmp_path) == 1


@pytest.mark.parametrize("content", ["max 100000\n", "garbage\n"])
def test_no_limit_means_the_cpus_this_process_may_run_on(tmp_path: Path, content: str) -> None:
    (tmp_path / "cpu.max").write_text(content)
    assert available_cpus(tmp_path) == allowed()
    assert available_cpus(tmp_path / "missing") == allowed()


def test_the_default_of_media_workers_follows_the_limit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    monkeypatch.setattr("parley_media.settings.CGROUP_ROOT", tmp_path)
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(64)))
    assert MediaSettings().media_workers == 2  # one CPU of 64: the floor of 2, not 64
    (tmp_path / "cpu.max").write_text("400000 100000\n")
    assert MediaSettings().media_workers == 4
