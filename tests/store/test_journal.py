"""The journal: writes the database cannot take now are kept in a private file, then replayed."""

from __future__ import annotations

import functools
import json
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ccgate.errors import DatabaseBusy
from ccgate.store.journal import Journal, Replayed

pytestmark = pytest.mark.unit


class Table:
    """A stand-in database: it applies writes, or refuses them as busy or broken."""

    def __init__(self) -> None:
        self.rows: list[Any] = []
        self.busy = False
        self.broken: set[Any] = set()

    async def write(self, payload: dict[str, Any]) -> None:
        if self.busy:
            raise DatabaseBusy("locked")
        if payload["n"] in self.broken:
            raise ValueError("a write this table never takes")
        self.rows.append(payload["n"])


@pytest.fixture
def table() -> Table:
    return Table()


def _journal(path: Path, table: Table, **options: Any) -> Journal:
    return Journal(path / "journal.jsonl", {"write": table.write}, **options)


async def test_a_write_is_applied_at_once_when_it_can(tmp_path: Path, table: Table) -> None:
    journal = _journal(tmp_path, table)
    assert await journal.keep("write", {"n": 1}) is True
    assert table.rows == [1]
    assert not journal.path.exists()
    assert await journal.replay() == Replayed()


async def test_a_busy_database_gets_the_write_later_in_order(tmp_path: Path, table: Table) -> None:
    journal = _journal(tmp_path, table)
    table.busy = True
    assert await journal.keep("write", {"n": 1}, ref="adm_1") is False
    table.busy = False
    # While an entry waits, later writes queue behind it instead of overtaking it.
    assert await journal.keep("write", {"n": 2}) is False
    assert table.rows == []
    assert journal.waiting == 2 and journal.refs() == {"adm_1"}
    assert stat.S_IMODE(journal.path.stat().st_mode) == 0o600
    lines = [json.loads(line) for line in journal.path.read_text().splitlines()]
    assert [(e["kind"], e["payload"], e["ref"]) for e in lines] == [
        ("write", {"n": 1}, "adm_1"),
        ("write", {"n": 2}, None),
    ]
    assert await journal.replay() == Replayed(applied=2)
    assert table.rows == [1, 2]
    assert journal.path.read_text() == ""
    assert journal.waiting == 0 and journal.refs() == set()
    assert await journal.keep("write", {"n": 3}) is True


async def test_a_replay_stops_at_a_busy_database_and_keeps_the_rest(
    tmp_path: Path, table: Table
) -> None:
    journal = _journal(tmp_path, table)
    table.busy = True
    for n in range(3):
        await journal.keep("write", {"n": n})
    assert await journal.replay() == Replayed(left=3)
    table.busy = False
    assert await journal.replay() == Replayed(applied=3)
    assert table.rows == [0, 1, 2]


async def test_entries_survive_a_restart(tmp_path: Path, table: Table) -> None:
    table.busy = True
    await _journal(tmp_path, table).keep("write", {"n": 7}, ref="adm_7")
    table.busy = False
    restarted = _journal(tmp_path, table)
    assert restarted.waiting == 0  # it learns what waits at its first replay
    assert await restarted.replay() == Replayed(applied=1)
    assert table.rows == [7]


async def test_an_entry_that_keeps_failing_is_set_aside(tmp_path: Path, table: Table) -> None:
    journal = _journal(tmp_path, table, max_attempts=2)
    table.broken = {1}
    assert await journal.keep("write", {"n": 1}) is False  # a failed write is kept too
    await journal.keep("write", {"n": 2})
    assert table.rows == [2]  # not held up by the broken one
    assert await journal.replay() == Replayed(left=1)
    assert await journal.replay() == Replayed(failed=1)
    failed = tmp_path / "journal.failed.jsonl"
    assert json.loads(failed.read_text())["payload"] == {"n": 1}
    assert stat.S_IMODE(failed.stat().st_mode) == 0o600
    assert journal.waiting == 0


async def test_a_line_cut_by_a_crash_is_set_aside_and_the_rest_applied(
    tmp_path: Path, table: Table
) -> None:
    journal = _journal(tmp_path, table)
    table.busy = True
    await journal.keep("write", {"n": 1})
    with journal.path.open("a") as fh:
        fh.write('{"kind": "write", "payl')
    table.busy = False
    assert await journal.replay() == Replayed(applied=1, failed=1)
    assert table.rows == [1]
    assert (tmp_path / "journal.failed.jsonl").read_text().startswith('{"kind": "write"')


async def test_a_write_that_cannot_even_be_kept_does_not_raise(
    tmp_path: Path, table: Table, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal(tmp_path / "missing" / "journal.jsonl", {"write": table.write})
    table.busy = True
    assert await journal.keep("write", {"n": 1}) is False
    assert "journal_write_failed" in caplog.text


# --- written behind the answer: defer, flush, spools ----------------------------------------


class Batches(Table):
    """A stand-in database that also takes writes in batches (one transaction each)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[Any]] = []

    async def write_many(self, payloads: list[dict[str, Any]]) -> None:
        if self.busy:
            raise DatabaseBusy("locked")
        self.batches.append([p["n"] for p in payloads])
        self.rows.extend(p["n"] for p in payloads)


def _behind(path: Path, table: Batches) -> Journal:
    return Journal(
        path / "journal.jsonl", {"write": table.write}, batches={"write": table.write_many}
    )


def _spools(path: Path) -> list[Path]:
    return sorted(path.glob("journal.*.spool"))


async def test_deferred_writes_are_applied_in_batches_and_flush_waits_for_them(
    tmp_path: Path,
) -> None:
    table = Batches()
    journal = _behind(tmp_path, table)
    told: list[int] = []
    for n in range(5):
        journal.defer("write", {"n": n}, ref=f"adm_{n}", done=functools.partial(told.append, n))
    # Nothing waited for the table: the writes are in this process's spool, private.
    assert table.rows == []
    [spool] = _spools(tmp_path)
    assert stat.S_IMODE(spool.stat().st_mode) == 0o600
    assert [json.loads(line)["payload"]["n"] for line in spool.read_text().splitlines()] == [
        0,
        1,
        2,
        3,
        4,
    ]
    await journal.flush()
    assert table.rows == [0, 1, 2, 3, 4] and table.batches == [[0, 1, 2, 3, 4]]
    assert told == [0, 1, 2, 3, 4]
    assert _spools(tmp_path) == [] and not journal.path.exists()
    await journal.flush()  # nothing left: returns at once
    await journal.aclose()


async def test_a_busy_database_sends_deferred_writes_to_the_journal_file(tmp_path: Path) -> None:
    table = Batches()
    journal = _behind(tmp_path, table)
    table.busy = True
    journal.defer("write", {"n": 1}, ref="adm_1")
    journal.defer("write", {"n": 2}, ref="adm_2")
    await journal.flush()
    assert table.rows == [] and _spools(tmp_path) == []
    assert journal.waiting == 2 and journal.refs() == {"adm_1", "adm_2"}
    table.busy = False
    assert await journal.replay() == Replayed(applied=2)
    assert table.rows == [1, 2]
    await journal.aclose()


async def test_a_kind_without_a_batch_applier_is_applied_one_by_one(tmp_path: Path) -> None:
    table = Table()
    journal = _journal(tmp_path, table)
    journal.defer("write", {"n": 1})
    journal.defer("write", {"n": 2})
    await journal.flush()
    assert table.rows == [1, 2] and _spools(tmp_path) == []
    await journal.aclose()


_WRITER = """
import asyncio, os, sys
from pathlib import Path
from ccgate.store.journal import Journal

async def never(payloads):
    await asyncio.Event().wait()  # the database never answers: the writes stay in the spool

async def main():
    journal = Journal(Path(sys.argv[1]) / "journal.jsonl", {}, batches={"write": never})
    for n in range(3):
        journal.defer("write", {"n": n}, ref=f"adm_{n}")
    print("deferred", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_killed_process_s_spool_is_adopted_and_applied(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "deferred"
        table = Batches()
        journal = _behind(tmp_path, table)
        # While its process lives, its spool is its own.
        assert await journal.replay() == Replayed()
        assert table.rows == [] and len(_spools(tmp_path)) == 1
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
    # Killed with its writes unapplied: the next replay takes them over, in order.
    assert await journal.replay() == Replayed(applied=3)
    assert table.rows == [0, 1, 2]
    assert _spools(tmp_path) == [] and journal.waiting == 0
