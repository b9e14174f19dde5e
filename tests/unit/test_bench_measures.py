"""The benchmarks' pure parts: /proc readings, py-spy summaries, answer text from SSE bodies,
and the peer benchmark's per-turn arithmetic."""

from __future__ import annotations

import os
from typing import Any

import pytest

from bench import cpu, pyspy
from bench.peer import summarise


def test_stat_line_with_spaces_and_parentheses_in_the_name() -> None:
    line = "4242 (python -m (x) y) S 17 4242 17 0 -1 4194560 9 0 0 0 1234 567 3 4 20 0 5 0 99 1 2 3\n"
    stat = cpu.parse_stat(line)
    assert (stat.pid, stat.comm, stat.ppid, stat.utime, stat.stime) == (4242, "python -m (x) y", 17, 1234, 567)
    assert stat.cpu_ms == pytest.approx((1234 + 567) * 1000 / cpu.CLK_TCK)


def test_this_process_reads_its_own_cpu() -> None:
    stat = cpu.read_stat(os.getpid())
    assert stat is not None and stat.pid == os.getpid()
    assert cpu.read_stat(2**22 + 12345) is None  # no such pid: gone, not an error


def test_tree_follows_parents() -> None:
    stats = [cpu.ProcStat(p, "x", pp, 0, 0) for p, pp in ((1, 0), (10, 1), (11, 10), (12, 10), (13, 11), (20, 1))]
    assert sorted(cpu.tree(10, stats)) == [10, 11, 12, 13]


def test_listening_inodes_only_listening_sockets_on_the_port() -> None:
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    tcp = header + (
        "   0: 0100007F:1628 00000000:0000 0A 00000000:00000000 00:00000000 00000000   0 0 111 1\n"  # 5672 listening
        "   1: 0100007F:1628 0100007F:9C40 01 00000000:00000000 00:00000000 00000000   0 0 222 1\n"  # established
        "   2: 00000000:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000   0 0 333 1\n"  # 6379
    )
    assert cpu.listening_inodes(5672, {"tcp": tcp}) == {"111"}
    assert cpu.listening_inodes(6379, {"tcp": tcp}) == {"333"}


RAW = """\
<module> (parley_worker/__main__.py:5);run (asyncio/runners.py:118);Relay.publish (parley_worker/relay.py:40);\
Channel.publish (aio_pika/channel.py:10);encode (pamqp/frame.py:22) 30
<module> (parley_worker/__main__.py:5);run (asyncio/runners.py:118);_run_once (asyncio/base_events.py:1900) 50
<module> (parley_worker/__main__.py:5);Relay.publish (parley_worker/relay.py:41);dumps (json/encoder.py:200) 20

not a stack line
"""


def test_py_spy_raw_summary() -> None:
    stacks = pyspy.parse_raw(RAW)
    assert [count for _, count in stacks] == [30, 50, 20]
    assert stacks[0][0][-1] == pyspy.Frame("encode", "pamqp/frame.py")
    summary = pyspy.summarise(stacks, top=2)
    assert summary["samples"] == 100
    assert summary["by_library"] == [("asyncio", 0.5), ("pamqp", 0.3)]
    assert summary["by_function"][0] == ("asyncio: _run_once", 0.5)
    # The innermost Parley frame takes what it called (the publish's 30 and the dumps' 20); the
    # service's __main__, below which the whole event loop runs, is not one.
    assert dict(summary["by_parley_frame"]) == {"parley_worker: Relay.publish": 0.5, pyspy.NO_PARLEY_FRAME: 0.5}


def test_frame_without_line_and_odd_files() -> None:
    assert pyspy.parse_frame("f (typing.py)") == pyspy.Frame("f", "typing.py")
    assert pyspy.parse_frame("f (typing.py)").library == "typing"
    assert pyspy.parse_frame("<lambda> (<string>:1)").library == "<string>"
    assert pyspy.summarise([]) == {
        "samples": 0,
        "wait_samples": 0,
        "by_library": [],
        "by_function": [],
        "by_parley_frame": [],
    }


def test_waits_are_counted_apart() -> None:
    raw = (
        "run (asyncio/runners.py:118);BaseEventLoop._run_once (asyncio/base_events.py:1884);"
        "EpollSelector.select (selectors.py:468) 40\n"
        "Thread.run (threading.py:982);_worker (concurrent/futures/thread.py:81) 20\n"
        "Thread.run (threading.py:982);_worker (concurrent/futures/thread.py:83);"
        "SqliteHistoryStore._store (parley_history/sqlite.py:5) 40\n"
    )
    summary = pyspy.summarise(pyspy.parse_raw(raw))
    assert (summary["samples"], summary["wait_samples"]) == (40, 60)
    assert summary["by_library"] == [("parley_history", 1.0)]


def _window(turns: int, seconds: float, cpu_ms: dict[str, float]) -> dict[str, Any]:
    return {"turns": turns, "errors": 0, "span_s": seconds, "turns_per_s": turns / seconds, "cpu_ms": cpu_ms}


def test_peer_summary_per_turn_and_background() -> None:
    idle = {"parley:gateway": 10.0, "litellm": 0.0, "rabbitmq": 100.0, "redis": 20.0}
    busy = {"parley:gateway": 1000.0, "litellm": 0.0, "rabbitmq": 600.0, "redis": 120.0}
    rounds = [
        {
            "saturation": {
                "litellm": _window(100, 10, idle | {"litellm": 4000.0}),
                "parley_openai": _window(200, 10, busy),
            }
        },
        {
            "saturation": {
                "litellm": _window(100, 10, idle | {"litellm": 4000.0}),
                "parley_openai": _window(300, 10, busy),
            }
        },
    ]
    groups = {"litellm": ["litellm"], "parley_openai": ["parley:gateway"]}
    out = summarise(rounds, groups)
    assert out["litellm"]["side_cpu_ms_per_turn"] == 40.0
    assert out["litellm"]["turns_per_s_by_round"] == [10.0, 10.0]
    parley = out["parley_openai"]
    assert parley["side_cpu_ms_per_turn"] == 4.0  # 2,000 ms over 500 turns
    assert out["shared_background_cpu_ms_per_s"] == {"rabbitmq": 10.0, "redis": 2.0}
    # RabbitMQ: 1,200 ms in 20 s of which 200 ms is background → 1,000 over 500 turns.
    assert parley["shared_cpu_ms_per_turn_net_of_background"] == {"rabbitmq": 2.0, "redis": 0.4}
    assert parley["total_with_shared_cpu_ms_per_turn"] == 6.4


def test_parley_frames_above_the_event_loop_are_not_call_sites() -> None:
    # uvloop: the loop is compiled, its callbacks sit right under asyncio's Runner.run; the
    # gateway's `main` started the loop, so it is charged with nothing the loop runs.
    line = (
        "<module> (parley_gateway/__main__.py:37);main (parley_gateway/app.py:201);"
        "Runner.run (asyncio/runners.py:118);run_asgi (uvicorn/protocols/http/httptools_impl.py:422);"
        "StreamHooks.write (parley_gateway/turns.py:99);writelines (asyncio/streams.py:1) 7\n"
        "<module> (parley_gateway/__main__.py:37);main (parley_gateway/app.py:201);"
        "Runner.run (asyncio/runners.py:118) 3\n"
    )
    summary = pyspy.summarise(pyspy.parse_raw(line))
    assert dict(summary["by_parley_frame"]) == {"parley_gateway: StreamHooks.write": 0.7, pyspy.NO_PARLEY_FRAME: 0.3}


def test_libraries_of_full_filenames() -> None:
    def library(path: str) -> str:
        return pyspy.Frame("f", path).library

    venv = "/work/main/.venv/lib/python3.11/site-packages"
    assert library(f"{venv}/opentelemetry/context/contextvars_context.py") == "opentelemetry"
    assert library(f"{venv}/opentelemetry/trace/__init__.py") == "opentelemetry"
    assert library(f"{venv}/typing_extensions.py") == "typing_extensions"
    assert library("/root/.pyenv/versions/3.11.7/lib/python3.11/asyncio/base_events.py") == "asyncio"
    assert library("/root/.pyenv/versions/3.11.7/lib/python3.11/selectors.py") == "selectors"
    assert library("/work/main/services/gateway/parley_gateway/routes/conversations.py") == "parley_gateway"
    assert library("/work/main/libs/common/parley_common/messaging/bus.py") == "parley_common"
    assert library("/work/main/libs/contracts/parley/v1/chat_pb2.py") == "parley"
