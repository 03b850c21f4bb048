"""What ccgate writes under its data dir is readable by its own user only, whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccgate.claude import RunnerConfig
from ccgate.claude.agent import ClaudeAgents
from ccgate.claude.transcript import write_transcript
from ccgate.claude.workdirs import WorkerDirs
from ccgate.engine.gate import Gate
from ccgate.engine.turn import Message, TextPart
from ccgate.loops.manager import LoopManager
from ccgate.store.database import Database
from ccgate.store.loops import SqlLoopStore

pytestmark = pytest.mark.unit


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def lax_umask() -> Iterator[None]:
    """Run with the usual umask 022, under which a plain ``mkdir`` gives 0755."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


async def test_loop_directories_are_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    loops_dir = data_dir / "loops"
    database = Database(f"sqlite:///{tmp_path / 'ccgate.db'}")
    await database.migrate()
    try:
        manager = LoopManager(
            SqlLoopStore(database),
            agents=ClaudeAgents(RunnerConfig(data_dir=data_dir), WorkerDirs(data_dir)),
            loops_dir=loops_dir,
            gate=Gate(1, 0),
            cli_model=lambda name: name,
            idle_timeout=60,
            choice_timeout=60,
        )
        record = await manager.create(
            "local", title="t", metadata={}, permission_mode="default", model="sonnet"
        )
        # An older ccgate left its loop directories at 0755: they are tightened.
        older = loops_dir / "loop_older"
        older.mkdir(mode=0o755)
        older.chmod(0o755)
        loops_dir.chmod(0o755)
        again = await manager.create(
            "local", title="t2", metadata={}, permission_mode="default", model="sonnet"
        )
    finally:
        await database.close()
    assert _mode(loops_dir) == 0o700
    for made in (record, again):
        assert _mode(loops_dir / made.id) == 0o700
        assert _mode(manager.workspace(made.id)) == 0o700


def test_a_written_transcript_is_private(tmp_path: Path) -> None:
    history = (Message("user", (TextPart("hello"),)),)
    path = write_transcript(tmp_path, tmp_path / "cwd", "sid", history, "sonnet")
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert _mode(path.parent.parent) == 0o700  # projects/
    # Written again (a rebuilt session), it stays private.
    path.chmod(0o644)
    again = write_transcript(tmp_path, tmp_path / "cwd", "sid", history, "sonnet")
    assert again == path and _mode(path) == 0o600
