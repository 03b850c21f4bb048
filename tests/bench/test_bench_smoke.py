"""Every benchmark runs (``python -m bench.<name> --quick``): a smoke test of each script.

Each script must exit 0 and print its figure lines (what they say is never asserted);
those that scan ``/proc`` for processes they left must report none.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from redis import RedisError

REPO_ROOT = Path(__file__).resolve().parents[2]
#: What a script prints when its final ``/proc`` scan found nothing left behind.
NOTHING_LEFT = "-- OK"


def run_quick(name: str, timeout: float = 240) -> str:
    """Run ``python -m bench.<name> --quick`` from the repository's root; return its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--quick"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def lines_with(out: str, text: str) -> list[str]:
    """Return the lines of ``out`` that contain ``text``."""
    return [line for line in out.splitlines() if text in line]


@pytest.mark.server
def test_overhead() -> None:
    out = run_quick("overhead")
    # the figures table: endpoint, concurrency, config, ok, fail, p50, p99, req/s, ...
    rows = {tuple(line.split()[:3]) for line in out.splitlines() if line.startswith("chat ")}
    for level in ("1", "10", "100"):
        for config in ("on", "off"):
            assert ("chat", level, config) in rows, f"no chat row, {level} concurrent, {config}"
    assert lines_with(out, "p50 ratio") and lines_with(out, "req/s ratio")
    assert lines_with(out, "ledger rows")
    assert lines_with(out, "leftover check") == lines_with(out, NOTHING_LEFT)


@pytest.mark.cli
def test_ttft() -> None:
    out = run_quick("ttft")
    assert lines_with(out, "TTFT med")
    assert lines_with(out, "(r) pure relay")  # the relay's row in the table
    assert len(lines_with(out, "median TTFT")) == 6  # the ratios b/a, c/a, d/a, b/r, c/r, d/r
    assert lines_with(out, "relay stop")
    assert lines_with(out, NOTHING_LEFT)


@pytest.mark.cli
def test_startup() -> None:
    out = run_quick("startup")
    assert lines_with(out, "connect med") and lines_with(out, "baseline ")
    assert lines_with(out, "VmRSS MiB")
    assert lines_with(out, NOTHING_LEFT)


@pytest.mark.cli
def test_loops() -> None:
    out = run_quick("loops")
    assert lines_with(out, "1. latency of a turn")
    assert lines_with(out, "most loops active at once")
    assert lines_with(out, NOTHING_LEFT)


@pytest.mark.cli
def test_continuation() -> None:
    out = run_quick("continuation")
    assert lines_with(out, "ratio off/on of upstream text chars")
    assert lines_with(out, "median latency")
    assert lines_with(out, NOTHING_LEFT)


@pytest.mark.cli
def test_tools() -> None:
    out = run_quick("tools")
    assert lines_with(out, "results -> final answer")
    assert lines_with(out, "rebuilt / live")
    assert lines_with(out, NOTHING_LEFT)


@pytest.mark.cli
def test_fidelity() -> None:
    out = run_quick("fidelity")
    assert lines_with(out, "added before") and lines_with(out, "added after")
    assert lines_with(out, NOTHING_LEFT)


@pytest.mark.cli  # the instant runner answers, but loop turns start the real CLI
def test_fuzz() -> None:
    out = run_quick("fuzz")
    assert lines_with(out, "requests in")
    assert lines_with(out, "5xx or dropped")
    assert lines_with(out, NOTHING_LEFT)


@pytest.mark.server
def test_console() -> None:
    out = run_quick("console")
    assert len(lines_with(out, "within")) + len(lines_with(out, "OVER")) == 5  # five pages
    assert len(lines_with(out, "kept up")) + len(lines_with(out, "dropped")) == 4
    assert lines_with(out, "feed lag") and lines_with(out, "server memory")
    assert lines_with(out, "leftover check") == lines_with(out, NOTHING_LEFT)


@pytest.mark.server
@pytest.mark.postgres
def test_replicas() -> None:
    from bench.replicas import DEFAULT_POSTGRES, DEFAULT_REDIS, haproxy_binary, redis_version

    if haproxy_binary() is None:
        pytest.skip("haproxy is not installed (scripts/install-lb installs it)")
    parts = urlsplit(DEFAULT_POSTGRES)
    try:
        socket.create_connection((parts.hostname or "", parts.port or 5432), 2).close()
        redis_version(DEFAULT_REDIS)
    except (OSError, RedisError) as exc:
        pytest.skip(f"Postgres or Redis not reachable: {exc}")
    out = run_quick("replicas")
    # the figures table: concurrency, config, ok, fail, p50, p99, req/s, vs N=1, ...
    rows = {tuple(line.split()[:2]) for line in out.splitlines() if line.startswith("4 ")}
    assert rows == {("4", "direct"), ("4", "N=1"), ("4", "N=2")}, rows
    assert lines_with(out, "vs N=1") and lines_with(out, "srv CPU")
    assert len(lines_with(out, "2xx answers by replica")) == 2  # haproxy's N=1 and N=2
    assert lines_with(out, "postgres ledger") and lines_with(out, "direct SQLite ledger")
    assert lines_with(out, "dropped")
    leftovers = lines_with(out, "leftover check")  # the replicas', then haproxy's
    assert len(leftovers) == 2 and all(NOTHING_LEFT in line for line in leftovers), leftovers
