"""The CLI launcher: a process started through it dies with its parent and gets its credential
on a descriptor; an agent's environment."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ccgate.claude.environment import Credential, agent_credential, cli_environment
from ccgate.claude.launcher import (
    CREDENTIAL_FD,
    clear_credential_files,
    credential_file,
    reap_orphans,
    tethered,
)
from tests.gateway_testing import wait_until

needs_setpriv = pytest.mark.skipif(
    shutil.which("setpriv") is None or not sys.platform.startswith("linux"),
    reason="the parent-death tether needs Linux and setpriv (util-linux)",
)


@pytest.mark.unit
def test_without_a_cli_there_is_nothing_to_launch(tmp_path: Path) -> None:
    assert tethered(None, tmp_path) is None


@pytest.mark.server
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


@pytest.mark.server
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


@pytest.mark.server
def test_the_credential_is_handed_over_on_a_descriptor_and_its_file_removed(
    tmp_path: Path,
) -> None:
    cli = tmp_path / "fake cli"
    # Prints what it reads on descriptor 3, and whether the variable naming the file is gone.
    cli.write_text('#!/bin/sh\nread -r key <&3\necho "$key ${CCGATE_CREDENTIAL_FILE-unset}"\n')
    cli.chmod(0o755)
    data = tmp_path / "data"
    launcher = tethered(cli, data)
    assert launcher is not None
    with credential_file(data, "sk-secret") as path:
        assert path.stat().st_mode & 0o777 == 0o600
        out = subprocess.run(
            [str(launcher)],
            capture_output=True,
            text=True,
            env={**os.environ, "CCGATE_CREDENTIAL_FILE": str(path)},
            check=True,
        )
        assert out.stdout.split() == ["sk-secret", "unset"]
        assert not path.exists()  # the launcher removed it once open


@pytest.mark.unit
def test_a_credential_file_is_removed_when_the_cli_never_started(tmp_path: Path) -> None:
    with credential_file(tmp_path, "sk-secret") as path:
        assert path.read_text() == "sk-secret"
    assert not path.exists()
    with credential_file(tmp_path, "left behind") as path:
        left = path
        clear_credential_files(tmp_path)  # as at start-up, after a ccgate that was killed
        assert not left.exists()


@pytest.mark.unit
def test_an_agent_environment_keeps_what_programs_need_and_nothing_else() -> None:
    environ = {
        "PATH": "/usr/bin",
        "HOME": "/home/op",
        "LC_ALL": "C.UTF-8",
        "GITHUB_TOKEN": "ghp-x",
        "ANTHROPIC_API_KEY": "sk-op",
        "CLAUDE_CODE_OAUTH_TOKEN": "oat-op",
        "CCGATE_ADMIN_KEY": "admin",
        "AWS_SECRET_ACCESS_KEY": "aws",
    }
    credential = agent_credential(None, environ)
    assert credential is not None and credential.value == "sk-op"
    assert "sk-op" not in repr(credential)
    env = cli_environment(environ, credential)
    assert env == {
        "GITHUB_TOKEN": "",
        "ANTHROPIC_API_KEY": "",
        "CLAUDE_CODE_OAUTH_TOKEN": "",
        "CCGATE_ADMIN_KEY": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "CLAUDE_CODE_API_KEY_FILE_DESCRIPTOR": str(CREDENTIAL_FD),
    }


@pytest.mark.unit
def test_which_credential_an_agent_uses() -> None:
    oauth = {"CLAUDE_CODE_OAUTH_TOKEN": "oat"}
    setting = agent_credential("sk-setting", {"ANTHROPIC_API_KEY": "sk-env", **oauth})
    assert setting == Credential("sk-setting", "CLAUDE_CODE_API_KEY_FILE_DESCRIPTOR")
    assert agent_credential(None, oauth) == Credential(
        "oat", "CLAUDE_CODE_OAUTH_TOKEN_FILE_DESCRIPTOR"
    )
    assert agent_credential(None, {}) is None  # the CLI's own login
    assert cli_environment({}, None) == {}


@pytest.mark.server
def test_what_a_killed_cli_left_running_is_reaped_at_the_next_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {**os.environ, "CLAUDE_CONFIG_DIR": str(data_dir / "workers" / "w1")}
    # A process the CLI started, orphaned when the CLI was killed: its parent is init now.
    out = subprocess.run(
        ["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    orphan = int(out.stdout.strip())
    stranger = subprocess.Popen(["sleep", "60"], env=env)  # not an orphan: ours, alive
    try:
        parent = Path(f"/proc/{orphan}/stat").read_text().rpartition(")")[2].split()[1]
        if parent != "1":
            pytest.skip(f"orphans are adopted by pid {parent} here (a subreaper), not init")
        assert reap_orphans(data_dir) == [orphan]
        assert wait_until(lambda: not Path(f"/proc/{orphan}").exists() or _zombie(orphan))
        assert stranger.poll() is None
        assert reap_orphans(tmp_path / "other") == []
    finally:
        stranger.kill()
        stranger.wait()
        with contextlib.suppress(ProcessLookupError):
            os.kill(orphan, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
