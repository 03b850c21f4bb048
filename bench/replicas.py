"""Throughput across 1, 2 and 3 replicas behind HAProxy: what adding a replica adds.

Every replica is the real app on :class:`ccgate.testing.ScriptedRunner`
(``bench/instant_app.py``: turns that cost nothing, no Claude Code process), a
``python -m uvicorn --factory bench.instant_app:create`` subprocess with a data dir of its
own, all of them on one Postgres database made for the run (``ccgate_bench_replicas_<hex>``,
created at the start, its schema migrated by the replicas starting at once, dropped at the
end) and one Redis under a prefix made for the run (``ccgate-bench-<hex>:``, its keys deleted
at the end), each told its own ``replica_url``. Every replica runs with keys, quotas and the
ledger on: ``auth_mode=multi``, ``usage_ledger=true``, ``max_concurrent=256``,
``max_queue=10000``, ``cache_ttl=0`` (``bench/overhead.py``'s ``on`` configuration), and one
client key made for the run through ``POST /admin/keys`` (an admin key, random, set for the
run) with quota limits far out of reach: every request looks its key up, is admitted against
its quota (the shared counters in Redis), gets a ledger row in Postgres and charges its tokens
and cost to the quota.

One HAProxy process (``haproxy -db``) has a frontend per replica count N of ``--replicas``
(default 1,2,3), each balancing round robin (``option httpchk GET /health``, every 2 s) over
the first N replicas, so the configurations are

* ``direct`` -- the baseline: one replica of the same app straight, without HAProxy, Redis or
  Postgres (SQLite in its data dir, the default settings; its key made in its database);
* ``N=1``, ``N=2``, ``N=3`` -- the balancer's frontend over that many replicas.

For each concurrency level (``--concurrency``, default 10,50) and configuration, ``--warmup``
requests (at least one per connection) are followed by ``--requests`` (default 1000) counted
ones, sent by ``concurrency`` workers that pull from a shared counter through one
``AsyncClient`` with that many connections, in this process (``--client``: httpx2, the
default, or httpx). Each is a non-streamed ``POST /v1/chat/completions`` asking a different
question, which must come back 200 with its own answer, or it is counted as a failure and not
as a measurement. The configurations alternate so they see the same machine noise: each
level's requests are split into ``--rounds`` blocks (default 2), run in the order direct, N=1,
N=2, N=3, then the reverse, and so on (the first order flipping from level to level), each
configuration keeping its warm connections between its blocks.

Printed per level and configuration: p50 and p99 latency (ms), requests per second (answered
requests / wall time of its blocks) and its ratio to N=1 at the same concurrency (the
scaling; for ``direct``, what the balancer and the shared Postgres and Redis cost against
one replica on SQLite), and CPU time per request (``/proc``, 10 ms ticks) of the replicas of
the configuration (summed), of HAProxy, of the Postgres and Redis servers when they run on
this machine (all their work, whoever asked for it: the postmaster and its backends, those
that exited included), of the rest of the machine (``/proc/stat``'s busy time less all of
those: other processes, and the kernel's interrupt work such as loopback networking) and of
this process (the client), with "busy" (CPU time / wall time, 100% = one core) of the
replicas, the client and the whole machine. A client busy near 100% means the load
generator, not ccgate, set that level's figures; a large "rest" means something else on the
machine took cores from the run (its load average is printed at the start and the end);
a machine busy near all its cores means the replicas, HAProxy, Postgres, Redis and the client
fight over the same cores -- on 2 cores a second or third replica has no core of its own to
run on, so the scaling there says what the machine allows, not what ccgate does on separate
hosts. At the end HAProxy's counters say which replica answered how many requests per N
(N=1's also count the run's first ``GET /health`` and its ``POST /admin/keys``), the replicas
and HAProxy are stopped with SIGTERM, the ledger in Postgres is counted against the requests
sent through the balancer (one row per request, whichever replica served it; warm-ups
included) and the baseline's SQLite ledger against its own, the database is dropped and the
Redis keys deleted, and ``/proc`` is checked for a replica or HAProxy of this run still
alive. Timings are reported, never asserted.

Needs Postgres (``--postgres-url``, default ``$CCGATE_TEST_POSTGRES_URL`` or
postgresql://postgres@127.0.0.1:5432/test: a role that may create databases), Redis
(``--redis-url``, default ``$CCGATE_TEST_REDIS_URL`` or redis://127.0.0.1:6379/0) and
``haproxy`` (``scripts/install-lb``).

Usage (from the project root, with the project's venv)::

    python -m bench.replicas                          # N=1,2,3; 10,50 concurrent; 1000 each
    python -m bench.replicas --replicas 1,2 --concurrency 100 --requests 2000
    python -m bench.replicas --quick                  # N=1,2; 4 concurrent; 40: a smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import importlib
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.instant_app import APP, uvicorn_argv
from bench.overhead import (
    BENCH_QUOTA,
    CHAT,
    COMMON_ENV,
    CONFIG_ENV,
    KEEP_ALIVE,
    ON,
    Client,
    Row,
    _levels,
    blocks,
    call_chat,
    client_bound,
    figures,
    ledger_counts,
    run_batch,
    start_server,
)
from bench.procs import check_servers, cpu_seconds, proc_text
from bench.report import (
    clip,
    package_version,
    print_environment,
    print_table,
    ratio,
    usable_cpus,
)
from bench.serve import ServerProcess, base_env, free_port
from ccgate.store.database import async_url

DIRECT = "direct"
STOP_GRACE = 10.0
START_TIMEOUT = 60.0
#: The ledger table (``ccgate.store.tables.usage_records``): one row per request.
LEDGER = "usage_records"
QUICK_REPLICAS, QUICK_LEVELS, QUICK_REQUESTS = [1, 2], [4], 40
DEFAULT_POSTGRES = os.environ.get(
    "CCGATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
DEFAULT_REDIS = os.environ.get("CCGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

HAPROXY_CONFIG = """\
global
    maxconn 4096
    stats socket {socket} mode 600 level user

defaults
    mode http
    timeout connect 2s
    # Longer than any block of the run: a configuration's connections stay open while the
    # others run theirs (the replicas keep theirs as long, uvicorn --timeout-keep-alive).
    timeout client {keep_alive}s
    timeout http-keep-alive {keep_alive}s
    timeout server {timeout}s
    timeout check 2s
{sections}"""

HAPROXY_SECTION = """
frontend in_{n}
    bind 127.0.0.1:{port}
    default_backend n{n}

backend n{n}
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
    default-server check inter 2s fall 2 rise 2
{servers}
"""


def config_name(n: int) -> str:
    """Return the name of the configuration balancing over ``n`` replicas."""
    return f"N={n}"


# --------------------------------------------------------------------------- Postgres, Redis


def database_url(server_url: str, name: str) -> str:
    """Return ``server_url`` naming the database ``name`` instead of its own."""
    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


async def run_sql(url: str, statement: str, *, autocommit: bool = False) -> list[tuple[Any, ...]]:
    """Run one statement on the database at ``url``; return its rows (none for DDL)."""
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    engine = create_async_engine(async_url(url), **options)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text(statement))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        await engine.dispose()


def delete_redis_keys(url: str, prefix: str) -> int:
    """Delete every Redis key under ``prefix``; return how many there were."""
    deleted = 0
    with redis.Redis.from_url(url, socket_timeout=10) as client:
        names = list(client.scan_iter(match=prefix + "*", count=500))
        for start in range(0, len(names), 500):
            deleted += int(client.delete(*names[start : start + 500]))
    return deleted


def redis_version(url: str) -> str:
    """Return the Redis server's version (it must answer)."""
    with redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3) as client:
        info: dict[str, Any] = client.info("server")
    return str(info.get("redis_version", "unknown"))


# --------------------------------------------------------------------------- HAProxy


def haproxy_binary() -> str | None:
    """Return HAProxy's path: on PATH, or in an sbin directory a user's PATH may lack."""
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/local/sbin:/usr/sbin")


def haproxy_version(binary: str) -> str:
    """Return the first line of ``haproxy -v``."""
    done = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    return clip(done.stdout.splitlines()[0] if done.stdout else f"exit {done.returncode}", 80)


def stats_command(sock: Path, line: str) -> str:
    """Send one command to HAProxy's stats socket; return its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(5)
        conn.connect(str(sock))
        conn.sendall(line.encode() + b"\n")
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def server_stats(sock: Path) -> dict[str, list[dict[str, str]]]:
    """Return HAProxy's per-server counters (``show stat``), by backend (``n<N>``)."""
    rows = csv.DictReader(stats_command(sock, "show stat").lstrip("# ").splitlines())
    servers: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        if row["svname"] not in ("FRONTEND", "BACKEND"):
            servers.setdefault(row["pxname"], []).append(row)
    return servers


@dataclass
class Balancer:
    """The HAProxy subprocess: a frontend per replica count, over the first N replicas."""

    server: ServerProcess
    ports: dict[int, int]
    socket: Path

    def url(self, n: int) -> str:
        """Return the URL of the frontend over ``n`` replicas."""
        return f"http://127.0.0.1:{self.ports[n]}"

    def wait_all_up(self, within: float = 15.0) -> None:
        """Wait until HAProxy sees every server of every backend UP."""
        deadline = time.monotonic() + within
        states: dict[str, list[str]] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                states = {
                    backend: [row["status"] for row in rows]
                    for backend, rows in server_stats(self.socket).items()
                }
                if states and all(s == "UP" for each in states.values() for s in each):
                    return
            time.sleep(0.2)
        raise RuntimeError(f"haproxy does not see every replica up: {states}")


def start_balancer(
    binary: str, root: Path, counts: list[int], replica_ports: list[int], timeout: float
) -> Balancer:
    """Write HAProxy's configuration and start it (in the foreground, ``-db``)."""
    ports = {n: free_port() for n in counts}
    sections = "".join(
        HAPROXY_SECTION.format(
            n=n,
            port=ports[n],
            servers="\n".join(
                f"    server r{i} 127.0.0.1:{port}" for i, port in enumerate(replica_ports[:n])
            ),
        )
        for n in counts
    )
    sock = root / "haproxy.sock"
    config = root / "haproxy.cfg"
    config.write_text(
        HAPROXY_CONFIG.format(
            socket=sock, keep_alive=KEEP_ALIVE, timeout=int(timeout) + 5, sections=sections
        )
    )
    data_dir = root / "haproxy"
    data_dir.mkdir(mode=0o700)
    # CCGATE_DATA_DIR marks the process as this run's for the final check (check_servers).
    env = {**base_env(), "CCGATE_DATA_DIR": str(data_dir)}
    argv = [binary, "-db", "-f", str(config)]
    server = ServerProcess(
        argv, ports[counts[0]], data_dir, env, cwd=root, start_timeout=START_TIMEOUT
    )
    return Balancer(server, ports, sock)


# --------------------------------------------------------------------------- replicas


def start_replica(
    index: int, root: Path, shared: Mapping[str, str], log_level: str
) -> ServerProcess:
    """Start one replica on the shared database and Redis (without waiting for it)."""
    data_dir = root / f"replica-{index}"
    data_dir.mkdir(mode=0o700)
    port = free_port()
    env = {
        **base_env(),
        **COMMON_ENV,
        **CONFIG_ENV[ON],
        **shared,
        "CCGATE_DATA_DIR": str(data_dir),
        "CCGATE_PORT": str(port),
        "CCGATE_REPLICA_URL": f"http://127.0.0.1:{port}",
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
    return ServerProcess(
        argv,
        port,
        data_dir,
        env,
        cwd=root,
        start_timeout=START_TIMEOUT,
        stop_timeout=STOP_GRACE,
    )


def make_cluster_key(url: str, admin_key: str) -> str:
    """Make the run's client key through ``POST /admin/keys``; return the key."""
    body = {"name": "bench-replicas", "quota": BENCH_QUOTA.as_dict()}
    headers = {"authorization": f"Bearer {admin_key}"}
    with httpx.Client(trust_env=False, timeout=30) as client:
        response = client.post(f"{url}/admin/keys", json=body, headers=headers)
    if response.status_code != 201:
        raise RuntimeError(
            f"POST /admin/keys answered {response.status_code}: {clip(response.text, 300)}"
        )
    key: str = response.json()["key"]
    return key


# --------------------------------------------------------------------------- measurement


def machine_cpu_seconds() -> float:
    """Return the CPU time every core of the machine has been busy, in seconds (/proc/stat)."""
    fields = proc_text("/proc/stat").splitlines()[0].split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_of(pids: list[int]) -> float | None:
    """Return the CPU time of ``pids`` added up (None when one of them is gone)."""
    total = 0.0
    for pid in pids:
        seconds = cpu_seconds(pid)
        if seconds is None:
            return None
        total += seconds
    return total


def parent_of(pid: int) -> int | None:
    """Return a process's parent pid, or None when it is not there."""
    stat = proc_text(f"/proc/{pid}/stat")
    return int(stat.rsplit(")", 1)[1].split()[1]) if stat else None


def tree_cpu(pid: int) -> float | None:
    """Return the CPU time of a server process and all its children, the exited ones too.

    A child that exits between two readings is in its parent's reaped children's time
    (``cutime``/``cstime``) at the second, so the difference of two readings is exact.
    """
    total = cpu_seconds(pid, children=True)
    if total is None:
        return None
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and parent_of(int(entry.name)) == pid:
            total += cpu_seconds(int(entry.name)) or 0.0
    return total


def local_server(pid: int, name: str) -> int | None:
    """Return ``pid`` when it is a process of this machine whose command starts with ``name``."""
    return pid if proc_text(f"/proc/{pid}/comm").startswith(name) else None


def postgres_pid(url: str) -> int | None:
    """Return the pid of the Postgres server (the postmaster) when it runs on this machine."""

    async def postmaster() -> int | None:
        engine = create_async_engine(async_url(url))
        try:
            async with engine.connect() as conn:
                backend = int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())
                # While the connection is open: its backend process exits with it.
                parent = parent_of(backend) if local_server(backend, "postgres") else None
                return local_server(parent, "postgres") if parent is not None else None
        finally:
            await engine.dispose()

    with contextlib.suppress(Exception):
        return asyncio.run(postmaster())
    return None


def redis_pid(url: str) -> int | None:
    """Return the pid of the Redis server when it runs on this machine."""
    with contextlib.suppress(redis.RedisError, ValueError):
        with redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3) as client:
            info: dict[str, Any] = client.info("server")
        return local_server(int(info["process_id"]), "redis")
    return None


#: What a meter reads: CPU seconds used so far, or None when it cannot tell.
Meter = Callable[[], float | None]
#: What every meter read at one moment, by name.
Readings = Mapping[str, float | None]
#: The meters besides the replicas' and the client's, in the order of the table's columns.
LB, PG, REDIS, MACHINE = "lb", "pg", "redis", "machine"


@dataclass
class Target:
    """A configuration: where its requests go, its key, the processes that serve them."""

    name: str
    url: str
    key: str
    server_pids: list[int]
    #: CPU meters of this configuration besides its replicas' (lb, pg, redis, machine).
    meters: dict[str, Meter]


@dataclass
class Cell:
    """One configuration at one level: its blocks added up (``row``), and the other meters."""

    row: Row
    cpu: dict[str, float | None] = field(default_factory=dict)

    def add_cpu(
        self, before: Mapping[str, float | None], after: Mapping[str, float | None]
    ) -> None:
        """Add one block's CPU time of each meter (None once a reading failed)."""
        for name, was in before.items():
            now = after[name]
            spent = now - was if now is not None and was is not None else None
            total = self.cpu.get(name, 0.0)
            self.cpu[name] = None if spent is None or total is None else total + spent


@dataclass
class Results:
    """Every cell, the turn requests each configuration was sent, and the final checks."""

    cells: list[Cell] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)
    #: HAProxy's per-server counters at the end of the run, by backend.
    balancer: dict[str, list[dict[str, str]]] | str = field(default_factory=dict)
    #: The Postgres ledger's rows by status, or why it could not be read.
    ledger: dict[str, int] | str = field(default_factory=dict)
    #: The baseline's SQLite (ledger rows, requests counted, sessions), or why not.
    direct_ledger: tuple[int, int, int] | str = ""


def meters(database: str, redis_url: str) -> dict[str, Meter]:
    """Return the meters every configuration reads: Postgres, Redis (when they run on this
    machine: all of each server, whoever uses it) and the whole machine."""
    found: dict[str, Meter] = {}
    pg, rd = postgres_pid(database), redis_pid(redis_url)
    if pg is not None:
        found[PG] = lambda: tree_cpu(pg)
    if rd is not None:
        found[REDIS] = lambda: cpu_seconds(rd)
    found[MACHINE] = machine_cpu_seconds
    return found


def read_meters(meters: Mapping[str, Meter]) -> dict[str, float | None]:
    """Read every meter now."""
    return {name: meter() for name, meter in meters.items()}


async def measure(targets: list[Target], args: argparse.Namespace, results: Results) -> None:
    """Per level: warm every configuration up, then alternate their blocks."""
    lib = importlib.import_module(args.client)
    for index, concurrency in enumerate(args.concurrency):
        order = targets if index % 2 == 0 else targets[::-1]
        cells = {t.name: Cell(Row(CHAT, concurrency, t.name)) for t in order}
        warm = max(args.warmup, concurrency)
        async with contextlib.AsyncExitStack() as stack:
            clients: dict[str, Client] = {}
            for target in order:
                clients[target.name] = await stack.enter_async_context(
                    lib.AsyncClient(
                        base_url=target.url,
                        headers={"authorization": f"Bearer {target.key}"},
                        limits=lib.Limits(
                            max_connections=concurrency,
                            max_keepalive_connections=concurrency,
                            keepalive_expiry=KEEP_ALIVE,
                        ),
                        timeout=lib.Timeout(args.timeout),
                        trust_env=False,
                    )
                )
            for target in order:
                tag = f"warm-up {target.name} x{concurrency}"
                warmed = await run_batch(clients[target.name], call_chat, warm, concurrency, tag)
                if warmed.failures:
                    print(f"  {tag}: {len(warmed.failures)} failed; first: {warmed.failures[0]}")
            for number, size in enumerate(blocks(args.requests, args.rounds)):
                for target in order if number % 2 == 0 else order[::-1]:
                    tag = f"{target.name} x{concurrency} round {number}"
                    before = read_meters(target.meters)
                    servers, client = cpu_of(target.server_pids), time.process_time()
                    batch = await run_batch(clients[target.name], call_chat, size, concurrency, tag)
                    servers_after, client_after = cpu_of(target.server_pids), time.process_time()
                    after = read_meters(target.meters)
                    spent = (
                        servers_after - servers
                        if servers_after is not None and servers is not None
                        else None
                    )
                    cells[target.name].row.add(batch, spent, client_after - client)
                    cells[target.name].add_cpu(before, after)
        for target in order:
            cell = cells[target.name]
            results.cells.append(cell)
            results.sent[target.name] = results.sent.get(target.name, 0) + warm + args.requests
            ok, failed = len(cell.row.batch.latencies), len(cell.row.batch.failures)
            rps = ok / cell.row.batch.wall if cell.row.batch.wall else 0.0
            print(
                f"  [{index + 1}/{len(args.concurrency)}] {concurrency} concurrent, "
                f"{target.name}: {ok} ok, {failed} failed, {rps:.0f} req/s",
                flush=True,
            )


# --------------------------------------------------------------------------- the run


def benchmark(args: argparse.Namespace, root: Path) -> Results:
    """Make the database, start the servers and the balancer, measure, stop, check, clean up."""
    binary = haproxy_binary()
    if binary is None:
        raise RuntimeError("haproxy is not installed (scripts/install-lb installs it)")
    try:
        redis_text = redis_version(args.redis_url)
    except redis.RedisError as exc:
        raise RuntimeError(f"Redis does not answer at {args.redis_url}: {exc}") from None
    token = secrets.token_hex(6)
    database = f"ccgate_bench_replicas_{token}"
    prefix = f"ccgate-bench-{token}:"
    url = database_url(args.postgres_url, database)
    results = Results()
    with contextlib.ExitStack() as cleanup:
        try:
            asyncio.run(
                run_sql(args.postgres_url, f'CREATE DATABASE "{database}"', autocommit=True)
            )
            version = asyncio.run(run_sql(url, "SHOW server_version"))[0][0]
        except Exception as exc:  # any failure to reach or use Postgres
            raise RuntimeError(
                f"cannot create a database on {args.postgres_url}: {type(exc).__name__}: "
                f"{clip(str(exc), 300)}"
            ) from None
        cleanup.callback(forget, args, database, prefix)
        admin_key = secrets.token_urlsafe(32)
        shared = {
            "CCGATE_DATABASE_URL": url,
            "CCGATE_REDIS_URL": args.redis_url,
            "CCGATE_REDIS_PREFIX": prefix,
            "CCGATE_ADMIN_KEY": admin_key,
            "CCGATE_ACCOUNTS_KEY": secrets.token_urlsafe(32),
        }
        servers: dict[str, ServerProcess] = {}
        try:
            direct, direct_key = start_server(ON, root, args.log_level)
            servers[DIRECT] = direct
            # All at once: their migrations meet on the fresh database, as in a rollout.
            replicas = [
                start_replica(i, root, shared, args.log_level) for i in range(max(args.replicas))
            ]
            servers.update({f"replica r{i}": r for i, r in enumerate(replicas)})
            started = time.monotonic()
            with httpx.Client(trust_env=False) as client:
                health = direct.wait_healthy(client)
                for replica in replicas:
                    replica.wait_healthy(client)
                took = time.monotonic() - started
                balancer = start_balancer(
                    binary, root, args.replicas, [r.port for r in replicas], args.timeout
                )
                servers["haproxy"] = balancer.server
                balancer.server.wait_healthy(client)
            balancer.wait_all_up()
            cluster_key = make_cluster_key(balancer.url(args.replicas[0]), admin_key)
            print(f"direct  : {direct.url} (pid {direct.proc.pid}, SQLite in its data dir)")
            for i, replica in enumerate(replicas):
                print(f"replica r{i}: {replica.url} (pid {replica.proc.pid})")
            frontends = ", ".join(f"{config_name(n)} {balancer.url(n)}" for n in args.replicas)
            print(f"haproxy : pid {balancer.server.proc.pid}; {frontends}")
            print(f"replicas healthy {took:.1f} s after their start (concurrent migrations)")
            print()
            print_plan(health, args, binary, str(version), redis_text, database, prefix)
            shared_meters = meters(url, args.redis_url)
            lb_pid = balancer.server.proc.pid
            targets = [
                Target(DIRECT, direct.url, direct_key or "", [direct.proc.pid], shared_meters)
            ]
            targets += [
                Target(
                    config_name(n),
                    balancer.url(n),
                    cluster_key,
                    [r.proc.pid for r in replicas[:n]],
                    {LB: lambda: cpu_seconds(lb_pid), **shared_meters},
                )
                for n in args.replicas
            ]
            begun = time.monotonic()
            asyncio.run(measure(targets, args, results))
            print(f"measured in {time.monotonic() - begun:.1f} s")
            try:
                results.balancer = server_stats(balancer.socket)
            except OSError as exc:
                results.balancer = f"could not read haproxy's counters: {exc}"
        finally:
            # The balancer first: nothing reaches a replica while it drains.
            for name in ["haproxy", *[n for n in servers if n != "haproxy"]]:
                if name in servers:
                    said = servers[name].stop()
                    code = servers[name].proc.returncode
                    if name == "haproxy" and code in (0, -signal.SIGTERM):
                        said = f"SIGTERM -> exited (code {code})"  # it stops at once
                    print(f"{name} stop: {said}")
        results.ledger = read_ledger(url)
        if DIRECT in servers:
            try:
                results.direct_ledger = ledger_counts(servers[DIRECT].data_dir)
            except sqlite3.Error as exc:
                results.direct_ledger = f"could not read the database: {exc}"
    return results


def read_ledger(url: str) -> dict[str, int] | str:
    """Return the Postgres ledger's rows by status, or why it could not be read."""
    sql = f"SELECT status, count(*) FROM {LEDGER} GROUP BY status ORDER BY status"
    try:
        return {str(status): int(n) for status, n in asyncio.run(run_sql(url, sql))}
    except Exception as exc:  # report it, do not hide the run's figures
        return f"could not read {LEDGER}: {type(exc).__name__}: {clip(str(exc), 200)}"


def forget(args: argparse.Namespace, database: str, prefix: str) -> None:
    """Drop the run's database and delete its Redis keys; say how it went."""
    drop = f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'
    try:
        asyncio.run(run_sql(args.postgres_url, drop, autocommit=True))
        print(f"database {database} dropped")
    except Exception as exc:  # say so; the run's figures stand
        print(f"could not drop database {database}: {clip(str(exc), 200)}")
    try:
        deleted = delete_redis_keys(args.redis_url, prefix)
        print(f"redis: {deleted} keys under {prefix} deleted")
    except redis.RedisError as exc:
        print(f"could not delete the Redis keys under {prefix}: {exc}")


# --------------------------------------------------------------------------- report


def print_plan(
    health: dict[str, Any],
    args: argparse.Namespace,
    binary: str,
    postgres: str,
    redis_text: str,
    database: str,
    prefix: str,
) -> None:
    """Print what the numbers were measured on, and the plan."""
    packages = ", ".join(
        f"{name} {package_version(name)}"
        for name in ("fastapi", "uvicorn", "sqlalchemy", "asyncpg", "aiosqlite", "redis")
    )
    plan = (
        f"replicas {','.join(map(str, args.replicas))} behind haproxy and direct; concurrency "
        f"{','.join(map(str, args.concurrency))}; {args.requests} counted requests per level "
        f"and configuration in {args.rounds} alternating block(s), after "
        f"max({args.warmup}, concurrency) warm-up requests"
    )
    cores = usable_cpus()
    print_environment(
        [
            ("packages", packages),
            ("haproxy", f"{haproxy_version(binary)} ({binary})"),
            ("postgres", f"{postgres}, database {database} (made for the run)"),
            ("redis", f"{redis_text}, prefix {prefix} (made for the run)"),
            ("plan", plan),
            ("load generator", f"{args.client} {package_version(args.client)}, in this process"),
            ("server log level", args.log_level),
            (
                "note",
                f"the replicas, haproxy, Postgres, Redis and the client share {cores} "
                "CPU(s): once they fill them, another replica adds no throughput",
            ),
        ],
        ccgate_version=health.get("version"),
    )


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _per_request(seconds: float | None, n: int) -> float | None:
    return seconds * 1000.0 / n if seconds is not None and n else None


def rest_cpu(cell: Cell) -> float | None:
    """Return the machine's CPU time outside the replicas, HAProxy, Postgres, Redis and the
    client: whatever else ran on the machine meanwhile."""
    parts = [cell.cpu.get(MACHINE), cell.row.server_cpu, cell.cpu.get(PG), cell.cpu.get(REDIS)]
    machine, servers, pg, rd = parts
    if machine is None or servers is None or pg is None or rd is None:
        return None
    return machine - servers - pg - rd - (cell.cpu.get(LB) or 0.0) - cell.row.client_cpu


def busy(cell: Cell) -> float | None:
    """Return the whole machine's busy time / wall time of a cell (100% = one core)."""
    machine, wall = cell.cpu.get(MACHINE), cell.row.batch.wall
    return machine / wall if machine is not None and wall else None


def print_figures(results: Results) -> None:
    """Print one line per level and configuration: latency, throughput, scaling and CPU."""
    rps_of = {(c.row.concurrency, c.row.config): figures(c.row).rps for c in results.cells}
    table: list[list[str]] = []
    for cell in results.cells:
        row, f = cell.row, figures(cell.row)
        n = len(row.batch.latencies) + len(row.batch.failures)
        table.append(
            [
                str(row.concurrency),
                row.config,
                str(len(row.batch.latencies)),
                str(len(row.batch.failures)),
                _num(f.p50),
                _num(f.p99),
                f"{f.rps:.0f}",
                ratio(f.rps, rps_of.get((row.concurrency, config_name(1)))),
                _num(f.server_cpu_ms),
                _pct(f.server_busy),
                *(_num(_per_request(cell.cpu.get(name), n)) for name in (LB, PG, REDIS)),
                _num(_per_request(rest_cpu(cell), n)),
                _num(f.client_cpu_ms),
                _pct(f.client_busy),
                _pct(busy(cell)),
            ]
        )
    print(
        "latency in ms; req/s = answered requests / wall time of the blocks; vs N=1 = req/s "
        "against N=1 at the same concurrency; CPU in ms per request of: the configuration's "
        "replicas (srv, summed), haproxy (lb), the Postgres and Redis servers (all their "
        "work, whoever asked), anything else on the machine (rest) and this process (cli); "
        "busy = CPU time / wall time (100% = one core), machine = all the cores"
    )
    head = ["conc", "config", "ok", "fail", "p50", "p99", "req/s", "vs N=1", "srv CPU"]
    cpu = ["srv busy", "lb CPU", "pg CPU", "redis CPU", "rest CPU", "cli CPU", "cli busy"]
    print_table([*head, *cpu, "machine"], table)
    cores = usable_cpus()
    bound = [f"{c.row.config} x{c.row.concurrency}" for c in results.cells if client_bound(c.row)]
    if bound:
        print(
            f"note: in {', '.join(bound)} the client was busy 80% or more, or spent as much CPU "
            "per request as the replicas: there the load generator, not ccgate, limits the "
            "figures (try --client httpx2)"
        )
    full = [
        f"{c.row.config} x{c.row.concurrency}"
        for c in results.cells
        if (b := busy(c)) is not None and b >= 0.9 * cores
    ]
    if full:
        where = "every row" if len(full) == len(results.cells) else ", ".join(full)
        print(
            f"note: in {where} the machine was busy 90% or more of its {cores} "
            "CPU(s): the processes fought for the cores, so more replicas could not run more "
            "at once; the scaling says what this machine allows"
        )


def print_checks(results: Results) -> None:
    """Print the failures, what HAProxy counted, and the ledgers against what was sent."""
    for cell in results.cells:
        failures = cell.row.batch.failures
        if failures:
            print(
                f"{cell.row.config}, {cell.row.concurrency} concurrent: {len(failures)} failed; "
                f"first: {failures[0]}"
            )
    if isinstance(results.balancer, str):
        print(results.balancer)
    else:
        for backend, servers in sorted(results.balancer.items()):
            answered = ", ".join(f"{s['svname']} {s['hrsp_2xx'] or 0}" for s in servers)
            other = sum(
                int(s[k] or 0)
                for s in servers
                for k in ("hrsp_1xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other")
            )
            states = ",".join(s["status"] for s in servers)
            downs = sum(int(s["chkdown"] or 0) for s in servers)
            print(
                f"haproxy {config_name(int(backend[1:]))}: 2xx answers by replica {answered}; "
                f"{other} other answers; states {states}; {downs} times a replica went down"
            )
    balanced = sum(n for name, n in results.sent.items() if name != DIRECT)
    if isinstance(results.ledger, str):
        print(f"postgres ledger: {results.ledger}")
    else:
        rows = sum(results.ledger.values())
        statuses = ", ".join(f"{n} {status}" for status, n in results.ledger.items()) or "none"
        verdict = "OK" if rows == balanced else "MISMATCH"
        print(
            f"postgres ledger ({LEDGER}): {rows} rows ({statuses}) for {balanced} turn requests "
            f"sent through haproxy, warm-ups included -- {verdict}"
        )
    sent = results.sent.get(DIRECT, 0)
    if isinstance(results.direct_ledger, tuple):
        rows, counted, sessions = results.direct_ledger
        verdict = "OK" if rows == sent else "MISMATCH"
        print(
            f"direct SQLite ledger: {rows} rows, {counted} requests counted against a quota, "
            f"{sessions} sessions for {sent} turn requests sent -- {verdict}"
        )
    elif results.direct_ledger:
        print(f"direct SQLite ledger: {results.direct_ledger}")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse and check the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.replicas",
        description="Throughput of 1, 2, 3 replicas behind HAProxy on one Postgres and Redis.",
    )
    parser.add_argument(
        "--replicas",
        type=_levels,
        default=[1, 2, 3],
        help="comma-separated replica counts behind the balancer (default 1,2,3)",
    )
    parser.add_argument(
        "--concurrency",
        type=_levels,
        default=[10, 50],
        help="comma-separated concurrency levels (default 10,50)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=1000,
        help="counted requests per level and configuration (default 1000)",
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
        "block by block (default 2)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test: replicas 1,2, concurrency 4, 40 requests each",
    )
    parser.add_argument(
        "--client",
        choices=["httpx", "httpx2"],
        default="httpx2",
        help="the load generator's HTTP client library (default httpx2)",
    )
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES,
        help="a Postgres server (any database on it) where the run may create and drop its "
        f"own database (default $CCGATE_TEST_POSTGRES_URL or {DEFAULT_POSTGRES})",
    )
    parser.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS,
        help=f"the Redis the replicas share (default $CCGATE_TEST_REDIS_URL or {DEFAULT_REDIS})",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="warning",
        help="the servers' log level (default warning)",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="per-request timeout in seconds (default 60)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.replicas, args.concurrency = QUICK_REPLICAS, QUICK_LEVELS
        args.requests, args.warmup = QUICK_REQUESTS, 1
    args.replicas = sorted(set(args.replicas))
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
    counts = ", ".join(map(str, args.replicas))
    print(f"ccgate replicas: throughput of {counts} replicas behind haproxy (an instant runner)")
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="ccgate-bench-replicas-")).resolve()
    results: Results | None = None
    try:
        try:
            results = benchmark(args, root)
        except RuntimeError as exc:
            print(f"replicas: benchmark could not run: {exc}", file=sys.stderr)
        check_servers(root, APP, STOP_GRACE)
        binary = haproxy_binary()
        if binary is not None:
            check_servers(root, binary, STOP_GRACE)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if results is None:
        return 1
    print()
    print_figures(results)
    print()
    print_checks(results)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average at the end: {load}")
    print(f"total time {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
