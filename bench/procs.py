"""What ``/proc`` says about the benchmark's processes, and the scan for any it left behind.

* :func:`cpu_seconds`, :func:`rss_kb`, :func:`pss_kb`, :func:`mem_available_mb`,
  :func:`mem_total_mb` -- figures of a process or the machine (Linux);
* :func:`bundled_cli`, :func:`cli_version` -- the Claude Code CLI shipped in claude-agent-sdk;
* :func:`leftover_processes`, :func:`check_leftovers` -- the final scan for any process whose
  ``CLAUDE_CONFIG_DIR`` lies under the benchmark's temporary directory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import time
from pathlib import Path

from bench.report import clip

__all__ = [
    "bundled_cli",
    "check_leftovers",
    "check_servers",
    "cli_version",
    "cpu_seconds",
    "leftover_processes",
    "mem_available_mb",
    "mem_total_mb",
    "proc_text",
    "pss_kb",
    "rss_kb",
    "servers_under",
]


def proc_text(path: str) -> str:
    """Return a (``/proc``) file's text, or "" when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _field_kb(text: str, name: str) -> int:
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def rss_kb(pid: int, name: str = "VmRSS") -> int:
    """Return a process's resident set (``VmRSS``; or ``RssAnon``...) in KiB, 0 when gone."""
    return _field_kb(proc_text(f"/proc/{pid}/status"), name)


def pss_kb(pid: int) -> int:
    """Return a process's proportional set size (``Pss``) in KiB, 0 when unreadable."""
    return _field_kb(proc_text(f"/proc/{pid}/smaps_rollup"), "Pss")


def cpu_seconds(pid: int, *, children: bool = False) -> float | None:
    """Return the user + system CPU time a process has used, in seconds (None when gone).

    ``children``: add the CPU time of its reaped children.
    """
    stat = proc_text(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # After the command: state ppid ... utime(11) stime(12) cutime(13) cstime(14).
    ticks = sum(int(f) for f in fields[11 : 15 if children else 13])
    return ticks / os.sysconf("SC_CLK_TCK")


def mem_available_mb() -> float:
    """Return ``MemAvailable`` of ``/proc/meminfo`` in MiB."""
    return _field_kb(proc_text("/proc/meminfo"), "MemAvailable") / 1024


def mem_total_mb() -> float:
    """Return ``MemTotal`` of ``/proc/meminfo`` in MiB."""
    return _field_kb(proc_text("/proc/meminfo"), "MemTotal") / 1024


def bundled_cli() -> Path | None:
    """Return the ``claude`` binary shipped inside the claude-agent-sdk wheel, if there is one."""
    spec = importlib.util.find_spec("claude_agent_sdk")
    if spec is None or spec.origin is None:
        return None
    cli = Path(spec.origin).parent / "_bundled" / "claude"
    return cli if cli.is_file() else None


def cli_version() -> str:
    """Return the version of the Claude Code CLI bundled with claude-agent-sdk."""
    cli = bundled_cli()
    if cli is None:
        return "unknown (no CLI bundled with claude-agent-sdk)"
    with contextlib.suppress(OSError):
        return (cli.parent / "claude.version").read_text().strip()
    try:
        out = subprocess.run(
            [str(cli), "--version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    return out.stdout.strip() or f"unknown (exit {out.returncode})"


def leftover_processes(roots: list[Path]) -> list[tuple[int, str]]:
    """Return processes whose CLAUDE_CONFIG_DIR lies under one of ``roots`` (pid, cmdline)."""
    prefixes = [str(r) for r in roots]
    found: list[tuple[int, str]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        for var in environ:
            if not var.startswith(b"CLAUDE_CONFIG_DIR="):
                continue
            value = var.split(b"=", 1)[1].decode(errors="replace")
            if any(value == p or value.startswith(p + os.sep) for p in prefixes):
                found.append((int(entry.name), clip(cmdline, 120)))
                break
    return found


def check_leftovers(roots: list[Path]) -> None:
    """Print whether any claude process of this benchmark survived; kill those that did."""
    deadline = time.monotonic() + 5.0
    found = leftover_processes(roots)
    while found and time.monotonic() < deadline:
        time.sleep(0.2)
        found = leftover_processes(roots)
    dirs = ", ".join(str(r) for r in roots)
    if not found:
        print(f"leftover check: no process with CLAUDE_CONFIG_DIR under {dirs} -- OK")
        return
    print(f"leftover check: {len(found)} process(es) with CLAUDE_CONFIG_DIR under {dirs}:")
    for pid, cmdline in found:
        print(f"  pid {pid}: {cmdline} -- sending SIGKILL")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def servers_under(
    root: Path, marker: str, variable: str = "CCGATE_DATA_DIR"
) -> list[tuple[int, str]]:
    """Return live processes with ``marker`` in their argv and ``variable`` under ``root``."""
    found: list[tuple[int, str]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() not in argv:
            continue
        for var in environ:
            if var.startswith(variable.encode() + b"="):
                value = var.split(b"=", 1)[1].decode(errors="replace")
                if value.startswith(str(root) + os.sep):
                    cmdline = b" ".join(argv).decode(errors="replace")
                    found.append((int(entry.name), clip(cmdline, 120)))
                break
    return found


def check_servers(root: Path, marker: str, grace: float = 10.0) -> None:
    """Print whether a server of this run (``servers_under``) is still alive; end any that is.

    A survivor gets SIGTERM, then SIGKILL after ``grace`` seconds.
    """
    found = servers_under(root, marker)
    if not found:
        print(f"leftover check: no {marker} process with its data dir under {root} -- OK")
        return
    print(f"leftover check: {len(found)} server process(es) of this run still alive:")
    for pid, cmdline in found:
        print(f"  pid {pid}: {cmdline} -- sending SIGTERM")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and servers_under(root, marker):
        time.sleep(0.2)
    for pid, _ in servers_under(root, marker):
        print(f"  pid {pid}: still alive after {grace:g} s -- sending SIGKILL")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
