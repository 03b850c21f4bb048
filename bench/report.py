"""Figures and how the benchmarks print them: percentiles, summaries, ratios, tables."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import sys
from collections.abc import Sequence

__all__ = [
    "Summary",
    "clip",
    "fmt_summary",
    "package_version",
    "percentile",
    "print_environment",
    "print_table",
    "ratio",
    "summary_ms",
    "usable_cpus",
]


def clip(text: str, limit: int = 200) -> str:
    """Return ``text`` on one line, shortened to ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def percentile(values: Sequence[float], pct: float) -> float:
    """Return the ``pct`` percentile by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


#: (median, p90, min) of a set of times, in milliseconds.
Summary = tuple[float, float, float]


def summary_ms(seconds: Sequence[float]) -> Summary | None:
    """Return (median, p90, min) of ``seconds`` in milliseconds, or None without values."""
    if not seconds:
        return None
    ms = [v * 1000.0 for v in seconds]
    return statistics.median(ms), percentile(ms, 90), min(ms)


def fmt_summary(stats: Summary | None, digits: int = 0) -> list[str]:
    """Format (median, p90, min) as three table cells (``-`` without values)."""
    return [f"{v:.{digits}f}" for v in stats] if stats else ["-", "-", "-"]


def ratio(a: float | None, b: float | None) -> str:
    """Format a / b as ``1.23x``, or ``-`` when either is missing (or b is 0)."""
    return f"{a / b:.2f}x" if a is not None and b else "-"


def print_table(head: list[str], rows: list[list[str]]) -> None:
    """Print a table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(head))
    print(line(["-" * w for w in widths]))
    for row in rows:
        print(line(row))


def package_version(name: str) -> str:
    """Return an installed distribution's version, or 'not installed'."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def usable_cpus() -> int:
    """Return how many CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 0


def print_environment(
    extra: Sequence[tuple[str, str]] = (), *, ccgate_version: str | None = None
) -> None:
    """Print what the numbers were measured on: the common lines, then ``extra`` (label, text).

    ``ccgate_version`` is the version a server said it runs (default: the installed one).
    """
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    rows = [
        ("ccgate", ccgate_version or package_version("ccgate")),
        ("claude-agent-sdk", package_version("claude-agent-sdk")),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("platform", f"{platform.platform()} ({platform.machine()})"),
        ("cpus", f"{os.cpu_count()} (usable by this process: {usable_cpus()})"),
        ("load average", load),
        *extra,
    ]
    print("environment")
    for label, text in rows:
        print(f"  {label + ':':<19}{text}")
    print()
