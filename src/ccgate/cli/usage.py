"""``ccgate usage``: summarise the usage ledger in the database directly."""

from __future__ import annotations

import sys
from typing import Any

from ccgate.cli.keys import fail, format_time, print_json, print_table, printable
from ccgate.config import Settings
from ccgate.errors import InvalidRequest
from ccgate.protocol.admin import parse_time, usage_object
from ccgate.store.database import Database
from ccgate.store.keys import SqlKeyStore
from ccgate.store.usage import COUNTS, GroupBy, SqlUsageStore

__all__ = ["run_usage"]

#: Namespaces that are not a key's id: auth_mode none and auth_mode shared.
_KEYLESS = ("local", "shared")
_HEADERS = ("REQUESTS", "CACHED", "FAILED", "INPUT", "OUTPUT", "CACHE READ", "CACHE WRITE")


def _window(since: float | None, until: float | None) -> str:
    if since is None and until is None:
        return "all time"
    if until is None:
        return f"since {format_time(since)} UTC"
    if since is None:
        return f"until {format_time(until)} UTC"
    return f"{format_time(since)} to {format_time(until)} UTC"


def _numbers(values: dict[str, Any]) -> list[str]:
    return [str(values[f]) for f in COUNTS] + [f"{values['cost_usd']:.6f}"]


async def run_usage(
    settings: Settings,
    *,
    key_id: str | None = None,
    since: str | None = None,
    until: str | None = None,
    group_by: GroupBy = "day",
    as_json: bool = False,
) -> int:
    """Summarise the ledger (of one key or of all); return the exit code."""
    try:
        start, end = parse_time(since, "--since"), parse_time(until, "--until")
    except InvalidRequest as exc:
        return fail(exc.message, 2)
    if start is not None and end is not None and end <= start:
        return fail("--until must be later than --since", 2)
    if not settings.usage_ledger:
        print("ccgate: note: usage_ledger is off, so requests are not recorded", file=sys.stderr)
    database = Database(settings.effective_database_url)
    try:
        await database.migrate()
        keys = SqlKeyStore(database)
        who = ""
        if key_id is not None:
            record = None if key_id in _KEYLESS else await keys.get(key_id)
            if record is None and key_id not in _KEYLESS:
                return fail(
                    f"no API key '{key_id}'; give a key's id (ccgate keys list --all) "
                    "or 'local' / 'shared'",
                    1,
                )
            who = f" of key {key_id} '{printable(record.name)}'" if record else f" of '{key_id}'"
        rows = await SqlUsageStore(database).summarize(
            key_id, since=start, until=end, group_by=group_by
        )
        summary = usage_object(rows, group_by, start, end)
        if as_json:
            print_json(summary)
            return 0
        print(f"usage{who} by {group_by}, {_window(start, end)}")
        if not rows:
            print("no usage recorded")
            return 0
        by_key = group_by == "key"
        names = {r.id: r.name for r in await keys.list_keys(include_revoked=True)} if by_key else {}
        table = [
            [row["group"], *([names.get(row["group"], "-")] if by_key else []), *_numbers(row)]
            for row in summary["data"]
        ]
        headers = [group_by.upper(), *(["NAME"] if by_key else []), *_HEADERS, "COST USD"]
        total = ["total", *([""] if by_key else []), *_numbers(summary["totals"])]
        first_number = 2 if by_key else 1
        print_table(headers, table, right=range(first_number, len(headers)), footer=total)
        return 0
    finally:
        await database.close()
