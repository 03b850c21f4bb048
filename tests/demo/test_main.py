"""``python -m ccgate.demo`` serves standalone and prints its URL.

Every wait here is bounded but generous, and ends as soon as what it waits for
happens: on a loaded machine a Python process can take many seconds to start
or to stop, and a test must not fail for that.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

import ccgate

pytestmark = pytest.mark.server

#: How long the process may take to start, answer and stop (each), however loaded the machine.
PATIENCE = 60.0


def _first_line(proc: subprocess.Popen[str], within: float) -> str:
    """Return the first line the process prints, waiting at most ``within`` seconds."""
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], within)
    return proc.stdout.readline() if readable else ""


def _answers(url: str, within: float) -> bool:
    """Tell whether ``url`` answers 200 within ``within`` seconds (asking again until then)."""
    deadline = time.monotonic() + within
    while True:
        try:
            if httpx.get(url, timeout=max(1.0, deadline - time.monotonic())).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def test_module_runs_standalone() -> None:
    src = str(Path(ccgate.__file__).parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ccgate.demo", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=errors,  # a file, never a pipe nobody reads: the process cannot block on it
            text=True,
            env=env,
        )

        def said() -> str:
            errors.seek(0)
            return errors.read()[-2000:]

        try:
            line = _first_line(proc, PATIENCE)
            assert line, f"no URL within {PATIENCE} s; stderr: {said()}"
            url = line.rsplit(" ", 1)[-1].strip()
            assert url.startswith("http://127.0.0.1:"), line
            assert _answers(f"{url}/api/hello", PATIENCE), f"no answer; stderr: {said()}"
            proc.send_signal(signal.SIGINT)
            try:
                code = proc.wait(timeout=PATIENCE)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"still running {PATIENCE} s after SIGINT: {said()}") from None
            assert code == 0, said()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
