"""The benchmarks run (``--quick``): a smoke test of each script, never of its figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cli

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _run(script: str, *args: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_fidelity_quick() -> None:
    out = _run("fidelity.py", "--quick")
    assert "added before" in out and "added after" in out
    assert "-- OK" in out  # no CLI process outlived the benchmark
