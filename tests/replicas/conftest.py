"""A real cluster: three ``ccgate serve`` replicas on one Postgres and one Redis, behind HAProxy.

The ``cluster`` fixture (one per test module) starts the replicas at the same time on a fresh
database (so their migrations race, as in a real rollout), each with its own port and data
dir, all pointed at the session's scripted model; then HAProxy, round-robin with health
checks, on a free port. It is skipped when Postgres (``CCGATE_TEST_POSTGRES_URL``), Redis
(``CCGATE_TEST_REDIS_URL``) or ``haproxy`` (``scripts/install-lb``) is missing.

Each cluster has a database of its own (``ccgate_replicas_<random>``, dropped afterwards) and
a Redis prefix of its own (``ccgate-test-<random>:``, its keys deleted afterwards), so
clusters never meet each other or other test runs. The replicas' and HAProxy's output is kept
in log files (``Replica.log``, ``Cluster.balancer_log``); a failed start prints their tails.

Test modules that use it carry ``pytestmark = [pytest.mark.cli, pytest.mark.postgres]``; one
may override the module-scoped ``cluster_settings`` fixture to add ``CCGATE_*`` variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import redis
from anthropic import Anthropic
from openai import OpenAI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from ccgate.demo import DemoServer
from tests.gateway_testing import wait_for_no_processes, wait_until

POSTGRES_URL = os.environ.get(
    "CCGATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("CCGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

_Client = TypeVar("_Client", OpenAI, Anthropic)

#: Replicas in a cluster.
REPLICAS = 3
#: How long a replica (or the balancer) may take to answer ``/health`` after its start.
START_WITHIN = 60.0
#: How long a replica may drain after SIGTERM before it is killed.
STOP_WITHIN = 15.0
#: Lines of a log shown when something fails.
TAIL = 40

HAPROXY_TEMPLATE = """\
global
    maxconn 512
    log stdout format raw local0 info
    stats socket {socket} mode 600 level admin

defaults
    mode http
    log global
    option httplog
    option forwardfor
    timeout connect 2s
    timeout client 10m
    timeout server 10m
    timeout tunnel 1h
    timeout check 2s

frontend ccgate_in
    bind 127.0.0.1:{port}
    default_backend ccgate

backend ccgate
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
    option redispatch
    retries 2
    retry-on conn-failure empty-response
    default-server check inter 500ms fall 2 rise 2
{servers}
"""


# --- what is there -------------------------------------------------------------------------


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "", parts.port or default_port), 2):
            return True
    except OSError:
        return False


def _redis_answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def _skip_unless_available() -> None:
    if not _reachable(POSTGRES_URL, 5432):
        pytest.skip(f"Postgres not reachable at {POSTGRES_URL} (set CCGATE_TEST_POSTGRES_URL)")
    if not _redis_answers(REDIS_URL):
        pytest.skip(f"Redis not reachable at {REDIS_URL} (set CCGATE_TEST_REDIS_URL)")
    if haproxy_binary() is None:
        pytest.skip("haproxy is not installed (scripts/install-lb installs it)")


def haproxy_binary() -> str | None:
    """Return HAProxy's path: on PATH, or in an sbin directory a user's PATH may lack."""
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/local/sbin:/usr/sbin")


def free_port() -> int:
    """Return a port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = TAIL) -> str:
    """Return the last ``lines`` lines of a log file (or say it is missing)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"({path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def answers_health(url: str) -> bool:
    """Tell whether ``url``/health answers 200 now."""
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# --- the database and Redis ----------------------------------------------------------------


def _database_url(name: str) -> str:
    parts = urlsplit(POSTGRES_URL)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


def _asyncpg(url: str) -> str:
    return "postgresql+asyncpg://" + url.split("://", 1)[1]


async def _admin_sql(statement: str) -> None:
    """Run a statement outside a transaction (CREATE/DROP DATABASE) on the server's db."""
    engine = create_async_engine(_asyncpg(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def _fetch(url: str, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    engine = create_async_engine(_asyncpg(url))
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text(sql), dict(params))
            return [dict(row) for row in result.mappings()]
    finally:
        await engine.dispose()


def _delete_redis_keys(url: str, prefix: str) -> int:
    deleted = 0
    with redis.Redis.from_url(url, socket_timeout=10) as client:
        batch: list[bytes] = []
        for name in client.scan_iter(match=prefix + "*", count=500):
            batch.append(name)
            if len(batch) >= 500:
                deleted += int(client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(client.delete(*batch))
    return deleted


# --- replicas and the balancer -------------------------------------------------------------


@dataclass
class Replica:
    """One ``ccgate serve`` subprocess: its port, data dir and log survive restarts."""

    index: int
    port: int
    data_dir: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        """Return the replica's own URL (bypassing the balancer)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        """Return the file the replica's stdout and stderr go to (appended at each start)."""
        return self.data_dir / "replica.log"

    @property
    def name(self) -> str:
        """Return the replica's server name in the balancer."""
        return f"r{self.index}"

    def start(self) -> None:
        """Start ``ccgate serve`` (without waiting for it)."""
        assert not self.alive(), f"replica {self.index} is already running"
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts} at {time.strftime('%H:%M:%S')} ---\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ccgate", "serve"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def alive(self) -> bool:
        """Tell whether the replica's process is running."""
        return self.proc is not None and self.proc.poll() is None

    def health(self) -> dict[str, Any]:
        """Return the replica's own ``/health`` body."""
        response = httpx.get(self.url + "/health", timeout=10)
        body: dict[str, Any] = response.json()
        return body

    def kill(self) -> None:
        """SIGKILL the replica and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self, within: float = STOP_WITHIN) -> int | None:
        """SIGTERM the replica, SIGKILL it after ``within`` seconds; return its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=within)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.returncode

    def tail(self, lines: int = TAIL) -> str:
        """Return the end of the replica's log."""
        return tail(self.log, lines)


def wait_for_replicas(replicas: list[Replica], within: float = START_WITHIN) -> dict[int, float]:
    """Wait until every replica answers ``/health`` 200; return the seconds each took.

    Waits for each to be up or gone, then fails naming every replica that exited or did not
    answer in time, with the logs' tails.
    """
    started = time.monotonic()
    up: dict[int, float] = {}
    gone: dict[int, int | None] = {}
    while True:
        for replica in replicas:
            if replica.index in up or replica.index in gone:
                continue
            if answers_health(replica.url):
                up[replica.index] = time.monotonic() - started
            elif not replica.alive():
                gone[replica.index] = replica.proc.returncode if replica.proc else None
        pending = [r for r in replicas if r.index not in up and r.index not in gone]
        if not pending or time.monotonic() - started > within:
            break
        time.sleep(0.2)
    if not pending and not gone:
        return up
    fates = [f"replica {i} exited with code {code}" for i, code in sorted(gone.items())]
    fates += [f"replica {r.index} did not answer /health within {within:.0f} s" for r in pending]
    fates += [f"replica {i} answered /health after {s:.1f} s" for i, s in sorted(up.items())]
    together = len(replicas) > 1
    pytest.fail(
        ("replicas started at once on a fresh database" if together else "a replica restarted")
        + ": "
        + "; ".join(fates)
        + "\n"
        + _logs(replicas),
        pytrace=False,
    )


def _logs(replicas: list[Replica]) -> str:
    return "\n".join(
        f"--- replica {r.index} (port {r.port}, {'running' if r.alive() else 'exited'}), "
        f"{r.log}:\n{r.tail()}"
        for r in replicas
    )


@dataclass
class Balancer:
    """HAProxy in front of the replicas."""

    port: int
    config: Path
    log: Path
    socket: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Return the balancer's URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start ``haproxy -db`` (foreground); wait until it serves ``/health`` and its health
        checks have confirmed every replica (a server starts as ``UP 1/2``, then ``UP``)."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [haproxy_binary() or "haproxy", "-f", str(self.config), "-db"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_WITHIN
        while not answers_health(self.url):
            if self.proc.poll() is not None:
                pytest.fail(
                    f"haproxy exited with code {self.proc.returncode}:\n{tail(self.log)}",
                    pytrace=False,
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"haproxy did not serve /health within {START_WITHIN:.0f} s:\n{tail(self.log)}",
                    pytrace=False,
                )
            time.sleep(0.1)
        if not wait_until(lambda: set(self.server_states().values()) == {"UP"}, within=15):
            pytest.fail(
                f"haproxy does not see every replica up: {self.server_states()}\n{tail(self.log)}",
                pytrace=False,
            )

    def command(self, line: str) -> str:
        """Send one command to HAProxy's admin socket; return its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_states(self) -> dict[str, str]:
        """Return each replica's state as HAProxy sees it (``UP``, ``DOWN``, ...)."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(text.splitlines())
        return {
            row["svname"]: row["status"]
            for row in rows
            if row["pxname"] == "ccgate" and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def stop(self) -> None:
        """SIGTERM HAProxy (it stops at once), SIGKILL it when it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=STOP_WITHIN)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)


@dataclass
class Cluster:
    """Three replicas, one database, one Redis prefix, one balancer; ``url`` is the balancer."""

    replicas: list[Replica]
    balancer: Balancer
    admin_key: str
    database_url: str
    redis_url: str
    prefix: str
    #: What each ``create_key`` answered (id, key, quota, ...), by the key's name.
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Seconds from the replicas' concurrent start until all answered /health.
    start_seconds: float = 0.0
    _clients: list[OpenAI | Anthropic] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Return the balancer's URL: where clients go."""
        return self.balancer.url

    @property
    def balancer_log(self) -> Path:
        """Return HAProxy's log (one line per request, naming the replica that served it)."""
        return self.balancer.log

    def kill(self, i: int) -> None:
        """SIGKILL replica ``i`` and reap it."""
        self.replicas[i].kill()

    def stop(self, i: int) -> int | None:
        """SIGTERM replica ``i`` (SIGKILL after 15 s); return its exit code."""
        return self.replicas[i].stop()

    def start(self, i: int) -> None:
        """Start replica ``i`` again (same port, data dir and settings); wait for /health."""
        self.replicas[i].start()
        wait_for_replicas([self.replicas[i]])

    def logs(self) -> str:
        """Return the tails of every replica's log and HAProxy's."""
        return _logs(self.replicas) + f"\n--- haproxy:\n{tail(self.balancer.log)}"

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Call the admin API through the balancer with the admin key."""
        headers = {"authorization": f"Bearer {self.admin_key}", **kwargs.pop("headers", {})}
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def create_key(self, name: str, **quota: Any) -> str:
        """Make a client key (``POST /admin/keys``) with ``quota``; return the raw key."""
        body: dict[str, Any] = {"name": name}
        if quota:
            body["quota"] = quota
        response = self.admin("POST", "/admin/keys", json=body)
        assert response.status_code == 201, response.text
        made: dict[str, Any] = response.json()
        self.keys[name] = made
        key: str = made["key"]
        return key

    def openai(self, key: str, timeout: float = 60) -> OpenAI:
        """Return the official OpenAI client pointed at the balancer (no retries)."""
        return self._keep(
            OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=timeout)
        )

    def anthropic(self, key: str, timeout: float = 60) -> Anthropic:
        """Return the official Anthropic client pointed at the balancer (no retries)."""
        return self._keep(Anthropic(base_url=self.url, api_key=key, max_retries=0, timeout=timeout))

    def replica_openai(self, i: int, key: str, timeout: float = 60) -> OpenAI:
        """Return the official OpenAI client pointed at replica ``i`` itself."""
        url = self.replicas[i].url + "/v1"
        return self._keep(OpenAI(base_url=url, api_key=key, max_retries=0, timeout=timeout))

    def query(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        """Run ``sql`` (``:name`` parameters) on the cluster's database from a sync test;
        return the rows."""
        return asyncio.run(_fetch(self.database_url, sql, params))

    def redis_keys(self) -> list[str]:
        """Return the names of the cluster's Redis keys (those under its prefix), sorted."""
        with redis.Redis.from_url(self.redis_url, socket_timeout=10) as client:
            names = client.scan_iter(match=self.prefix + "*", count=500)
            return sorted(n.decode() if isinstance(n, bytes) else str(n) for n in names)

    def _keep(self, client: _Client) -> _Client:
        self._clients.append(client)
        return client

    def close_clients(self) -> None:
        """Close every client the cluster handed out."""
        for client in self._clients:
            client.close()
        self._clients.clear()


def _replica_env(
    index: int, port: int, data_dir: Path, common: Mapping[str, str]
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCGATE_")}
    env.update(common)
    env.update(
        {
            "CCGATE_HOST": "127.0.0.1",
            "CCGATE_PORT": str(port),
            "CCGATE_DATA_DIR": str(data_dir),
            "CCGATE_REPLICA_URL": f"http://127.0.0.1:{port}",
            # Each replica stands for a machine of its own: its own Claude Code login file.
            "CLAUDE_CONFIG_DIR": str(data_dir / "claude"),
        }
    )
    return env


def _haproxy_config(balancer: Balancer, replicas: list[Replica]) -> str:
    servers = "\n".join(f"    server {r.name} 127.0.0.1:{r.port}" for r in replicas)
    return HAPROXY_TEMPLATE.format(port=balancer.port, socket=balancer.socket, servers=servers)


def _described(pid: int) -> str:
    """Return a process's parent and command line, for a failure message."""
    try:
        parent = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1]
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:300]
    except OSError:
        return f"{pid} (gone)"
    return f"{pid} (parent {parent}): {command.decode(errors='replace')}"


def _no_cli_left(replicas: list[Replica]) -> None:
    left: dict[int, list[str]] = {}
    for replica in replicas:
        pids = wait_for_no_processes(replica.data_dir)
        described = [_described(pid) for pid in pids]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if pids:
            left[replica.index] = described
    assert not left, f"CLI processes outlived their replicas (replica: pids): {left}"


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_settings() -> dict[str, str]:
    """Extra ``CCGATE_*`` variables for every replica of the module's cluster (none)."""
    return {}


@pytest.fixture(scope="module")
def cluster(
    demo: DemoServer,
    cli_models_cache: Path,
    tmp_path_factory: pytest.TempPathFactory,
    cluster_settings: dict[str, str],
) -> Iterator[Cluster]:
    """Start three replicas at once on a fresh database, and HAProxy; stop all afterwards."""
    _skip_unless_available()
    token = secrets.token_hex(6)
    database = f"ccgate_replicas_{token}"
    prefix = f"ccgate-test-{token}:"
    root = tmp_path_factory.mktemp("replicas")
    with contextlib.ExitStack() as stack:
        # Unwound in reverse: the balancer, the replicas (and their CLIs), the database, Redis.
        stack.callback(_delete_redis_keys, REDIS_URL, prefix)
        asyncio.run(_admin_sql(f'CREATE DATABASE "{database}"'))
        stack.callback(
            lambda: asyncio.run(_admin_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        )
        admin_key = secrets.token_urlsafe(32)
        common = {
            "CCGATE_UPSTREAM_URL": demo.url,
            "CCGATE_UPSTREAM_API_KEY": "demo-upstream-key",
            "CCGATE_UPSTREAM_RETRIES": "0",
            "CCGATE_AUTH_MODE": "multi",
            "CCGATE_ADMIN_KEY": admin_key,
            "CCGATE_ACCOUNTS_KEY": secrets.token_urlsafe(32),
            "CCGATE_DATABASE_URL": _database_url(database),
            "CCGATE_REDIS_URL": REDIS_URL,
            "CCGATE_REDIS_PREFIX": prefix,
            "CCGATE_LOG_LEVEL": "info",
            **cluster_settings,
        }
        replicas: list[Replica] = []
        for index in range(REPLICAS):
            data_dir = root / f"replica-{index}"
            (data_dir / "cache").mkdir(parents=True)
            shutil.copy(cli_models_cache, data_dir / "cache" / "cli-models.json")
            port = free_port()
            env = _replica_env(index, port, data_dir, common)
            replicas.append(Replica(index=index, port=port, data_dir=data_dir, env=env))
        stack.callback(_no_cli_left, replicas)
        for replica in replicas:
            stack.callback(replica.stop)
        # All at once: their migrations meet on the fresh database.
        started = time.monotonic()
        for replica in replicas:
            replica.start()
        took = wait_for_replicas(replicas)
        start_seconds = time.monotonic() - started
        balancer = Balancer(
            port=free_port(),
            config=root / "haproxy.cfg",
            log=root / "haproxy.log",
            socket=root / "haproxy.sock",
        )
        balancer.config.write_text(_haproxy_config(balancer, replicas))
        stack.callback(balancer.stop)
        balancer.start()
        made = Cluster(
            replicas=replicas,
            balancer=balancer,
            admin_key=admin_key,
            database_url=_database_url(database),
            redis_url=REDIS_URL,
            prefix=prefix,
            start_seconds=start_seconds,
        )
        stack.callback(made.close_clients)
        each = ", ".join(f"{took[i]:.1f} s" for i in sorted(took))
        print(f"\ncluster: {REPLICAS} replicas up after {start_seconds:.1f} s ({each})")
        yield made


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Add the cluster's log tails to the report of a failed test that used it."""
    report: pytest.TestReport = yield
    made = getattr(item, "funcargs", {}).get("cluster")
    if report.failed and call.when == "call" and isinstance(made, Cluster):
        report.sections.append(("cluster logs", made.logs()))
    return report
