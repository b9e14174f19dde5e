"""What `bench/load.py` measured, summed up: throughput, errors by cause, first-token latency
per minute and overall, memory and CPU of every service over time, and the history check.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .stats import percentile


@dataclass(slots=True)
class TurnRecord:
    """One turn: when it started and ended (seconds since the load began), how, and its TTFT."""

    started_s: float
    ended_s: float
    outcome: str  # "ok", or the cause: "http_429:rate_limited", "error_event:<code>", "timeout", …
    # From the request's start to the response headers (gateway), the first event (`meta`, sent
    # by the orchestrator) and the first `delta` (the provider worker): where waiting happens.
    headers_s: float | None
    first_event_s: float | None
    ttft_s: float | None


@dataclass
class Sample:
    """The system every SAMPLE_EVERY_S: RSS (MB) and CPU seconds per service, machine CPU."""

    t_s: float
    rss_mb: dict[str, float]
    cpu_s: dict[str, float]
    pids: dict[str, int]
    generator_cpu_s: float
    machine_busy_s: float
    machine_total_s: float
    in_flight: int
    turns_ok: int


@dataclass
class Observations:
    turns: list[TurnRecord] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    # Open streams, once a second: (seconds since start, streams).
    in_flight: list[tuple[float, int]] = field(default_factory=list)


def _ttft_ms(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ms = [v * 1000 for v in values]
    return {f"p{p}": round(percentile(ms, p), 1) for p in (50, 95, 99)} | {"max": round(max(ms), 1)}


def _slope_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) in value per minute; None with fewer than 3 points."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    return 60 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def summarize(obs: Observations, duration_s: float, steady_after_s: float) -> dict[str, Any]:
    """The report's numbers (what load.json holds besides the configuration)."""
    turns = obs.turns
    ok = [t for t in turns if t.outcome == "ok"]
    errors = Counter(t.outcome for t in turns if t.outcome != "ok")
    ok_in_window = [t for t in ok if t.ended_s <= duration_s]
    steady_ok = [t for t in ok_in_window if t.ended_s >= steady_after_s]
    overall = {
        "turns_started": len(turns),
        "turns_ok": len(ok),
        "turns_failed": len(turns) - len(ok),
        "error_rate_percent": round(100 * (len(turns) - len(ok)) / len(turns), 3) if turns else None,
        "errors_by_code": dict(errors.most_common()),
        "turns_per_s": round(len(ok_in_window) / duration_s, 2),
        "turns_per_s_steady": round(len(steady_ok) / (duration_s - steady_after_s), 2),
        "ttft_ms": _ttft_ms([t.ttft_s for t in ok if t.ttft_s is not None]),
        "ttft_ms_steady": _ttft_ms([t.ttft_s for t in ok if t.ttft_s is not None and t.started_s >= steady_after_s]),
        "headers_ms": _ttft_ms([t.headers_s for t in ok if t.headers_s is not None]),
        "first_event_ms": _ttft_ms([t.first_event_s for t in ok if t.first_event_s is not None]),
        "turn_duration_ms_p50": round(percentile([(t.ended_s - t.started_s) * 1000 for t in ok], 50), 1)
        if ok
        else None,
        "open_streams": {
            "mean": round(_mean([n for t, n in obs.in_flight if t >= steady_after_s]), 1),
            "max": max((n for _, n in obs.in_flight), default=0),
        },
    }
    minutes = []
    for m in range(math.ceil(duration_s / 60)):
        lo, hi = 60.0 * m, min(60.0 * (m + 1), duration_s)
        started = [t for t in turns if lo <= t.started_s < hi]
        done = [t for t in ok if lo <= t.ended_s < hi]
        minutes.append(
            {
                "minute": m + 1,
                "turns_started": len(started),
                "turns_per_s": round(len(done) / (hi - lo), 2),
                "errors": sum(t.outcome != "ok" for t in started),
                "ttft_ms": _ttft_ms([t.ttft_s for t in started if t.outcome == "ok" and t.ttft_s is not None]),
                "open_streams_mean": round(_mean([n for t, n in obs.in_flight if lo <= t < hi]), 1),
                "machine_cpu_percent": _cpu_percent(obs.samples, lo, hi),
            }
        )
    return {
        "overall": overall,
        "per_minute": minutes,
        "memory": _memory(obs.samples, steady_after_s),
        "cpu": _cpu(obs.samples),
        "rss_samples": [{"t_s": round(s.t_s, 1), "in_flight": s.in_flight, "rss_mb": s.rss_mb} for s in obs.samples],
    }


def _cpu_percent(samples: list[Sample], lo: float, hi: float) -> float | None:
    """Machine CPU busy (% of all cores) between the samples taken in (lo, hi]."""
    busy = total = 0.0
    for before, after in itertools.pairwise(samples):
        if lo < after.t_s <= hi:
            busy += after.machine_busy_s - before.machine_busy_s
            total += after.machine_total_s - before.machine_total_s
    return round(100 * busy / total, 1) if total else None


def _memory(samples: list[Sample], steady_after_s: float) -> dict[str, Any]:
    """Per process RSS at the start (before load), once steady, at the end, peak, and growth
    from steady to end (absolute, relative, and as a least-squares slope over the samples)."""
    if not samples:
        return {}
    steady = next((s for s in samples if s.t_s >= steady_after_s), samples[-1])
    start, end = samples[0], samples[-1]
    per_process: dict[str, Any] = {}
    for name in start.rss_mb:
        series = [(s.t_s, s.rss_mb[name]) for s in samples if name in s.rss_mb]
        steady_mb, end_mb = steady.rss_mb.get(name), end.rss_mb.get(name)
        growth = end_mb - steady_mb if end_mb is not None and steady_mb is not None else None
        slope = _slope_per_min([(t, v) for t, v in series if t >= steady.t_s])
        per_process[name] = {
            "start_mb": start.rss_mb[name],
            "steady_mb": steady_mb,
            "end_mb": end_mb,
            "peak_mb": max(v for _, v in series),
            "growth_once_steady_mb": round(growth, 1) if growth is not None else None,
            "growth_once_steady_percent": round(100 * growth / steady_mb, 1)
            if growth is not None and steady_mb
            else None,
            "steady_slope_mb_per_min": round(slope, 2) if slope is not None else None,
            # A different pid at some sample: the process was restarted (or exited: no end_mb).
            "restarted": len({s.pids[name] for s in samples if name in s.pids}) > 1,
        }
    return {"steady_at_s": round(steady.t_s, 1), "end_at_s": round(end.t_s, 1), "per_process": per_process}


def _cpu(samples: list[Sample]) -> dict[str, Any]:
    """Average CPU over the run, in % of one core per process, and the machine's busy share."""
    if len(samples) < 2:
        return {}
    first, last = samples[0], samples[-1]
    wall = last.t_s - first.t_s
    # A process restarted during the run (another pid) has no meaningful total.
    per_process = {
        name: round(100 * (last.cpu_s[name] - first.cpu_s[name]) / wall, 1)
        for name in first.cpu_s
        if name in last.cpu_s and first.pids[name] == last.pids[name]
    }
    ours = sum(per_process.values()) + 100 * (last.generator_cpu_s - first.generator_cpu_s) / wall
    machine = 100 * (last.machine_busy_s - first.machine_busy_s) / (last.machine_total_s - first.machine_total_s)
    cores = (last.machine_total_s - first.machine_total_s) / wall
    return {
        "percent_of_one_core": per_process
        | {"load-generator": round(100 * (last.generator_cpu_s - first.generator_cpu_s) / wall, 1)},
        "machine_busy_percent_of_all_cores": round(machine, 1),
        # Whatever else runs on the machine: other people's tests, the kernel.
        "rest_of_machine_percent_of_all_cores": round(machine - ours / cores, 1) if cores else None,
    }


def print_report(result: dict[str, Any]) -> None:
    o = result["overall"]
    shape = result["shape"]
    print()
    print(
        f"load: {shape['users']} users x {shape['conversations_per_user']} conversations, think "
        f"{shape['think_s'][0]}-{shape['think_s'][1]} s, demo {shape['demo_first_token_delay_ms']} ms + "
        f"{shape['demo_tokens_per_s']:g} tokens/s, {shape['duration_s']:g} s"
    )
    print(
        f"turns: {o['turns_ok']} ok of {o['turns_started']} | {o['turns_per_s']} turns/s "
        f"({o['turns_per_s_steady']} once steady) | open streams mean {o['open_streams']['mean']} "
        f"max {o['open_streams']['max']} | error rate {o['error_rate_percent']}%"
    )
    for code, count in o["errors_by_code"].items():
        print(f"  error {code}: {count}")
    stages = [("headers", o["headers_ms"]), ("first event", o["first_event_ms"]), ("first delta", o["ttft_ms"])]
    print(
        "time to (p50 / p99 ms): "
        + ", ".join(f"{name} {v['p50']:.0f} / {v['p99']:.0f}" for name, v in stages if v is not None)
    )
    print()
    print(
        f"{'minute':>6} {'started':>8} {'turns/s':>8} {'errors':>7} {'streams':>8} {'cpu%':>5} "
        f"{'ttft p50':>9} {'p95':>8} {'p99':>8} {'max':>8}"
    )
    machine = result["cpu"].get("machine_busy_percent_of_all_cores")
    rows = [*result["per_minute"], {"minute": "all", **_overall_row(o), "machine_cpu_percent": machine}]
    for row in rows:
        t = row["ttft_ms"] or {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
        cpu = row.get("machine_cpu_percent")
        print(
            f"{row['minute']!s:>6} {row['turns_started']:>8} {row['turns_per_s']:>8.2f} {row['errors']:>7} "
            f"{row['open_streams_mean']:>8} {'' if cpu is None else cpu:>5} "
            f"{t['p50']:>9.1f} {t['p95']:>8.1f} {t['p99']:>8.1f} {t['max']:>8.1f}"
        )
    memory = result["memory"]
    print()
    print(
        f"RSS (MB): start = before load, steady = at {memory['steady_at_s']:g} s, end = at {memory['end_at_s']:g} s"
        " (* shared with everyone on this machine)"
    )
    print(f"{'process':>16} {'start':>7} {'steady':>7} {'end':>7} {'peak':>7} {'growth':>8} {'%':>6} {'MB/min':>7}")
    for name, m in memory["per_process"].items():
        cells = [m["start_mb"], m["steady_mb"], m["end_mb"], m["peak_mb"]]
        trend = [m["growth_once_steady_mb"], m["growth_once_steady_percent"], m["steady_slope_mb_per_min"]]
        print(
            f"{name:>16} "
            + " ".join("      -" if v is None else f"{v:>7.1f}" for v in cells)
            + f" {'-' if trend[0] is None else f'{trend[0]:+.1f}':>8}"
            + f" {'-' if trend[1] is None else f'{trend[1]:+.1f}':>6}"
            + f" {'-' if trend[2] is None else f'{trend[2]:+.2f}':>7}"
            + ("  (restarted during the run)" if m["restarted"] else "")
        )
    cpu = result["cpu"]
    if cpu:
        parts = ", ".join(f"{k} {v}" for k, v in cpu["percent_of_one_core"].items())
        print()
        print(f"CPU (% of one core): {parts}")
        print(
            f"machine busy {cpu['machine_busy_percent_of_all_cores']}% of all cores "
            f"(everything not listed above: {cpu['rest_of_machine_percent_of_all_cores']}%)"
        )
    if result["services_died_during_run"]:
        print(f"\nDIED during the run (exit codes): {result['services_died_during_run']}")
    warnings = result["service_log_warnings"]
    print("\nservice log warnings and errors:" + ("" if warnings else " none"))
    for service, counts in warnings.items():
        for message, n in list(counts.items())[:5]:
            print(f"  {service}: {n} x {message}")
    left = {name: n for name, n in result["messages_left_on_bus"].items() if n}
    print(f"\nmessages left on the bus after the run: {left or 'none'}")
    h = result["history_check"]
    print()
    print(
        f"history: {h['turns_checked']} completed turns in {h['conversations']} conversations checked: "
        f"missing user {h['missing_user']}, missing answer {h['missing_answer']}, "
        f"different text {h['wrong_user'] + h['wrong_answer']}, duplicate answers {h['duplicate_answer']}"
        + (f", conversations unreadable {h['conversations_unreadable']}" if h["conversations_unreadable"] else "")
    )


def _overall_row(o: dict[str, Any]) -> dict[str, Any]:
    return {
        "turns_started": o["turns_started"],
        "turns_per_s": o["turns_per_s"],
        "errors": o["turns_failed"],
        "open_streams_mean": o["open_streams"]["mean"],
        "ttft_ms": o["ttft_ms"],
    }
