"""ccgate's own cost per request: latency and throughput with a runner that answers instantly.

The Claude Code CLI is replaced by :class:`ccgate.testing.ScriptedRunner` (served by
``bench/instant_app.py``), which yields a turn's events at once, so everything measured
is what ccgate does around a turn: HTTP (uvicorn, h11), JSON parsing and validation,
auth, quota admission, session bookkeeping, the gate, accounting, the usage ledger and
rendering. Two configurations of the same app run side by side, each as its own
``python -m uvicorn --factory bench.instant_app:create`` subprocess with a fresh
temporary data dir (SQLite):

* ``on``  -- ``auth_mode=multi`` with one client key made for the run (quota limits set
  far out of reach) and the usage ledger on: every request looks its key up, is
  admitted against its quota (a database transaction), gets a ledger row and charges
  its tokens and cost to the quota;
* ``off`` -- ``auth_mode=none`` and ``usage_ledger=false``: no key, no quota counting,
  no ledger.

Both run with ``max_concurrent=256``, ``max_queue=10000`` and ``cache_ttl=0``. Both
still record each new conversation's session in the database, as any request does.

For each concurrency level (``--concurrency``, default 1,10,100) and configuration,
``--warmup`` requests (at least one per connection) are followed by ``--requests``
counted ones, sent by ``concurrency`` workers that pull from a shared counter through
one ``AsyncClient`` with that many connections, in this process (``--client``: httpx2,
the default, or httpx). The requests are non-streamed ``POST /v1/chat/completions``
(with ``--messages``, also streamed ``POST /v1/messages``, read to its end); each asks
a different question and must come back 200 with its own answer, or it is counted as
a failure and not as a measurement. The configurations alternate so they see the same
machine noise: each level's requests are split into ``--rounds`` blocks (default 2)
run on, off, off, on, ... (the first configuration flips from level to level), each
configuration keeping its warm connections between its blocks. ``GET /health`` at
concurrency 1 is timed too: the floor of a round trip through uvicorn and the client
with no turn in it.

Printed per endpoint, level and configuration: p50 and p99 latency (ms), requests per
second (answered requests / wall time of its blocks), and CPU time per request and
"busy" (CPU time / wall time, 100% = one core) of the server (``/proc/<pid>/stat``,
10 ms ticks) and of this process (the client); then the on/off ratios of p50 and of
throughput, the p50 difference and the server CPU difference per request (what auth,
quota and ledger add). A client busy near 100% means the load generator, not ccgate,
set that level's figures (httpx's connection pool costs several ms of CPU per request
at 100 connections; httpx2 does not). At the end the data dirs are read back to
confirm what each configuration did (ledger rows, requests counted against a quota),
the servers are stopped with SIGTERM and ``/proc`` is checked for a server of this
run still alive. Timings are reported, never asserted.

Usage (from the project root, with the project's venv)::

    python -m bench.overhead                          # 1,10,100 concurrent, 400 requests each
    python -m bench.overhead --concurrency 1,10 --requests 1000
    python -m bench.overhead --messages --client httpx
    python -m bench.overhead --quick                  # tiny counts: a smoke test only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import itertools
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.instant_app import APP, reply_for, uvicorn_argv
from bench.procs import check_servers, cpu_seconds
from bench.report import clip, package_version, percentile, print_environment, print_table, ratio
from bench.serve import ServerProcess, base_env, free_port
from ccgate.access.keys import KeyManager
from ccgate.config import load_settings
from ccgate.store.database import Database
from ccgate.store.keys import Quota, SqlKeyStore

ON, OFF = "on", "off"
CHAT = "chat"
MESSAGES = "messages"
HEALTH = "health"
ENDPOINTS = {
    CHAT: "POST /v1/chat/completions",
    MESSAGES: "POST /v1/messages, streamed",
    HEALTH: "GET /health (the floor)",
}
MODEL = "sonnet"
STOP_GRACE = 10.0
QUICK_LEVELS = [1, 10, 100]
#: Seconds an idle connection stays open on both sides: longer than any block of the run, so
#: a configuration's connections survive while the other one runs its block.
KEEP_ALIVE = 300

#: Limits no run of this benchmark comes near: every request is admitted and counted.
BENCH_QUOTA = Quota(
    requests_per_minute=10_000_000,
    requests_per_day=10_000_000,
    tokens_per_day=10**12,
    budget_usd_per_month=10**9,
    max_concurrent=10_000_000,
)
COMMON_ENV = {
    "CCGATE_HOST": "127.0.0.1",
    "CCGATE_MAX_CONCURRENT": "256",
    "CCGATE_MAX_QUEUE": "10000",
    "CCGATE_CACHE_TTL": "0",
}
CONFIG_ENV = {
    ON: {"CCGATE_AUTH_MODE": "multi", "CCGATE_USAGE_LEDGER": "true"},
    OFF: {"CCGATE_AUTH_MODE": "none", "CCGATE_USAGE_LEDGER": "false"},
}

#: An ``httpx.AsyncClient`` or an ``httpx2.AsyncClient`` (``--client``): the same API.
Client = Any
Call = Callable[[Client, str], Awaitable[str | None]]


# --------------------------------------------------------------------------- requests


async def call_chat(client: Client, prompt: str) -> str | None:
    """Send one non-streamed chat completion; return why it failed, or None."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}]}
    response = await client.post("/v1/chat/completions", json=body)
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {clip(response.text, 160)}"
    try:
        text = response.json()["choices"][0]["message"]["content"]
    except (ValueError, LookupError, TypeError):
        return f"unexpected body: {clip(response.text, 160)}"
    return None if text == reply_for(prompt) else f"wrong answer {clip(str(text), 80)!r}"


async def call_messages(client: Client, prompt: str) -> str | None:
    """Send one streamed Messages request and read it to its end; return why it failed."""
    body = {
        "model": MODEL,
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": prompt}],
    }
    pieces: list[str] = []
    stopped = False
    async with client.stream("POST", "/v1/messages", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            return f"HTTP {response.status_code}: {clip(response.text, 160)}"
        # Read to the end of the body, so the connection goes back to the pool.
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            kind = event.get("type")
            if kind == "content_block_delta" and event["delta"].get("type") == "text_delta":
                pieces.append(event["delta"]["text"])
            elif kind == "message_stop":
                stopped = True
            elif kind == "error":
                return f"in-band error: {clip(json.dumps(event), 160)}"
    if not stopped:
        return "the stream ended without message_stop"
    text = "".join(pieces)
    return None if text == reply_for(prompt) else f"wrong answer {clip(text, 80)!r}"


async def call_health(client: Client, prompt: str) -> str | None:
    """Send ``GET /health``; return why it failed, or None."""
    response = await client.get("/health")
    if response.status_code != 200 or response.json().get("status") != "ok":
        return f"HTTP {response.status_code}: {clip(response.text, 160)}"
    return None


CALLS: dict[str, Call] = {CHAT: call_chat, MESSAGES: call_messages, HEALTH: call_health}


@dataclass
class Batch:
    """What one batch of requests gave: latencies of the good ones, failures, wall time."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    wall: float = 0.0


async def run_batch(client: Client, call: Call, n: int, concurrency: int, tag: str) -> Batch:
    """Send ``n`` requests from ``concurrency`` workers sharing one counter; time each."""
    batch = Batch()
    counter = itertools.count()

    async def worker() -> None:
        while (i := next(counter)) < n:
            prompt = f"{tag} #{i}: how long does this take?"
            started = time.perf_counter()
            try:
                error = await call(client, prompt)
            except Exception as exc:  # any failure of the request is a failed request
                error = f"{type(exc).__name__}: {clip(str(exc), 160)}"
            elapsed = time.perf_counter() - started
            if error is None:
                batch.latencies.append(elapsed)
            else:
                batch.failures.append(error)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    batch.wall = time.perf_counter() - started
    return batch


# --------------------------------------------------------------------------- servers


async def make_key(data_dir: Path) -> str:
    """Create the data dir's database and one client key with ``BENCH_QUOTA``; return the key."""
    settings = load_settings({"data_dir": data_dir, "auth_mode": "multi"}, {})
    database = Database(settings.effective_database_url)
    try:
        await database.migrate()
        made = await KeyManager(SqlKeyStore(database)).create("bench-overhead", quota=BENCH_QUOTA)
    finally:
        await database.close()
    return made.key


def start_server(config: str, root: Path, log_level: str) -> tuple[ServerProcess, str | None]:
    """Start one configuration's server (its key made first); return it and its client key."""
    data_dir = root / config
    data_dir.mkdir(mode=0o700)
    key = asyncio.run(make_key(data_dir)) if config == ON else None
    port = free_port()
    env = {
        **base_env(),
        **COMMON_ENV,
        **CONFIG_ENV[config],
        "CCGATE_DATA_DIR": str(data_dir),
        "CCGATE_LOG_LEVEL": log_level,
    }
    argv = uvicorn_argv(
        port,
        log_level,
        "--timeout-graceful-shutdown",
        "5",
        "--timeout-keep-alive",
        str(KEEP_ALIVE),
    )
    server = ServerProcess(argv, port, data_dir, env, cwd=root, stop_timeout=STOP_GRACE)
    return server, key


def ledger_counts(data_dir: Path) -> tuple[int, int, int]:
    """Return (ledger rows, requests counted in the quota's day windows, sessions) of a data dir."""
    with contextlib.closing(sqlite3.connect(data_dir / "ccgate.db")) as db:
        rows = db.execute("SELECT count(*) FROM usage_records").fetchone()[0]
        counted = db.execute(
            "SELECT coalesce(sum(requests), 0) FROM quota_counters WHERE \"window\" = 'day'"
        ).fetchone()[0]
        sessions = db.execute("SELECT count(*) FROM sessions").fetchone()[0]
    return int(rows), int(counted), int(sessions)


# --------------------------------------------------------------------------- measurement


@dataclass
class Row:
    """One configuration at one level of one endpoint: its blocks added up."""

    endpoint: str
    concurrency: int
    config: str
    batch: Batch = field(default_factory=Batch)
    server_cpu: float | None = 0.0
    client_cpu: float = 0.0

    def add(self, batch: Batch, server_cpu: float | None, client_cpu: float) -> None:
        """Add one block's requests, wall time and CPU times."""
        self.batch.latencies += batch.latencies
        self.batch.failures += batch.failures
        self.batch.wall += batch.wall
        if self.server_cpu is None or server_cpu is None:
            self.server_cpu = None
        else:
            self.server_cpu += server_cpu
        self.client_cpu += client_cpu


@dataclass
class Results:
    """Every row, the turn requests each server was sent, and what its data dir recorded."""

    rows: list[Row] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=lambda: {ON: 0, OFF: 0})
    recorded: dict[str, tuple[int, int, int] | str] = field(default_factory=dict)


#: One level of the plan: an endpoint, a concurrency and the order of the configurations.
Level = tuple[str, int, tuple[str, str]]


def make_plan(levels: list[int], endpoints: list[str]) -> list[Level]:
    """Return the levels in order: the floor, then each concurrency, the order flipping."""
    plan: list[Level] = [(HEALTH, 1, (ON, OFF))]
    for index, concurrency in enumerate(levels):
        order = (ON, OFF) if index % 2 == 0 else (OFF, ON)
        plan += [(endpoint, concurrency, order) for endpoint in endpoints]
    return plan


def blocks(requests: int, rounds: int) -> list[int]:
    """Split ``requests`` into ``rounds`` blocks as even as possible, none of them empty."""
    rounds = max(1, min(rounds, requests))
    return [requests // rounds + (1 if i < requests % rounds else 0) for i in range(rounds)]


async def measure(
    servers: dict[str, ServerProcess],
    keys: dict[str, str | None],
    plan: list[Level],
    args: argparse.Namespace,
    results: Results,
) -> None:
    """Run the plan: per level, warm both configurations up, then alternate their blocks."""
    lib = importlib.import_module(args.client)
    for step, (endpoint, concurrency, order) in enumerate(plan, 1):
        call = CALLS[endpoint]
        rows = {config: Row(endpoint, concurrency, config) for config in order}
        warm = max(args.warmup, concurrency)
        async with contextlib.AsyncExitStack() as stack:
            clients: dict[str, Client] = {}
            for config in order:
                key = keys[config]
                clients[config] = await stack.enter_async_context(
                    lib.AsyncClient(
                        base_url=servers[config].url,
                        headers={"authorization": f"Bearer {key}"} if key else {},
                        limits=lib.Limits(
                            max_connections=concurrency,
                            max_keepalive_connections=concurrency,
                            keepalive_expiry=KEEP_ALIVE,
                        ),
                        timeout=lib.Timeout(args.timeout),
                        trust_env=False,
                    )
                )
            for config in order:
                tag = f"warm-up {config} x{concurrency} {endpoint}"
                warmed = await run_batch(clients[config], call, warm, concurrency, tag)
                if warmed.failures:
                    print(f"  {tag}: {len(warmed.failures)} failed; first: {warmed.failures[0]}")
            for number, size in enumerate(blocks(args.requests, args.rounds)):
                for config in order if number % 2 == 0 else order[::-1]:
                    pid = servers[config].proc.pid
                    tag = f"{config} x{concurrency} {endpoint} round {number}"
                    cpu_before, client_before = cpu_seconds(pid), time.process_time()
                    batch = await run_batch(clients[config], call, size, concurrency, tag)
                    cpu_after, client_after = cpu_seconds(pid), time.process_time()
                    server_cpu = (
                        cpu_after - cpu_before
                        if cpu_before is not None and cpu_after is not None
                        else None
                    )
                    rows[config].add(batch, server_cpu, client_after - client_before)
        for config in order:
            row = rows[config]
            results.rows.append(row)
            if endpoint != HEALTH:
                results.sent[config] += warm + args.requests
            rps = len(row.batch.latencies) / row.batch.wall if row.batch.wall else 0.0
            print(
                f"  [{step}/{len(plan)}] {ENDPOINTS[endpoint]}, {concurrency} concurrent, "
                f"{config}: {len(row.batch.latencies)} ok, {len(row.batch.failures)} failed, "
                f"{rps:.0f} req/s",
                flush=True,
            )


def benchmark(args: argparse.Namespace, root: Path) -> Results:
    """Start both servers, run the plan, stop them and read their data dirs back."""
    servers: dict[str, ServerProcess] = {}
    keys: dict[str, str | None] = {}
    results = Results()
    try:
        for config in (ON, OFF):
            servers[config], keys[config] = start_server(config, root, args.log_level)
        health: dict[str, Any] = {}
        with httpx.Client(trust_env=False) as client:
            for config, server in servers.items():
                health = server.wait_healthy(client)
                pid = server.proc.pid
                print(f"{config:<3} server: {server.url} (pid {pid}, {config_text(config)})")
        print()
        print_plan(health, args)
        endpoints = [CHAT, MESSAGES] if args.messages else [CHAT]
        plan = make_plan(args.concurrency, endpoints)
        started = time.monotonic()
        asyncio.run(measure(servers, keys, plan, args, results))
        print(f"measured in {time.monotonic() - started:.1f} s")
    finally:
        for config, server in servers.items():
            print(f"{config} server stop: {server.stop()}")
    for config, server in servers.items():
        try:
            results.recorded[config] = ledger_counts(server.data_dir)
        except sqlite3.Error as exc:
            results.recorded[config] = f"could not read the database: {exc}"
    return results


# --------------------------------------------------------------------------- report


def config_text(config: str) -> str:
    """Describe a configuration in one line."""
    env = CONFIG_ENV[config]
    extra = ", one key with quota limits out of reach" if config == ON else ""
    return f"auth_mode={env['CCGATE_AUTH_MODE']}, usage_ledger={env['CCGATE_USAGE_LEDGER']}{extra}"


@dataclass(frozen=True)
class Figures:
    """A row's figures: latency (ms), throughput, and CPU per request (ms) and per second."""

    p50: float | None
    p99: float | None
    rps: float
    server_cpu_ms: float | None
    server_busy: float | None
    client_cpu_ms: float
    client_busy: float


def figures(row: Row) -> Figures:
    """Compute a row's figures (latencies of answered requests only)."""
    ms = [v * 1000.0 for v in row.batch.latencies]
    n = len(row.batch.latencies) + len(row.batch.failures)
    wall = row.batch.wall
    server = row.server_cpu
    return Figures(
        p50=percentile(ms, 50) if ms else None,
        p99=percentile(ms, 99) if ms else None,
        rps=len(ms) / wall if wall else 0.0,
        server_cpu_ms=server * 1000.0 / n if server is not None and n else None,
        server_busy=server / wall if server is not None and wall else None,
        client_cpu_ms=row.client_cpu * 1000.0 / n if n else 0.0,
        client_busy=row.client_cpu / wall if wall else 0.0,
    )


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def print_figures(results: Results) -> None:
    """Print one line per batch: latency, throughput and where the CPU went."""
    table: list[list[str]] = []
    for row in results.rows:
        f = figures(row)
        table.append(
            [
                row.endpoint,
                str(row.concurrency),
                row.config,
                str(len(row.batch.latencies)),
                str(len(row.batch.failures)),
                _num(f.p50),
                _num(f.p99),
                f"{f.rps:.0f}",
                _num(f.server_cpu_ms),
                _pct(f.server_busy),
                _num(f.client_cpu_ms),
                _pct(f.client_busy),
            ]
        )
    print(
        "latency in ms; req/s = answered requests / wall time of the blocks; "
        "CPU ms per request and busy = CPU time / wall time (100% = one core)"
    )
    print(", ".join(f"{name} = {what}" for name, what in ENDPOINTS.items()))
    head = ["endpoint", "conc", "config", "ok", "fail", "p50", "p99", "req/s"]
    print_table([*head, "srv CPU", "srv busy", "cli CPU", "cli busy"], table)
    bound = sorted(
        {
            f"{r.endpoint} x{r.concurrency}"
            for r in results.rows
            if r.endpoint != HEALTH and client_bound(r)
        }
    )
    if bound:
        print(
            f"note: in {', '.join(bound)} the client was busy 80% or more, or spent as much CPU "
            "per request as the server: there the load generator, not ccgate, limits the figures "
            "(try --client httpx2)"
        )


def client_bound(row: Row) -> bool:
    """Tell whether the load generator rather than the server limited a row."""
    f = figures(row)
    heavy = f.server_cpu_ms is not None and f.client_cpu_ms >= f.server_cpu_ms
    return f.client_busy >= 0.8 or heavy


def print_comparison(results: Results) -> None:
    """Print on against off for each endpoint and level."""
    by_key = {(r.endpoint, r.concurrency, r.config): r for r in results.rows}
    comparison: list[list[str]] = []
    for endpoint, concurrency, config in [
        (r.endpoint, r.concurrency, r.config) for r in results.rows
    ]:
        if endpoint == HEALTH or config != ON or (endpoint, concurrency, OFF) not in by_key:
            continue
        on = figures(by_key[(endpoint, concurrency, ON)])
        off = figures(by_key[(endpoint, concurrency, OFF)])
        diff = on.p50 - off.p50 if on.p50 is not None and off.p50 is not None else None
        cpu = (
            on.server_cpu_ms - off.server_cpu_ms
            if on.server_cpu_ms is not None and off.server_cpu_ms is not None
            else None
        )
        comparison.append(
            [
                endpoint,
                str(concurrency),
                ratio(on.p50, off.p50),
                "-" if diff is None else f"{diff:+.2f}",
                ratio(on.rps, off.rps),
                "-" if cpu is None else f"{cpu:+.2f}",
            ]
        )
    print("on / off: what auth + quota + ledger add (p50 diff and srv CPU diff in ms per request)")
    print_table(
        ["endpoint", "conc", "p50 ratio", "p50 diff", "req/s ratio", "srv CPU diff"], comparison
    )


def print_checks(results: Results) -> None:
    """Print the failures and what each data dir recorded."""
    for row in results.rows:
        if row.batch.failures:
            print(
                f"{ENDPOINTS[row.endpoint]}, {row.concurrency} concurrent, {row.config}: "
                f"{len(row.batch.failures)} failed; first: {row.batch.failures[0]}"
            )
    for config in (ON, OFF):
        recorded = results.recorded.get(config)
        sent = results.sent[config]
        if isinstance(recorded, tuple):
            rows, counted, sessions = recorded
            print(
                f"{config} data dir: {rows} ledger rows, {counted} requests counted against a "
                f"quota, {sessions} sessions ({sent} turn requests sent, warm-ups included)"
            )
        else:
            print(f"{config} data dir: {recorded}")


def print_plan(health: dict[str, Any], args: argparse.Namespace) -> None:
    """Print what the numbers were measured on, and the plan."""
    packages = ", ".join(
        f"{name} {package_version(name)}"
        for name in ("fastapi", "starlette", "uvicorn", "sqlalchemy", "aiosqlite", "pydantic")
    )
    plan = (
        f"concurrency {','.join(map(str, args.concurrency))}; {args.requests} counted requests "
        f"per level and configuration in {args.rounds} alternating block(s), after "
        f"max({args.warmup}, concurrency) warm-up requests"
    )
    print_environment(
        [
            ("packages", packages),
            ("plan", plan),
            ("load generator", f"{args.client} {package_version(args.client)}, in this process"),
            ("server log level", args.log_level),
        ],
        ccgate_version=health.get("version"),
    )


# --------------------------------------------------------------------------- main


def _levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of whole numbers: {text!r}") from None
    if not levels or any(level < 1 for level in levels):
        raise argparse.ArgumentTypeError("concurrency levels must be 1 or more")
    return levels


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse and check the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.overhead",
        description="ccgate's own latency and throughput per request, auth+quota+ledger on/off.",
    )
    parser.add_argument(
        "--concurrency",
        type=_levels,
        default=[1, 10, 100],
        help="comma-separated concurrency levels (default 1,10,100)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=400,
        help="counted requests per level and configuration (default 400)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=50,
        help="warm-up requests per level and configuration, at least one per connection "
        "(default 50)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="blocks each level's requests are split into, the configurations alternating "
        "block by block (on, off, off, on, ...; default 2)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test: concurrency 1,10,100, 20 requests each, --messages on",
    )
    parser.add_argument(
        "--messages", action="store_true", help="also time streamed POST /v1/messages"
    )
    parser.add_argument(
        "--client",
        choices=["httpx", "httpx2"],
        default="httpx2",
        help="the load generator's HTTP client library (default httpx2, installed with ccgate "
        "through mcp; httpx spends so much CPU per request at 100 connections that it, not "
        "ccgate, limits the figures there)",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="warning",
        help="the servers' log level (default warning; info writes log lines per request)",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="per-request timeout in seconds (default 60)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.concurrency, args.requests, args.warmup, args.messages = QUICK_LEVELS, 20, 1, True
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its report; return the exit code."""
    args = parse_args(argv)
    print("ccgate overhead: an instant runner, auth + quota + ledger on versus off")
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="ccgate-bench-overhead-")).resolve()
    results: Results | None = None
    try:
        try:
            results = benchmark(args, root)
        except RuntimeError as exc:
            print(f"overhead: benchmark could not run: {exc}", file=sys.stderr)
        check_servers(root, APP, STOP_GRACE)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if results is None:
        return 1
    print()
    print_figures(results)
    print()
    print_comparison(results)
    print()
    print_checks(results)
    print(f"total time {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
