"""Parley beside the LiteLLM proxy, both in front of the same fake OpenAI-format upstream, in one
run, round by round so that the machine's drift hits every side alike.

- Turns/s at saturation (10-token answers, BENCH_PEER_CONCURRENCY lanes, 100 by default) for:
  the upstream called directly, LiteLLM's proxy (one worker), Parley's /v1/chat/completions and
  Parley's native POST /v1/conversations/{id}/messages.
- CPU ms per turn of every process of each side, read from /proc/<pid>/stat over the same
  window: Parley's five services; LiteLLM's process tree; RabbitMQ and Redis apart (they serve
  the whole machine, so their CPU in the windows where Parley is idle is given as background);
  the upstream and this load generator too.
- First token p50/p99 at concurrency 1, 10 and 50, and what each side adds to the direct call.
- Bytes on the wire per character of answer text (200 tokens at 50 tokens/s): status line,
  headers and chunk framing included, with and without `Accept-Encoding: gzip`.

LiteLLM is installed into its own virtualenv, `.cache/litellm-venv` (`litellm[proxy]` at
LITELLM_VERSION), never into the project's; reused when present. If it cannot be installed the
benchmark fails and says why. Knobs: BENCH_PEER_ROUNDS (2), BENCH_PEER_SATURATION_S (10 s per
target per round), BENCH_PEER_TTFT_S (3 s per target, concurrency and round).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from parley_dev.fake_providers import fake_provider_process
from parley_dev.infra import free_port
from parley_dev.stack import Stack
from tests.support.sse import parse, text_of

from .cpu import CpuMeter, pid_listening_on
from .rawhttp import Connection, Reply
from .stats import percentile, write
from .system import system

# 1.107.0 was a compromised release; the proxy extra of 1.108.14 and 1.110.2 needs packages
# (litellm-proxy-extras, litellm-proxy) at versions PyPI does not have.
LITELLM_VERSION = "1.106.12"
ROOT = Path(__file__).resolve().parent.parent
LITELLM_VENV = ROOT / ".cache" / "litellm-venv"

ROUNDS = int(os.environ.get("BENCH_PEER_ROUNDS", "2"))
SATURATION_S = float(os.environ.get("BENCH_PEER_SATURATION_S", "10"))
SATURATION_CONCURRENCY = int(os.environ.get("BENCH_PEER_CONCURRENCY", "100"))
TTFT_S = float(os.environ.get("BENCH_PEER_TTFT_S", "3"))
TTFT_CONCURRENCY = (1, 10, 50)
WARM_S = 1.5
ANSWER_TOKENS = 10
WIRE_TOKENS, WIRE_PACE = 200, 50.0
UPSTREAM_MODEL = "llama-test"
# Lanes (and so native conversations) of the load; the wire measurement's three come after them.
LANES = max(SATURATION_CONCURRENCY, *TTFT_CONCURRENCY)

OPENAI_FIRST = re.compile(rb'"content": ?"[^"]')
NATIVE_FIRST = re.compile(rb"event: delta")


@dataclass
class Target:
    name: str
    port: int
    headers: dict[str, str]
    path: Callable[[int], str]  # by lane
    body: Callable[[str], bytes]  # by prompt
    first: re.Pattern[bytes]
    end: bytes
    pool: list[Connection] = field(default_factory=list)

    def connection(self, lane: int) -> Connection:
        while len(self.pool) <= lane:
            self.pool.append(Connection("127.0.0.1", self.port))
        return self.pool[lane]


_seq = iter(range(1, 1 << 62))


def prompt(tokens: int, pace: float | None = None) -> str:
    """Every prompt differs (no cache can answer it); the directive sets the answer's length."""
    directive: dict[str, Any] = {"tokens": tokens}
    if pace:
        directive["tokens_per_s"] = pace
    return f"Turn {next(_seq)}: answer briefly. [[fake {json.dumps(directive)}]]"


def openai_body(model: str) -> Callable[[str], bytes]:
    def body(text: str) -> bytes:
        return json.dumps({"model": model, "stream": True, "messages": [{"role": "user", "content": text}]}).encode()

    return body


def native_body(text: str) -> bytes:
    return json.dumps({"content": text, "model": "local"}).encode()


# ---- LiteLLM ---------------------------------------------------------------------------------


def ensure_litellm(venv: Path = LITELLM_VENV, version: str = LITELLM_VERSION) -> Path:
    """The `litellm` command of the peer's own virtualenv, installed there when missing."""
    marker = venv / ".parley-litellm-version"
    command = venv / "bin" / "litellm"
    if command.exists() and marker.exists() and marker.read_text().strip() == version:
        return command
    print(f"installing litellm[proxy]=={version} into {venv} (its own virtualenv) …", flush=True)
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "--quiet", f"litellm[proxy]=={version}"],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0 or not command.exists():
        tail = "\n".join(line[:400] for line in (done.stdout + done.stderr).strip().splitlines()[-15:])
        raise RuntimeError(
            f"the LiteLLM peer benchmark needs litellm[proxy]=={version} from PyPI in {venv}, and pip could "
            f"not install it (exit {done.returncode}; is PyPI reachable?):\n{tail}"
        )
    marker.write_text(version + "\n")
    return command


def start_litellm(command: Path, upstream: str, workdir: Path, master_key: str) -> tuple[subprocess.Popen[bytes], int]:
    """The proxy with one worker and a master key (it refuses to start without one; requests
    then carry it as Parley's carry theirs), its logs in `workdir`."""
    port = free_port()
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: fake\n"
        "    litellm_params:\n"
        f"      model: openai/{UPSTREAM_MODEL}\n"
        f"      api_base: {upstream}/v1\n"
        "      api_key: sk-fake-upstream\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  set_verbose: false\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PARLEY_", "DATABASE_URL", "LITELLM_"))}
    # Its cost map from the package, not fetched from the internet at start-up; quiet logs.
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", NO_DOCS="True", DISABLE_ADMIN_UI="True")
    env["LITELLM_MASTER_KEY"] = master_key
    log = open(workdir / "litellm.log", "ab")
    process = subprocess.Popen(
        [str(command), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
        env=env,
        stdout=log,
        stderr=log,
        cwd=workdir,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=2).status_code == 200:
                return process, port
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process_group(process)
            tail = (workdir / "litellm.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the LiteLLM proxy did not start (log {workdir / 'litellm.log'}):\n{tail}")
        time.sleep(0.5)


def stop_process_group(process: subprocess.Popen[bytes], grace_s: float = 15) -> None:
    """SIGTERM the process group a benchmark started, SIGKILL it after `grace_s`."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# ---- load ------------------------------------------------------------------------------------


async def _one(target: Target, lane: int, tokens: int, pace: float | None = None, **kw: Any) -> Reply:
    headers = dict(target.headers, **kw.pop("extra_headers", {}))
    return await target.connection(lane).request(
        target.path(lane), target.body(prompt(tokens, pace)), headers, target.first, target.end, **kw
    )


async def saturate(target: Target, meter: CpuMeter) -> dict[str, Any]:
    """Every lane sends turn after turn for WARM_S + SATURATION_S, then finishes the turn it is in.
    Turns/s: turns completed in the last SATURATION_S of the sending. CPU per turn: every
    process's CPU from before the first turn to a second after the last one ended (from idle to
    idle), over every turn: no turn is half counted however slow the machine is."""
    done: list[float] = []
    failed: list[float] = []
    sample_error: list[str] = []
    stopping = False

    async def lane(i: int) -> None:
        while not stopping:
            reply = await _one(target, i, ANSWER_TOKENS)
            if reply.status == 200 and reply.ended:
                done.append(time.perf_counter())
            else:
                failed.append(time.perf_counter())
                if not sample_error:
                    sample_error.append(f"status {reply.status}: {reply.tail[-200:]!r}")
                await asyncio.sleep(0.05)

    before, start = meter.read(), time.perf_counter()
    tasks = [asyncio.create_task(lane(i)) for i in range(SATURATION_CONCURRENCY)]
    await asyncio.sleep(WARM_S)
    t0 = time.perf_counter()
    await asyncio.sleep(SATURATION_S)
    t1 = time.perf_counter()
    stopping = True
    await asyncio.gather(*tasks)
    await asyncio.sleep(1)  # what follows a turn's last frame: history, budgets, completions
    after, end = meter.read(), time.perf_counter()
    window_turns = sum(t0 <= t <= t1 for t in done)
    return {
        "turns_per_s": round(window_turns / (t1 - t0), 1),
        "window_turns": window_turns,
        "window_s": round(t1 - t0, 3),
        "turns": len(done),
        "idle_to_idle_turns_per_s": round(len(done) / (end - start - 1), 1),
        "errors": len(failed),
        "first_error": sample_error[0] if sample_error else None,
        "span_s": round(end - start, 3),
        "cpu_ms": {name: round(after[name] - before[name], 1) for name in after},
    }


async def first_tokens(target: Target, concurrency: int) -> tuple[list[float], int]:
    """Turn after turn on `concurrency` lanes for TTFT_S: first-token seconds and failures."""
    ttft: list[float] = []
    failures = 0
    deadline = time.perf_counter() + TTFT_S

    async def lane(i: int) -> None:
        nonlocal failures
        while time.perf_counter() < deadline:
            reply = await _one(target, i, ANSWER_TOKENS)
            if reply.status == 200 and reply.ended and reply.first_token_s is not None:
                ttft.append(reply.first_token_s)
            else:
                failures += 1
                await asyncio.sleep(0.05)

    await asyncio.gather(*(lane(i) for i in range(concurrency)))
    return ttft, failures


async def wire(targets: dict[str, Target]) -> dict[str, Any]:
    """Bytes read off the socket per character of answer text, three answers per variant, all
    variants at once (Connection: close, so each count is one response and nothing else)."""
    variants = [(name, gzip) for name in targets for gzip in (False, True)]

    async def measure(name: str, gzip: bool, i: int) -> tuple[int, int, str]:
        target = targets[name]
        connection = Connection("127.0.0.1", target.port)
        extra = {"Connection": "close"} | ({"Accept-Encoding": "gzip"} if gzip else {})
        reply = await connection.request(
            target.path(LANES + i),
            target.body(prompt(WIRE_TOKENS, WIRE_PACE)),
            dict(target.headers, **extra),
            target.first,
            target.end,
            keep_body=True,
        )
        await connection.close()
        if reply.status != 200 or not reply.ended:
            raise RuntimeError(f"{name}: the answer did not complete ({reply.status}: {reply.tail!r})")
        return reply.wire_bytes, len(text_of(parse(reply.body))), reply.content_encoding

    results = await asyncio.gather(*(measure(name, gzip, i) for name, gzip in variants for i in range(3)))
    out: dict[str, Any] = {}
    for k, (name, gzip) in enumerate(variants):
        mine = results[3 * k : 3 * k + 3]
        wire_bytes, chars = sum(r[0] for r in mine), sum(r[1] for r in mine)
        out[f"{name}{' gzip' if gzip else ''}"] = {
            "wire_bytes": wire_bytes,
            "answer_chars": chars,
            "bytes_per_char": round(wire_bytes / chars, 2),
            "content_encoding": mine[0][2] or "identity",
        }
    return out


# ---- the run ---------------------------------------------------------------------------------


def _models_file(path: Path, upstream: str) -> None:
    spec = {
        "upstream_model": UPSTREAM_MODEL,
        "context_window": 100_000,
        "max_output_tokens": 1000,
        "input_price_per_mtok": 0,
        "output_price_per_mtok": 0,
    }
    path.write_text(
        json.dumps(
            {
                "default_model": "demo",
                "providers": {"demo": {"kind": "demo"}, "local": {"kind": "openai", "base_url": f"{upstream}/v1"}},
                "models": {"demo": {"provider": "demo", **spec}, "local": {"provider": "local", **spec}},
            }
        )
    )


def parley_env(models: Path) -> dict[str, str]:
    huge = 10**15
    return {
        "PARLEY_MODELS_FILE": str(models),
        "PARLEY_WORKER_PROVIDERS": '["demo", "local"]',
        "PARLEY_PLANS": json.dumps({"default": {"monthly_tokens": huge, "monthly_cost_micros": huge}}),
    }


async def parley_targets(stack: Stack, key: str) -> dict[str, Target]:
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=auth, timeout=30) as client:
        conversations = [(await client.post("/v1/conversations", json={})).json()["id"] for _ in range(LANES + 3)]
    return {
        "parley_openai": Target(
            "parley_openai",
            stack.gateway_port,
            auth,
            lambda _lane: "/v1/chat/completions",
            openai_body("local"),
            OPENAI_FIRST,
            b"data: [DONE]",
        ),
        "parley_native": Target(
            "parley_native",
            stack.gateway_port,
            auth,
            lambda lane: f"/v1/conversations/{conversations[lane]}/messages",
            native_body,
            NATIVE_FIRST,
            b"event: done",
        ),
    }


def summarise(rounds: list[dict[str, Any]], groups: dict[str, list[str]]) -> dict[str, Any]:
    """Per target over the rounds: turns/s (each round, median), CPU ms per turn by group (all
    rounds' CPU over all rounds' turns), and the shared servers' background: their CPU per second
    in the windows where no Parley turn ran (the direct and LiteLLM windows)."""
    out: dict[str, Any] = {}
    shared = ("rabbitmq", "redis")
    idle_s = sum(r["saturation"][t]["span_s"] for r in rounds for t in ("direct", "litellm") if t in r["saturation"])
    background = {
        s: sum(r["saturation"][t]["cpu_ms"][s] for r in rounds for t in ("direct", "litellm") if t in r["saturation"])
        / idle_s
        if idle_s
        else 0.0
        for s in shared
    }
    for target in rounds[0]["saturation"]:
        windows = [r["saturation"][target] for r in rounds]
        turns = sum(w["turns"] for w in windows)
        seconds = sum(w["span_s"] for w in windows)
        per_turn = {
            name: round(sum(w["cpu_ms"][name] for w in windows) / turns, 2) if turns else None
            for name in windows[0]["cpu_ms"]
        }
        side = groups.get(target, [])
        side_ms = round(sum(per_turn[n] or 0 for n in side), 2) if turns else None
        entry: dict[str, Any] = {
            "turns_per_s_by_round": [w["turns_per_s"] for w in windows],
            "turns_per_s": round(sorted(w["turns_per_s"] for w in windows)[len(windows) // 2], 1),
            "idle_to_idle_turns_per_s_by_round": [w.get("idle_to_idle_turns_per_s") for w in windows],
            "errors": sum(w["errors"] for w in windows),
            "cpu_ms_per_turn": per_turn,
            "side_processes": side,
            "side_cpu_ms_per_turn": side_ms,
        }
        if target.startswith("parley") and turns:
            net = {s: round(max(0.0, (per_turn[s] or 0) - background[s] * seconds / turns), 2) for s in shared}
            entry["shared_cpu_ms_per_turn_net_of_background"] = net
            entry["total_with_shared_cpu_ms_per_turn"] = round((side_ms or 0) + sum(net.values()), 2)
        out[target] = entry
    out["shared_background_cpu_ms_per_s"] = {s: round(v, 1) for s, v in background.items()}
    return out


async def main() -> None:
    command = ensure_litellm()
    key = "pk_bench_" + secrets.token_urlsafe(18)
    workdir = Path(tempfile.mkdtemp(prefix="parley-bench-peer-"))
    with fake_provider_process(workdir / "fake.log") as upstream:
        models = workdir / "models.json"
        _models_file(models, upstream)
        master_key = "sk-" + secrets.token_hex(32)
        litellm, litellm_port = await asyncio.to_thread(start_litellm, command, upstream, workdir, master_key)
        try:
            async with system("peer", key, parley_env(models)) as stack:
                result = await _measure(stack, key, upstream, litellm, litellm_port, master_key)
        finally:
            stop_process_group(litellm)
    result["litellm_version"] = LITELLM_VERSION
    print(f"wrote {write('peer', result)}")


async def _measure(
    stack: Stack, key: str, upstream: str, litellm: subprocess.Popen[bytes], litellm_port: int, master_key: str
) -> dict[str, Any]:
    upstream_port = int(upstream.rsplit(":", 1)[1])
    targets = {
        "direct": Target(
            "direct", upstream_port, {}, lambda _l: "/v1/chat/completions", openai_body(UPSTREAM_MODEL), OPENAI_FIRST,
            b"data: [DONE]",
        ),
        "litellm": Target(
            "litellm", litellm_port, {"Authorization": f"Bearer {master_key}"}, lambda _l: "/v1/chat/completions",
            openai_body("fake"), OPENAI_FIRST, b"data: [DONE]",
        ),
        **(await parley_targets(stack, key)),
    }  # fmt: skip
    services = {name: [p.pid] for name, p in stack.processes.items()}
    shared = {}
    for name, port in (("rabbitmq", 5672), ("redis", 6379)):
        pid = pid_listening_on(port)
        if pid is None:
            raise RuntimeError(f"no process listens on {port} ({name}); the benchmark expects the local servers")
        shared[name] = [pid]
    upstream_pid = pid_listening_on(upstream_port)
    meter = CpuMeter(
        {
            **{f"parley:{n}": pids for n, pids in services.items()},
            **shared,
            "upstream": [upstream_pid] if upstream_pid else [],
            "load generator": [os.getpid()],
        },
        trees={"litellm": litellm.pid},
    )
    groups = {
        "parley_openai": [f"parley:{n}" for n in services],
        "parley_native": [f"parley:{n}" for n in services],
        "litellm": ["litellm"],
        "direct": ["upstream"],
    }
    async with httpx.AsyncClient(timeout=10) as fake:
        # Warm-up: connections, imports, caches, on every side.
        for target in targets.values():
            for c in (1, 10, SATURATION_CONCURRENCY):  # the last: every lane's connection opened
                await asyncio.gather(*(_one(target, lane, ANSWER_TOKENS) for lane in range(c)))
        rounds: list[dict[str, Any]] = []
        ttft: dict[str, dict[int, list[float]]] = {t: {c: [] for c in TTFT_CONCURRENCY} for t in targets}
        ttft_failures: dict[str, int] = dict.fromkeys(targets, 0)
        names = list(targets)
        for r in range(ROUNDS):
            order = names[r % len(names) :] + names[: r % len(names)]
            current: dict[str, Any] = {"order": order, "saturation": {}}
            for name in order:
                await fake.delete(f"{upstream}/_fake/requests")  # the fake keeps every request seen
                window = await saturate(targets[name], meter)
                current["saturation"][name] = window
                print(
                    f"round {r + 1} {name:14} {window['turns_per_s']:7.1f} turns/s "
                    f"in the window; {window['turns']} turns in {window['span_s']:.0f} s idle to idle, "
                    f"{window['errors']} errors",
                    flush=True,
                )
            for c in TTFT_CONCURRENCY:
                for name in order:
                    found, failures = await first_tokens(targets[name], c)
                    ttft[name][c] += found
                    ttft_failures[name] += failures
            rounds.append({k: (dict(sorted(v.items())) if k == "saturation" else v) for k, v in current.items()})
        await fake.delete(f"{upstream}/_fake/requests")
        wire_result = await wire({n: targets[n] for n in ("direct", "litellm", "parley_openai", "parley_native")})
    for target in targets.values():
        for connection in target.pool:
            await connection.close()
    saturation = summarise(rounds, groups)
    first_token: dict[str, Any] = {}
    for name in targets:
        first_token[name] = {"failures": ttft_failures[name]}
        for c in TTFT_CONCURRENCY:
            ms = [s * 1000 for s in ttft[name][c]]
            cell: dict[str, Any] = {"n": len(ms)}
            if ms:
                cell.update(p50=round(percentile(ms, 50), 2), p99=round(percentile(ms, 99), 2))
            first_token[name][str(c)] = cell
    for name in targets:
        if name == "direct":
            continue
        for c in TTFT_CONCURRENCY:
            cell, base = first_token[name][str(c)], first_token["direct"][str(c)]
            if "p50" in cell and "p50" in base:
                cell["added_p50"] = round(cell["p50"] - base["p50"], 2)
                cell["added_p99"] = round(cell["p99"] - base["p99"], 2)

    def ratios(key: str) -> list[float | None]:
        pairs = zip(saturation["parley_openai"][key], saturation["litellm"][key], strict=True)
        return [round(p / lt, 2) if lt else None for p, lt in pairs]

    result: dict[str, Any] = {
        "rounds": ROUNDS,
        "saturation_s": SATURATION_S,
        "concurrency": SATURATION_CONCURRENCY,
        "answer_tokens": ANSWER_TOKENS,
        "ttft_s_per_cell": TTFT_S,
        "saturation": saturation,
        "parley_openai_over_litellm_turns_per_s_by_round": ratios("turns_per_s_by_round"),
        "parley_openai_over_litellm_idle_to_idle_by_round": ratios("idle_to_idle_turns_per_s_by_round"),
        "first_token_ms": first_token,
        "wire": {"tokens": WIRE_TOKENS, "tokens_per_s": WIRE_PACE, **wire_result},
        "raw_rounds": rounds,
        "load_average": os.getloadavg(),
    }
    print_report(result)
    return result


def print_report(result: dict[str, Any]) -> None:
    sat = result["saturation"]
    print(f"\nsaturation, {result['answer_tokens']}-token answers, concurrency {result['concurrency']}:")
    for name in ("direct", "litellm", "parley_openai", "parley_native"):
        s = sat[name]
        shared = ""
        if "shared_cpu_ms_per_turn_net_of_background" in s:
            net = s["shared_cpu_ms_per_turn_net_of_background"]
            shared = f" + rabbitmq {net['rabbitmq']} + redis {net['redis']} = {s['total_with_shared_cpu_ms_per_turn']}"
        parts = ", ".join(f"{n.removeprefix('parley:')} {s['cpu_ms_per_turn'][n]}" for n in s["side_processes"])
        print(
            f"  {name:14} {s['turns_per_s']:7.1f} turns/s {s['turns_per_s_by_round']} "
            f"(idle to idle {s['idle_to_idle_turns_per_s_by_round']}) errors {s['errors']}; "
            f"CPU ms/turn {s['side_cpu_ms_per_turn']} ({parts}){shared}"
        )
    print(
        f"  Parley (openai) / LiteLLM turns/s by round: {result['parley_openai_over_litellm_turns_per_s_by_round']}, "
        f"idle to idle {result['parley_openai_over_litellm_idle_to_idle_by_round']}"
    )
    print(f"  RabbitMQ/Redis background CPU ms/s: {sat['shared_background_cpu_ms_per_s']}")
    print("first token ms p50/p99 (added to direct):")
    for name, cells in result["first_token_ms"].items():
        row = []
        for c in TTFT_CONCURRENCY:
            cell = cells[str(c)]
            text = f"c={c}: {cell.get('p50')}/{cell.get('p99')}"
            if "added_p50" in cell:
                text += f" (+{cell['added_p50']}/+{cell['added_p99']})"
            row.append(text)
        print(f"  {name:14} " + "; ".join(row) + f"; failures {cells['failures']}")
    print("bytes on the wire per character of answer text:")
    for name, w in result["wire"].items():
        if isinstance(w, dict):
            print(f"  {name:20} {w['bytes_per_char']:6.2f} ({w['content_encoding']})")
