"""``ccgate keys create|list|revoke``: manage the keys of auth_mode=multi in the database directly.

The raw key is printed once, by ``create``; only its SHA-256 is stored, so no
command can show it again.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ccgate.access.keys import KeyManager
from ccgate.config import Settings
from ccgate.engine.models import Catalogue
from ccgate.errors import InvalidRequest, NotFound
from ccgate.protocol.admin import key_object, parse_expiry
from ccgate.store.database import Database
from ccgate.store.keys import KeyRecord, Quota, SqlKeyStore

__all__ = [
    "fail",
    "format_time",
    "key_status",
    "print_json",
    "print_table",
    "printable",
    "quota_summary",
    "run_keys",
]

#: The flag of each quota limit, where it is not the field's own name.
_FLAGS = {"budget_usd_per_month": "--budget-usd"}
_NAME_WIDTH = 32


def fail(message: str, status: int) -> int:
    """Print ``message`` as ccgate's error on stderr; return ``status``."""
    print(f"ccgate: {message}", file=sys.stderr)
    return status


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON."""
    print(json.dumps(value, indent=2, ensure_ascii=False))


def format_time(stamp: float | None, none: str = "-") -> str:
    """Return a Unix time as ``YYYY-MM-DD HH:MM`` (UTC), or ``none`` for no time."""
    if stamp is None:
        return none
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(stamp))


def printable(text: str) -> str:
    """Return ``text`` with control characters shown as ``?`` (names come from users)."""
    return "".join(c if c.isprintable() else "?" for c in text)


def print_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: Sequence[int] = (),
    footer: Sequence[str] | None = None,
) -> None:
    """Print rows under headers in aligned columns (``right`` are right-aligned)."""
    lines = [list(headers), *(list(r) for r in rows), *([list(footer)] if footer else [])]
    lines = [[printable(cell) for cell in line] for line in lines]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]

    def render(cells: list[str]) -> str:
        padded = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    for line in lines[: len(lines) - (1 if footer else 0)]:
        print(render(line))
    if footer:
        print("-" * len(render(["-" * w for w in widths])))
        print(render(lines[-1]))


def _usd(value: float) -> str:
    return f"${value:.2f}" if round(value, 2) == value else f"${value:g}"


def quota_summary(quota: Quota) -> str:
    """Return a key's limits in a few words (``no limits`` when none is set)."""
    parts = []
    if quota.requests_per_minute is not None:
        parts.append(f"{quota.requests_per_minute} req/min")
    if quota.requests_per_day is not None:
        parts.append(f"{quota.requests_per_day} req/day")
    if quota.tokens_per_day is not None:
        parts.append(f"{quota.tokens_per_day} tokens/day")
    if quota.budget_usd_per_month is not None:
        parts.append(f"{_usd(quota.budget_usd_per_month)}/month")
    if quota.max_concurrent is not None:
        parts.append(f"{quota.max_concurrent} at once")
    if quota.plan_share is not None:
        parts.append(f"{quota.plan_share:.0%} plan share")
    return ", ".join(parts) or "no limits"


def key_status(record: KeyRecord, now: float) -> str:
    """Return whether a key works: active, disabled, expired or revoked."""
    if record.revoked_at is not None:
        return "revoked"
    if record.disabled:
        return "disabled"
    if record.expires_at is not None and record.expires_at <= now:
        return "expired"
    return "active"


def _models_text(models: tuple[str, ...] | None) -> str:
    if models is None:
        return "all"
    return ", ".join(models) or "none"


@dataclass(frozen=True, slots=True)
class _NewKey:
    """What ``keys create`` was asked for, checked."""

    name: str
    quota: Quota
    models: tuple[str, ...] | None
    expires_at: float | None


def _quota(values: dict[str, Any]) -> Quota:
    for name, value in values.items():
        if not math.isfinite(value) or value < 0:
            flag = _FLAGS.get(name, "--" + name.replace("_", "-"))
            raise InvalidRequest(f"{flag} must be a number of 0 or more; got {value}")
    return Quota.from_dict(values)


def _models(names: str | None) -> tuple[str, ...] | None:
    if names is None:
        return None
    given = [n.strip() for n in names.split(",") if n.strip()]
    if not given:
        raise InvalidRequest("--models needs at least one model name, like sonnet,haiku")
    catalogue = Catalogue.load()
    return tuple(dict.fromkeys(catalogue.resolve(name).id for name in given))


def _expiry(value: str | None) -> float | None:
    return parse_expiry(value, "--expires-at", now=time.time())


def _check(name: str, quota: dict[str, Any], models: str | None, expires: str | None) -> _NewKey:
    return _NewKey(name, _quota(quota), _models(models), _expiry(expires))


async def _create(keys: KeyManager, request: _NewKey, as_json: bool) -> int:
    made = await keys.create(
        request.name, quota=request.quota, models=request.models, expires_at=request.expires_at
    )
    if as_json:
        print_json(key_object(made.record, made.key))
        return 0
    record = made.record
    expires = "never" if record.expires_at is None else format_time(record.expires_at) + " UTC"
    print(f"created key {record.id}")
    print(f"  name:     {printable(record.name)}")
    print(f"  quota:    {quota_summary(record.quota)}")
    print(f"  models:   {_models_text(record.models)}")
    print(f"  expires:  {expires}")
    print()
    print(f"  key:      {made.key}")
    print()
    print(
        "This is the only time the key is shown: ccgate stores only its SHA-256 and cannot "
        "show it again.\nGive it to its user now; if it is lost, revoke it and create another."
    )
    return 0


async def _list(keys: KeyManager, everything: bool, as_json: bool) -> int:
    records = await keys.list_keys(include_revoked=everything)
    if as_json:
        print_json({"object": "list", "data": [key_object(r) for r in records]})
        return 0
    if not records:
        hint = "" if everything else " (--all shows revoked keys too)"
        print(f"no keys{hint}; make one with: ccgate keys create NAME")
        return 0
    now = time.time()
    rows = []
    for r in records:
        name = r.name if len(r.name) <= _NAME_WIDTH else r.name[: _NAME_WIDTH - 1] + "…"
        rows.append(
            [
                r.id,
                name,
                r.preview,
                quota_summary(r.quota),
                _models_text(r.models),
                format_time(r.created_at),
                format_time(r.last_used_at, "never"),
                key_status(r, now),
            ]
        )
    headers = ["ID", "NAME", "PREVIEW", "QUOTA", "MODELS", "CREATED (UTC)", "LAST USED", "STATUS"]
    print_table(headers, rows)
    return 0


async def _revoke(keys: KeyManager, key_id: str, as_json: bool) -> int:
    try:
        before = await keys.get(key_id)
    except NotFound as exc:
        return fail(f"{exc.message}; ccgate keys list --all shows the keys", 1)
    record = await keys.revoke(key_id)
    if as_json:
        print_json(key_object(record))
        return 0
    what = f"key {record.id} '{printable(record.name)}' ({record.preview})"
    if before.revoked_at is not None:
        print(f"{what} was already revoked on {format_time(before.revoked_at)} UTC")
    else:
        print(f"revoked {what}: it stops working at once")
    return 0


async def run_keys(
    settings: Settings,
    action: str,
    *,
    name: str | None = None,
    key_id: str | None = None,
    quota: dict[str, Any] | None = None,
    models: str | None = None,
    expires_at: str | None = None,
    everything: bool = False,
    as_json: bool = False,
) -> int:
    """Run one keys command; return the exit code."""
    request = None
    if action == "create":
        try:
            request = _check(name or "", quota or {}, models, expires_at)
        except (InvalidRequest, NotFound) as exc:
            return fail(exc.message, 2)
        if settings.auth_mode != "multi":
            print(
                f"ccgate: note: auth_mode is {settings.auth_mode}, so the gateway does not use "
                "these keys until it is served with --auth-mode multi (CCGATE_AUTH_MODE=multi)",
                file=sys.stderr,
            )
    database = Database(settings.effective_database_url)
    try:
        await database.migrate()
        keys = KeyManager(SqlKeyStore(database))
        if request is not None:
            return await _create(keys, request, as_json)
        if action == "list":
            return await _list(keys, everything, as_json)
        return await _revoke(keys, key_id or "", as_json)
    except InvalidRequest as exc:
        return fail(exc.message, 2)
    finally:
        await database.close()
