"""The journal: writes the database cannot take now are kept in a private file, then replayed."""

from __future__ import annotations

import json
import stat
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
