"""Which process owns a row, and whether that process still runs.

An owner is ``host/pid/start`` — the host name, the process id and the
process's start time in clock ticks since boot (``/proc/<pid>/stat``), so a
process id reused by another process, or by a restarted ccgate in a
container, is told apart from the one that wrote the row. On another host
nothing can be checked: its rows count as alive while it keeps their
``seen_at`` fresh.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

__all__ = ["owner_alive", "process_owner"]

_UNKNOWN = "?"


def _started(pid: int) -> str | None:
    """Return a process's start time as text, ``?`` if it runs but cannot be read, else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        stat = None
    if stat is not None:
        # The command name (field 2) may hold spaces and parentheses: count from its end.
        fields = stat.rpartition(")")[2].split()
        return fields[19] if len(fields) > 19 else _UNKNOWN
    if Path("/proc/self/stat").exists():
        return None  # /proc works here, and has no such process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it runs, as another user
    return _UNKNOWN


def process_owner(pid: int | None = None) -> str:
    """Return the owner name of a process (this one by default)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}/{pid}/{_started(pid) or _UNKNOWN}"


def owner_alive(owner: str) -> bool | None:
    """Tell whether ``owner`` still runs: None when it is on another host (or unreadable)."""
    parts = owner.rsplit("/", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    host, pid, started = parts[0], int(parts[1]), parts[2]
    if host != socket.gethostname():
        return None
    now = _started(pid)
    if now is None:
        return False
    return started == _UNKNOWN or now in (_UNKNOWN, started)
