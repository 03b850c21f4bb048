"""What a process holds in memory, and how much the machine has left (Linux ``/proc``).

A Claude Code process maps ~200 MB, but much of it is the runtime's code,
shared by every CLI on the machine. What ending one gives back is its private
anonymous memory (``RssAnon``), so that is what ccgate counts against its
budgets. Elsewhere (no ``/proc``) nothing is known and the readers say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["MachineMemory", "SystemMemory", "machine_memory", "process_memory_mb"]

_MB = 1024.0


def _fields(path: Path) -> dict[str, float]:
    """Return the ``Name: value kB`` lines of a ``/proc`` file, in MB."""
    values: dict[str, float] = {}
    try:
        text = path.read_text()
    except OSError:
        return values
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            values[name] = int(parts[0]) / _MB
    return values


def process_memory_mb(pid: int) -> float | None:
    """Return what ending ``pid`` would give back (MB), or None when it is not known."""
    status = _fields(Path(f"/proc/{pid}/status"))
    if "RssAnon" in status:
        return status["RssAnon"]
    return status.get("VmRSS")


@dataclass(frozen=True, slots=True)
class MachineMemory:
    """The machine's memory (MB)."""

    total: float
    available: float


class SystemMemory:
    """Read the machine's memory; a seam so tests can make memory short."""

    def read(self) -> MachineMemory | None:
        """Return total and available memory, or None when they are not known."""
        return machine_memory()


def machine_memory() -> MachineMemory | None:
    """Return the machine's total and available memory (``/proc/meminfo``)."""
    info = _fields(Path("/proc/meminfo"))
    if "MemTotal" not in info or "MemAvailable" not in info:
        return None
    return MachineMemory(total=info["MemTotal"], available=info["MemAvailable"])
