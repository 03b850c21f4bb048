"""The CLI launcher: a process started through it dies with the process that started it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ccgate.engine.launcher import tethered

needs_setpriv = pytest.mark.skipif(
    shutil.which("setpriv") is None or not sys.platform.startswith("linux"),
    reason="the parent-death tether needs Linux and setpriv (util-linux)",
)


def test_without_a_cli_there_is_nothing_to_launch(tmp_path: Path) -> None:
    assert tethered(None, tmp_path) is None


@needs_setpriv
def test_the_launcher_execs_the_cli_with_its_arguments(tmp_path: Path) -> None:
    cli = tmp_path / "fake cli"
    cli.write_text('#!/bin/sh\necho "$@" "$CCGATE_TEST_VAR"\n')
    cli.chmod(0o755)
    launcher = tethered(cli, tmp_path / "data")
    assert launcher is not None and launcher != cli
    assert launcher.stat().st_mode & 0o777 == 0o700
    assert tethered(cli, tmp_path / "data") == launcher  # written once, reused
    out = subprocess.run(
        [str(launcher), "a", "b c"],
        capture_output=True,
        text=True,
        env={**os.environ, "CCGATE_TEST_VAR": "env"},
        check=True,
    )
    assert out.stdout.strip() == "a b c env"


@needs_setpriv
def test_a_launched_process_dies_when_its_parent_is_killed(tmp_path: Path) -> None:
    launcher = tethered(Path(shutil.which("sleep") or "/bin/sleep"), tmp_path / "data")
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import pathlib, subprocess, time
                child = subprocess.Popen([{str(launcher)!r}, "300"])
                pathlib.Path({str(pid_file)!r}).write_text(str(child.pid))
                time.sleep(300)
                """
            ),
        ]
    )
    try:
        deadline = time.monotonic() + 10
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child)
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status
