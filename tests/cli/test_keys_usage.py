"""``ccgate keys`` and ``ccgate usage``: client keys and the ledger, straight from the database."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from ccgate.access.keys import KEY_CACHE_TTL
from ccgate.protocol.admin import key_object
from ccgate.store.database import Database
from ccgate.store.keys import SqlKeyStore
from ccgate.store.usage import SqlUsageStore, UsageRecord
from tests.gateway_testing import Gateway

T = TypeVar("T")

RAW_KEY = re.compile(r"ccg_[A-Za-z0-9_-]{43}")
ENV = {k: v for k, v in os.environ.items() if not k.startswith("CCGATE_")}
DAY1 = datetime(2026, 3, 1, 10, tzinfo=UTC).timestamp()
DAY2 = datetime(2026, 3, 2, 10, tzinfo=UTC).timestamp()


def ccgate(
    data_dir: Path | None, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ccgate ARGS --data-dir DATA_DIR`` with no CCGATE_* variables."""
    where = ["--data-dir", str(data_dir)] if data_dir is not None else []
    return subprocess.run(
        [sys.executable, "-m", "ccgate", *args, *where],
        capture_output=True,
        text=True,
        env={**ENV, **(env or {})},
        timeout=60,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """Return the stdout of a command that must have succeeded."""
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    """Return the JSON a command that must have succeeded printed."""
    return json.loads(ok(result))


def with_database(data_dir: Path, work: Callable[[Database], Awaitable[T]]) -> T:
    """Run ``work`` on the data dir's database (migrated) and close it."""

    async def run() -> T:
        database = Database(f"sqlite:///{data_dir / 'ccgate.db'}")
        try:
            await database.migrate()
            return await work(database)
        finally:
            await database.close()

    return asyncio.run(run())


def database_bytes(data_dir: Path) -> bytes:
    """Return the bytes of the SQLite database and its journal files."""
    return b"".join(path.read_bytes() for path in sorted(data_dir.glob("ccgate.db*")))


@pytest.mark.server
def test_create_prints_the_key_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    created = ccgate(
        tmp_path,
        "keys",
        "create",
        "alice",
        "--requests-per-minute",
        "60",
        "--requests-per-day",
        "1000",
        "--tokens-per-day",
        "50000",
        "--budget-usd",
        "2.5",
        "--max-concurrent",
        "3",
        "--models",
        "sonnet-4-5, anthropic/claude-haiku-latest,claude-sonnet-4-5",
        "--expires-at",
        "2099-01-01T12:00:00Z",
    )
    out = ok(created)
    keys = RAW_KEY.findall(out)
    assert len(keys) == 1, out
    raw = keys[0]
    assert out.count(raw) == 1
    assert "only time the key is shown" in out
    assert "alice" in out
    assert "60 req/min, 1000 req/day, 50000 tokens/day, $2.50/month, 3 at once" in out
    assert "claude-sonnet-4-5, claude-haiku-5-5" in out
    assert "2099-01-01 12:00 UTC" in out
    assert "auth_mode is none" in created.stderr, "the key is useless until auth_mode=multi"
    key_id = re.search(r"key_[0-9a-f]{16}", out)
    assert key_id is not None

    listed = ok(ccgate(tmp_path, "keys", "list"))
    listed_json = ok(ccgate(tmp_path, "keys", "list", "--json"))
    everything_json = ok(ccgate(tmp_path, "keys", "list", "--all", "--json"))
    for shown in (listed, listed_json, everything_json):
        assert raw not in shown and raw[4:] not in shown
    assert key_id.group() in listed and raw[:8] + "…" in listed and "active" in listed
    [entry] = json.loads(listed_json)["data"]
    assert "key" not in entry
    assert entry["id"] == key_id.group()
    assert entry["preview"] == raw[:8] + "…"
    assert entry["quota"] == {
        "requests_per_minute": 60,
        "requests_per_day": 1000,
        "tokens_per_day": 50000,
        "budget_usd_per_month": 2.5,
        "max_concurrent": 3,
    }
    assert entry["models"] == ["claude-sonnet-4-5", "claude-haiku-5-5"]
    assert entry["expires_at"] == int(datetime(2099, 1, 1, 12, tzinfo=UTC).timestamp())

    stored = database_bytes(tmp_path)
    assert raw.encode() not in stored and raw[4:].encode() not in stored
    assert hashlib.sha256(raw.encode()).hexdigest().encode() in stored


@pytest.mark.server
def test_create_json_is_the_admin_api_key_object(tmp_path: Path) -> None:
    made = as_json(ccgate(tmp_path, "keys", "create", "bob", "--auth-mode", "multi", "--json"))
    assert RAW_KEY.fullmatch(made["key"])
    record = with_database(tmp_path, lambda db: SqlKeyStore(db).get(made["id"]))
    assert record is not None
    assert made == key_object(record, made["key"])
    assert list(made)[:3] == ["id", "key", "object"]
    assert made["quota"] == {} and made["models"] is None and made["expires_at"] is None


@pytest.mark.server
def test_list_all_and_revoke(tmp_path: Path) -> None:
    assert "no keys" in ok(ccgate(tmp_path, "keys", "list"))
    keep = as_json(ccgate(tmp_path, "keys", "create", "keep", "--json"))["id"]
    gone = as_json(ccgate(tmp_path, "keys", "create", "gone", "--json"))["id"]

    async def more(db: Database) -> None:
        store = SqlKeyStore(db)
        await store.create("stale", "h1", "ccg_aaaa…", expires_at=DAY1)
        off = await store.create("off", "h2", "ccg_bbbb…")
        await store.update(off.id, disabled=True)

    with_database(tmp_path, more)

    revoked = ok(ccgate(tmp_path, "keys", "revoke", gone))
    assert gone in revoked and "revoked" in revoked and "'gone'" in revoked
    again = ok(ccgate(tmp_path, "keys", "revoke", gone))
    assert "already revoked" in again

    listing = ok(ccgate(tmp_path, "keys", "list"))
    assert gone not in listing
    statuses = {line.split()[1]: line.split()[-1] for line in listing.splitlines()[1:]}
    assert statuses == {"keep": "active", "stale": "expired", "off": "disabled"}
    assert listing.splitlines()[0].split()[:3] == ["ID", "NAME", "PREVIEW"]

    everything = ok(ccgate(tmp_path, "keys", "list", "--all"))
    assert any(gone in line and line.endswith("revoked") for line in everything.splitlines())
    data = as_json(ccgate(tmp_path, "keys", "list", "--all", "--json"))
    assert data["object"] == "list"
    assert [k["name"] for k in data["data"]] == ["keep", "gone", "stale", "off"]
    assert data["data"][1]["revoked_at"] is not None
    active = as_json(ccgate(tmp_path, "keys", "list", "--json"))["data"]
    assert [k["id"] for k in active] == [keep, *(k["id"] for k in data["data"][2:])]

    revoked_json = as_json(ccgate(tmp_path, "keys", "revoke", keep, "--json"))
    assert revoked_json["id"] == keep and revoked_json["revoked_at"] is not None
    unknown = ccgate(tmp_path, "keys", "revoke", "key_0000000000000000")
    assert unknown.returncode == 1
    assert "no API key 'key_0000000000000000'" in unknown.stderr


@pytest.mark.server
def test_bad_input_is_refused_with_status_2(tmp_path: Path) -> None:
    unknown_model = ccgate(tmp_path, "keys", "create", "x", "--models", "sonnet,gpt-4o")
    assert unknown_model.returncode == 2
    assert "'gpt-4o' does not exist" in unknown_model.stderr
    assert "such as claude-opus-5-5, claude-fable-5-2" in unknown_model.stderr

    bad_time = ccgate(tmp_path, "keys", "create", "x", "--expires-at", "next tuesday")
    assert bad_time.returncode == 2
    assert "--expires-at must be Unix seconds or an ISO 8601 date" in bad_time.stderr

    past = ccgate(tmp_path, "keys", "create", "x", "--expires-at", "1000")
    assert past.returncode == 2 and "in the past" in past.stderr
    negative = ccgate(tmp_path, "keys", "create", "x", "--budget-usd", "-1")
    assert negative.returncode == 2 and "--budget-usd must be a number of 0 or more" in (
        negative.stderr
    )
    not_whole = ccgate(tmp_path, "keys", "create", "x", "--requests-per-day", "1.5")
    assert not_whole.returncode == 2
    no_models = ccgate(tmp_path, "keys", "create", "x", "--models", " , ")
    assert no_models.returncode == 2 and "--models needs" in no_models.stderr

    bad_since = ccgate(tmp_path, "usage", "--since", "yesterday")
    assert bad_since.returncode == 2 and "--since must be Unix seconds" in bad_since.stderr
    backwards = ccgate(tmp_path, "usage", "--since", "2026-03-02", "--until", "2026-03-01")
    assert backwards.returncode == 2
    unknown_key = ccgate(tmp_path, "usage", "--key", "key_0000000000000000")
    assert unknown_key.returncode == 1 and "no API key" in unknown_key.stderr

    assert as_json(ccgate(tmp_path, "keys", "list", "--all", "--json"))["data"] == []


@pytest.mark.server
def test_settings_come_from_env_config_file_and_flags(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"CCGATE_DATA_DIR": str(data)}
    made = as_json(ccgate(None, "keys", "create", "from-env", "--json", env=env))
    config = tmp_path / "ccgate.toml"
    config.write_text(f'[ccgate]\ndata_dir = "{data}"\n')
    from_file = as_json(ccgate(None, "keys", "list", "--json", "--config", str(config)))
    url = f"sqlite:///{data / 'ccgate.db'}"
    from_url = as_json(ccgate(None, "keys", "list", "--json", "--database-url", url))
    assert [k["id"] for k in from_file["data"]] == [made["id"]]
    assert from_url == from_file
    usage = as_json(ccgate(None, "usage", "--json", env={"CCGATE_DATABASE_URL": url}))
    assert usage["object"] == "usage"


@pytest.mark.server
def test_usage_of_an_empty_ledger(tmp_path: Path) -> None:
    out = ok(ccgate(tmp_path, "usage"))
    assert "no usage recorded" in out
    assert as_json(ccgate(tmp_path, "usage", "--json", "--group-by", "model")) == {
        "object": "usage",
        "group_by": "model",
        "since": None,
        "until": None,
        "data": [],
        "totals": {
            "requests": 0,
            "cached_requests": 0,
            "failed_requests": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_read_tokens": 0,
            "cache_creation_tokens": 0,
            "cost_usd": 0,
        },
    }


def _usage(namespace: str, model: str, at: float, **extra: Any) -> UsageRecord:
    values: dict[str, Any] = {
        "namespace": namespace,
        "endpoint": "/v1/chat/completions",
        "model": model,
        "status": "ok",
        "duration_ms": 12.0,
        "input_tokens": 100,
        "output_tokens": 20,
        "cache_read_tokens": 3,
        "cache_creation_tokens": 4,
        "cost_usd": 0.125,
        "created_at": at,
        **extra,
    }
    return UsageRecord(**values)


def _rows(out: str) -> dict[str, list[str]]:
    """Return a usage table's lines by their first cell (header and rule left out)."""
    lines = [line.split() for line in out.splitlines()[2:] if not line.startswith("-")]
    return {cells[0]: cells[1:] for cells in lines}


@pytest.mark.server
def test_usage_summaries_from_the_ledger(tmp_path: Path) -> None:
    alice = as_json(ccgate(tmp_path, "keys", "create", "alice", "--json"))["id"]

    async def record(db: Database) -> None:
        ledger = SqlUsageStore(db)
        await ledger.record(_usage(alice, "claude-sonnet-4-5", DAY1))
        await ledger.record(_usage(alice, "haiku", DAY1 + 60, status="upstream_error"))
        await ledger.record(
            _usage("local", "claude-sonnet-4-5", DAY2, cached=True, cost_usd=0.0, input_tokens=7)
        )

    with_database(tmp_path, record)

    by_day = ok(ccgate(tmp_path, "usage"))
    assert by_day.splitlines()[0] == "usage by day, all time"
    header = by_day.splitlines()[1].split()
    assert header[:4] == ["DAY", "REQUESTS", "CACHED", "FAILED"] and header[-2:] == ["COST", "USD"]
    rows = _rows(by_day)
    assert rows["2026-03-01"] == ["2", "0", "1", "200", "40", "6", "8", "0.250000"]
    assert rows["2026-03-02"] == ["1", "1", "0", "7", "20", "3", "4", "0.000000"]
    assert rows["total"] == ["3", "1", "1", "207", "60", "9", "12", "0.250000"]

    by_model = as_json(ccgate(tmp_path, "usage", "--group-by", "model", "--json"))
    assert [(r["group"], r["requests"]) for r in by_model["data"]] == [
        ("claude-sonnet-4-5", 2),
        ("haiku", 1),
    ]
    assert by_model["totals"]["requests"] == 3 and by_model["totals"]["cost_usd"] == 0.25

    by_key = ok(ccgate(tmp_path, "usage", "--group-by", "key"))
    rows = _rows(by_key)
    assert rows[alice][:2] == ["alice", "2"]
    assert rows["local"][:2] == ["-", "1"], "namespace 'local' has no key"
    assert rows["total"][0] == "3"

    since = ok(ccgate(tmp_path, "usage", "--since", "2026-03-02"))
    assert "since 2026-03-02 00:00 UTC" in since.splitlines()[0]
    assert set(_rows(since)) == {"2026-03-02", "total"}
    until = as_json(ccgate(tmp_path, "usage", "--until", str(int(DAY2)), "--json"))
    assert [r["group"] for r in until["data"]] == ["2026-03-01"]
    assert until["until"] == int(DAY2) and until["since"] is None

    one_key = ok(ccgate(tmp_path, "usage", "--key", alice, "--group-by", "model"))
    assert f"key {alice} 'alice'" in one_key.splitlines()[0]
    assert set(_rows(one_key)) == {"claude-sonnet-4-5", "haiku", "total"}
    local = as_json(ccgate(tmp_path, "usage", "--key", "local", "--json"))
    assert [(r["group"], r["cached_requests"]) for r in local["data"]] == [("2026-03-02", 1)]


@pytest.mark.server
def test_sessions_need_a_namespace_in_multi_mode(tmp_path: Path) -> None:
    refused = ccgate(tmp_path, "sessions", "list", "--auth-mode", "multi")
    assert refused.returncode == 2
    assert "--namespace KEY_ID" in refused.stderr
    removal = ccgate(tmp_path, "sessions", "rm", "--all", "--auth-mode", "multi")
    assert removal.returncode == 2
    named = ok(ccgate(tmp_path, "sessions", "list", "--auth-mode", "multi", "--namespace", "key_x"))
    assert "no sessions in namespace 'key_x'" in named


@pytest.mark.cli
def test_a_created_key_opens_the_gateway_until_it_is_revoked(
    make_gateway: Callable[..., Gateway], data_dir: Path
) -> None:
    gateway = make_gateway(auth_mode="multi")
    made = as_json(ccgate(data_dir, "keys", "create", "client", "--models", "sonnet", "--json"))
    models = gateway.url + "/v1/models"
    auth = {"Authorization": f"Bearer {made['key']}"}
    assert httpx.get(models, headers=auth).status_code == 200
    assert httpx.get(models, headers={"x-api-key": made["key"]}).status_code == 200
    assert httpx.get(models).status_code == 401
    assert httpx.get(models, headers={"Authorization": "Bearer ccg_wrong"}).status_code == 401
    revoked_at = time.monotonic()
    ok(ccgate(data_dir, "keys", "revoke", made["id"]))
    # Another process revoked it: the gateway's cache of keys forgets it within KEY_CACHE_TTL.
    while (refused := httpx.get(models, headers=auth)).status_code == 200:
        assert time.monotonic() - revoked_at < KEY_CACHE_TTL + 5, "still let in"
        time.sleep(0.05)
    assert refused.status_code == 401
    assert "revoked" in refused.json()["error"]["message"]
