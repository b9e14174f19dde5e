"""The floor benchmark's arithmetic: what a turn counts, Σ count x unit by process, the
first-token path, the worker's token ratio, and the readings it parses (no timing)."""

from __future__ import annotations

import asyncio

import pytest

from bench import floor


def units(client_us: float = 100.0, server_us: float = 10.0) -> dict[str, dict[str, float]]:
    names = {step.unit for step in floor.TURN}
    return {
        name: {"client_us": client_us, **({"server_us": server_us} if name in floor.SERVER_OF else {})}
        for name in names
    }


def test_a_short_turn_counts_what_the_services_do() -> None:
    counts = floor.turn_counts()
    redis_round_trips = sum(n for k, n in counts.items() if k.startswith("redis_"))
    assert redis_round_trips == 11
    # Scripts: alone, one with other commands, two in one round trip.
    assert counts["redis_evalsha"] + counts["redis_evalsha_pipe2"] + 2 * counts["redis_evalsha2"] == 6
    assert counts["amqp_publish_confirmed"] == 3  # ChatRequest, ProviderJob, ResponseCompleted
    assert counts["amqp_consume_acked"] == 4  # ResponseCompleted reaches history and the orchestrator
    assert counts["amqp_frame_publish"] == counts["amqp_frame_consume"] == 5
    assert counts["grpc_unary"] == 1 and counts["sqlite_commit"] == 2 and counts["http_fastapi"] == 1
    assert counts["httpx_short_stream"] == 1
    assert all(step.unit in floor.SERVER_OF or not step.unit.startswith(("amqp", "redis")) for step in floor.TURN)


def test_floor_is_count_times_unit_by_process() -> None:
    result = floor.floor_per_turn(units(client_us=100.0, server_us=10.0))
    counts = floor.turn_counts()
    operations = sum(counts.values())
    served = sum(n for unit, n in counts.items() if unit in floor.SERVER_OF)
    assert result["total_ms"] == pytest.approx(operations * 0.1 + served * 0.01)
    # The broker's share: every AMQP step's server column.
    amqp = sum(n for unit, n in counts.items() if unit.startswith("amqp"))
    assert result["by_process_ms"]["rabbitmq"] == pytest.approx(amqp * 0.01)
    # The gateway: its own steps' client CPU, plus uvicorn's (the HTTP unit's server column).
    gateway = sum(step.count for step in floor.TURN if step.process == "gateway")
    assert result["by_process_ms"]["gateway"] == pytest.approx(gateway * 0.1 + 0.01)
    # History: its consume and commits, plus the gRPC server's side of AppendMessage.
    history = sum(step.count for step in floor.TURN if step.process == "history")
    assert result["by_process_ms"]["history"] == pytest.approx(history * 0.1 + 0.01)
    assert result["parley_processes_ms"] == pytest.approx(
        result["total_ms"] - result["by_process_ms"]["rabbitmq"] - result["by_process_ms"]["redis"]
    )
    assert result["turns_per_s_on_2_cores"] == pytest.approx(2000 / result["total_ms"], rel=1e-3)


def test_first_token_floor_sums_the_waits_in_sequence() -> None:
    latency = dict.fromkeys(floor.FIRST_TOKEN_PATH, 1.0)
    result = floor.first_token_floor(latency)
    assert result["total_ms"] == sum(floor.FIRST_TOKEN_PATH.values())
    assert sum(n for k, n in floor.FIRST_TOKEN_PATH.items() if k.startswith("redis_")) == 7
    assert floor.first_token_floor({"a": 0.5, "b": 2.0}, {"a": 4, "b": 1})["by_unit_ms"] == {"a": 2.0, "b": 2.0}


def test_tokens_per_second_at_the_floor() -> None:
    # 50 µs a token, 150 µs a frame of 3 tokens: 100 µs a token, 10,000 a second on one core.
    assert floor.tokens_per_s_floor(50.0, 150.0, 3) == pytest.approx(10_000)
    assert floor.tokens_per_s_floor(50.0, 150.0, 3, cores=2) == pytest.approx(20_000)
    assert floor.tokens_per_s_floor(50.0, 150.0, 1) == pytest.approx(5_000)
    assert floor.direct_tokens_per_s({"direct": {"tokens_per_s": 9540}}) == 9540.0
    assert floor.direct_tokens_per_s(None) is None and floor.direct_tokens_per_s({}) is None


def test_redis_info_cpu_as_text_or_parsed() -> None:
    text = "# CPU\r\nused_cpu_sys:1.250000\r\nused_cpu_user:2.500000\r\nused_cpu_sys_children:9.0\r\n"
    assert floor.parse_info_cpu(text) == pytest.approx(3.75)
    assert floor.parse_info_cpu({"used_cpu_sys": 1.25, "used_cpu_user": 2.5}) == pytest.approx(3.75)


def test_shared_server_cpu_net_of_background() -> None:
    # 500 ms in a 2 s burst of 1,000 operations, background 100 ms/s: 300 µs each.
    assert floor.net_per_op(500.0, 2.0, 100.0, 1000) == pytest.approx(300.0)
    assert floor.net_per_op(50.0, 2.0, 100.0, 1000) == 0.0  # never negative


def test_unit_result_keeps_the_least_disturbed_burst() -> None:
    bursts = [
        floor.Burst(200.0, 60.0, 1.0, 1000),
        floor.Burst(100.0, 40.0, 1.0, 1000),
        floor.Burst(150.0, 90.0, 1.0, 1000),
    ]
    result = floor.unit_result(bursts, background_ms_per_s=10.0)
    assert result["client_us"] == 100.0 and result["client_us_median"] == 150.0
    # A shared server (net of a background): the median; its own process: the least.
    assert result["server_us"] == 50.0 and result["server_us_median"] == 50.0
    assert result["server_raw_us"] == [60.0, 40.0, 90.0]
    assert floor.unit_result(bursts)["server_us"] == 40.0
    assert "server_us" not in floor.unit_result([floor.Burst(1.0, 0.0, 1.0, 10)])


def test_turn_from_batch() -> None:
    cpu = {"gateway": 600.0, "provider-worker": 900.0, "rabbitmq": 500.0, "redis": 40.0}
    result = floor.turn_from_batch(cpu, 100, 10.0, {"rabbitmq": 20.0, "redis": 10.0})
    assert result["by_process_ms"] == {"gateway": 6.0, "provider-worker": 9.0, "rabbitmq": 3.0, "redis": 0.0}
    assert result["parley_processes_ms"] == 15.0 and result["total_ms"] == 18.0
    assert result["drowned_in_background"] == ["redis"]  # 100 ms of background in 40 ms seen


def test_measured_turn_from_peer_results() -> None:
    peer = {
        "measured_at": "2026-12-07T07:23:35Z",
        "concurrency": 100,
        "saturation": {
            "parley_native": {
                "side_processes": ["parley:gateway", "parley:history"],
                "cpu_ms_per_turn": {"parley:gateway": 6.0, "parley:history": 5.5, "rabbitmq": 3.6, "redis": 1.5},
                "side_cpu_ms_per_turn": 11.5,
                "shared_cpu_ms_per_turn_net_of_background": {"rabbitmq": 3.4, "redis": 1.4},
                "total_with_shared_cpu_ms_per_turn": 16.3,
                "turns_per_s": 45.3,
            }
        },
        "first_token_ms": {"parley_native": {"1": {"added_p50": 54.1}}},
    }
    turn = floor.measured_turn(peer)
    assert turn is not None
    assert turn["by_process_ms"] == {"gateway": 6.0, "history": 5.5, "rabbitmq": 3.4, "redis": 1.4}
    assert (turn["total_ms"], turn["parley_processes_ms"], turn["first_token_added_p50_ms_c1"]) == (16.3, 11.5, 54.1)
    assert floor.measured_turn({"saturation": {}}) is None


def test_lanes_make_exactly_the_calls_asked() -> None:
    calls: list[int] = []

    async def one(lane: int) -> None:
        calls.append(lane)
        await asyncio.sleep(0)

    assert asyncio.run(floor.lanes(25, 4, one)) == 25
    assert len(calls) == 25 and set(calls) == {0, 1, 2, 3}
