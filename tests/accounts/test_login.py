"""The login keeper: replicas share one Claude Code login and renew it one at a time.

Each keeper stands for a replica on a machine of its own (its own credentials file); they
share one SQLite database and one lease, and renew against a fake OAuth token endpoint
over real HTTP whose refresh tokens work once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import stat
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccgate import checks
from ccgate.accounts.login import (
    FAILED_RETRY,
    WATCH_EVERY,
    LoginCredentials,
    LoginKeeper,
    OAuthTokenEndpoint,
    RefreshLock,
    read_login,
    write_login,
)
from ccgate.accounts.secrets import SecretBox
from ccgate.config import load_settings
from ccgate.errors import ConfigError, DatabaseBusy, LoginRefreshFailed
from ccgate.store.database import Database
from ccgate.store.logins import LoginStore, SqlLoginStore, StoredLogin
from ccgate.testing import LocalLease
from tests.oauth_fake import FakeTokenEndpoint

pytestmark = pytest.mark.server

#: Ten minutes left: inside the keeper's 15, outside Claude Code's own 5.
DUE = 600


@pytest.fixture
def oauth() -> Iterator[FakeTokenEndpoint]:
    with FakeTokenEndpoint(delay=0.2) as endpoint:
        yield endpoint


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlLoginStore]:
    database = Database(f"sqlite:///{tmp_path / 'ccgate.db'}")
    await database.migrate()
    yield SqlLoginStore(database)
    await database.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as made:
        yield made


def _file(path: Path, oauth: dict[str, Any], **other: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"claudeAiOauth": oauth, **other}))


def _oauth_in(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())["claudeAiOauth"]
    return data


class Hosts:
    """Keepers of replicas on machines of their own, sharing one database and one lease."""

    def __init__(
        self,
        root: Path,
        store: SqlLoginStore,
        oauth: FakeTokenEndpoint,
        client: httpx.AsyncClient,
        count: int = 3,
        *,
        leases: int = 1,
    ) -> None:
        #: The keepers' clock (Unix seconds), moved by tests.
        self.now = time.time()
        self.box = SecretBox(secrets.token_bytes(32))
        # Several leases: each keeper believes it holds the lock (a lease lost mid-refresh).
        self.leases = [LocalLease() for _ in range(leases)]
        self.lease = self.leases[0]
        self.paths = [root / f"host-{i}" / ".claude" / ".credentials.json" for i in range(count)]
        self._store, self._oauth, self._client = store, oauth, client
        self.keepers = [
            self.keeper(i, lock=self.leases[i % leases].lock(f"r{i}")) for i in range(count)
        ]

    def keeper(
        self,
        i: int,
        *,
        store: LoginStore | None = None,
        lock: RefreshLock | None = None,
        **options: Any,
    ) -> LoginKeeper:
        """Return a keeper of machine ``i`` (the shared store and lease unless given)."""
        return LoginKeeper(
            store or self._store,
            self.box,
            lock or self.lease.lock(f"r{i}"),
            OAuthTokenEndpoint(self._oauth.url, self._client),
            self.paths[i],
            replica=f"r{i}",
            clock=lambda: self.now,
            on_share=self._bus,
            **options,
        )

    async def stored(self, login: dict[str, Any]) -> None:
        """Store ``login`` in the database, as another replica would have."""
        sealed = self.box.seal(LoginCredentials.parse(login).dumps())
        await self._store.put("login", sealed, login["expiresAt"], by="elsewhere")

    async def _bus(self) -> None:
        """Stand for the replicas' bus: a stored login wakes every keeper."""
        for keeper in self.keepers:
            keeper.wake()

    async def round(self) -> list[float]:
        return list(await asyncio.gather(*(keeper.tick() for keeper in self.keepers)))


async def test_three_replicas_with_one_due_login_renew_it_once_and_all_get_it(
    tmp_path: Path,
    store: SqlLoginStore,
    oauth: FakeTokenEndpoint,
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "ccgate.accounts")
    hosts = Hosts(tmp_path, store, oauth, client)
    old = oauth.issue(expires_in=DUE)
    # The dangerous set-up: the same login copied to every machine, all due at once.
    for path in hosts.paths:
        _file(path, old, mcpOAuth={"server": "kept"})
    await hosts.round()
    await hosts.round()
    assert (oauth.refreshes, oauth.reused) == (1, 0)
    assert hosts.lease.taken == 1
    new = [_oauth_in(path) for path in hosts.paths]
    assert len({login["accessToken"] for login in new}) == 1
    assert new[0]["accessToken"] != old["accessToken"]
    assert new[0]["refreshToken"] != old["refreshToken"]
    assert new[0]["expiresAt"] > time.time() * 1000 + 7 * 3600 * 1000
    assert new[0]["subscriptionType"] == "max"  # what the keeper does not renew is kept
    for path in hosts.paths:
        assert json.loads(path.read_text())["mcpOAuth"] == {"server": "kept"}
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = await store.get("login")
    assert stored is not None and stored.expires_at == new[0]["expiresAt"]
    assert new[0]["accessToken"] not in stored.sealed  # encrypted at rest
    sent = oauth.requests[0]
    assert sent["client_id"] and sent["scope"] == "user:inference user:profile"
    # Nothing is due now: the next check is a normal one, and renews nothing.
    assert max(await hosts.round()) <= 30
    assert oauth.refreshes == 1
    text = caplog.text
    assert "login_refreshed" in text
    for token in (old["accessToken"], old["refreshToken"], new[0]["accessToken"]):
        assert token not in text


async def test_a_replica_granted_the_lock_late_takes_the_renewed_login(
    tmp_path: Path, store: SqlLoginStore, oauth: FakeTokenEndpoint, client: httpx.AsyncClient
) -> None:
    hosts = Hosts(tmp_path, store, oauth, client, count=2)
    old = oauth.issue(expires_in=DUE)
    for path in hosts.paths:
        _file(path, old)
    renewed = asyncio.Event()
    inner = hosts.lease.lock("r1")

    class Late:
        """r1's lock: granted only once r0 has renewed the login and let the lock go."""

        async def acquire(self) -> bool:
            await renewed.wait()
            return await inner.acquire()

        async def release(self) -> None:
            await inner.release()

    late = hosts.keeper(1, lock=Late())
    second = asyncio.create_task(late.tick())
    await hosts.keepers[0].tick()
    renewed.set()
    await second
    assert (oauth.refreshes, oauth.reused) == (1, 0)
    assert _oauth_in(hosts.paths[1]) == _oauth_in(hosts.paths[0]) != old


async def test_a_machine_without_a_login_gets_it_from_the_database(
    tmp_path: Path, store: SqlLoginStore, oauth: FakeTokenEndpoint, client: httpx.AsyncClient
) -> None:
    hosts = Hosts(tmp_path, store, oauth, client, count=2)
    fresh = oauth.issue()
    _file(hosts.paths[0], fresh)
    await hosts.keepers[0].tick()
    assert not hosts.paths[1].exists()
    await hosts.keepers[1].tick()
    assert _oauth_in(hosts.paths[1]) == fresh
    assert stat.S_IMODE(hosts.paths[1].parent.stat().st_mode) == 0o700
    assert oauth.refreshes == 0
    # A login renewed by `claude /login` on the second machine reaches the first.
    newer = oauth.issue(expires_in=9 * 3600)
    _file(hosts.paths[1], newer)
    await hosts.keepers[1].tick()
    await hosts.keepers[0].tick()
    assert _oauth_in(hosts.paths[0]) == newer


async def test_an_older_login_never_replaces_a_newer_one(
    tmp_path: Path, store: SqlLoginStore, oauth: FakeTokenEndpoint, client: httpx.AsyncClient
) -> None:
    hosts = Hosts(tmp_path, store, oauth, client, count=2)
    newer, older = oauth.issue(expires_in=9 * 3600), oauth.issue(expires_in=8 * 3600)
    _file(hosts.paths[0], newer)
    _file(hosts.paths[1], older)
    await hosts.round()
    await hosts.round()
    assert _oauth_in(hosts.paths[0]) == newer
    assert _oauth_in(hosts.paths[1]) == newer


async def test_a_refused_refresh_token_is_reported_and_tried_again_later(
    tmp_path: Path,
    store: SqlLoginStore,
    oauth: FakeTokenEndpoint,
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hosts = Hosts(tmp_path, store, oauth, client, count=1)
    spent = oauth.issue(expires_in=DUE)
    spent["refreshToken"] = "rt-never-issued"
    _file(hosts.paths[0], spent)
    assert 0 < await hosts.keepers[0].tick() <= 30
    assert "login_refresh_refused" in caplog.text and "claude /login" in caplog.text
    assert _oauth_in(hosts.paths[0]) == spent
    assert hosts.lease.holder is None  # released after the failure
    # Within FAILED_RETRY nothing is posted again.
    hosts.now += FAILED_RETRY - 1
    assert 0 < await hosts.keepers[0].tick() <= 30
    assert oauth.reused == 1
    hosts.now += 2
    await hosts.keepers[0].tick()
    assert oauth.reused == 2


async def test_after_a_failed_refresh_every_replica_waits_then_one_renews(
    tmp_path: Path,
    store: SqlLoginStore,
    oauth: FakeTokenEndpoint,
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hosts = Hosts(tmp_path, store, oauth, client, count=2)
    old = oauth.issue(expires_in=DUE)
    for path in hosts.paths:
        _file(path, old)
    oauth.fail = 1
    await hosts.keepers[0].tick()
    assert "login_refresh_failed" in caplog.text
    assert "login_refresh_refused" not in caplog.text
    # The other replica may take the lock now, but the failed attempt's claim holds it back.
    for _ in range(5):
        hosts.now += 10
        await hosts.round()
    assert len(oauth.requests) == 1
    hosts.now += FAILED_RETRY - 50 + 1
    await hosts.round()
    await hosts.round()
    assert (oauth.refreshes, oauth.reused, len(oauth.requests)) == (1, 0, 2)
    renewed = {_oauth_in(path)["accessToken"] for path in hosts.paths}
    assert len(renewed) == 1 and old["accessToken"] not in renewed


async def test_the_database_half_of_the_lock_holds_when_every_replica_has_the_lease(
    tmp_path: Path, store: SqlLoginStore, oauth: FakeTokenEndpoint, client: httpx.AsyncClient
) -> None:
    # Each keeper holds a lease of its own, as when one lost it while its refresh was in flight.
    hosts = Hosts(tmp_path, store, oauth, client, count=3, leases=3)
    old = oauth.issue(expires_in=DUE)
    for path in hosts.paths:
        _file(path, old)
    await hosts.round()
    await hosts.round()
    assert (oauth.refreshes, oauth.reused) == (1, 0)
    assert len({_oauth_in(path)["accessToken"] for path in hosts.paths}) == 1


class RefusingStore:
    """A login store whose database refuses the next ``refuse`` writes of a login."""

    def __init__(self, store: SqlLoginStore) -> None:
        self._store = store
        self.refuse = 0

    async def get(self, name: str) -> StoredLogin | None:
        return await self._store.get(name)

    async def put(
        self, name: str, sealed: str, expires_at: int, *, by: str, now: float | None = None
    ) -> bool:
        if self.refuse:
            self.refuse -= 1
            raise DatabaseBusy("the database stayed locked")
        return await self._store.put(name, sealed, expires_at, by=by, now=now)

    async def claim(
        self, name: str, expires_at: int, *, by: str, until: float, now: float | None = None
    ) -> bool:
        return await self._store.claim(name, expires_at, by=by, until=until, now=now)


async def test_a_renewal_the_database_refuses_keeps_the_lock_until_it_is_stored(
    tmp_path: Path, store: SqlLoginStore, oauth: FakeTokenEndpoint, client: httpx.AsyncClient
) -> None:
    hosts = Hosts(tmp_path, store, oauth, client, count=2)
    refusing = RefusingStore(store)
    keeper = hosts.keeper(0, store=refusing)
    old = oauth.issue(expires_in=DUE)
    for path in hosts.paths:
        _file(path, old)
    await hosts.stored(old)
    refusing.refuse = 2
    await keeper.tick()
    assert oauth.refreshes == 1
    assert hosts.lease.holder == "r0"  # kept: the database does not have the renewal
    renewed = _oauth_in(hosts.paths[0])  # the file has it
    hosts.now += FAILED_RETRY + 1  # even once the claim has lapsed
    await hosts.keepers[1].tick()
    assert (oauth.refreshes, oauth.reused) == (1, 0)  # r1 could not take the lock
    await keeper.tick()  # refused again
    assert hosts.lease.holder == "r0"
    await keeper.tick()  # stored now, and the lock let go
    assert hosts.lease.holder is None
    await hosts.keepers[1].tick()
    assert _oauth_in(hosts.paths[1]) == renewed
    assert (oauth.refreshes, oauth.reused) == (1, 0)


async def test_a_machine_whose_file_cannot_be_written_still_renews_for_the_others(
    tmp_path: Path,
    store: SqlLoginStore,
    oauth: FakeTokenEndpoint,
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hosts = Hosts(tmp_path, store, oauth, client, count=2)
    hosts.paths[0].mkdir(parents=True)  # a directory where the file should be
    old = oauth.issue(expires_in=DUE)
    await hosts.stored(old)
    await hosts.keepers[0].tick()
    assert oauth.refreshes == 1
    assert hosts.paths[0].is_dir()
    assert "login_file_unreadable" in caplog.text
    await hosts.keepers[1].tick()
    assert _oauth_in(hosts.paths[1])["accessToken"] != old["accessToken"]
    assert (oauth.refreshes, oauth.reused) == (1, 0)


async def test_a_due_login_never_overwrites_a_file_that_is_not_json(
    tmp_path: Path, store: SqlLoginStore, oauth: FakeTokenEndpoint, client: httpx.AsyncClient
) -> None:
    hosts = Hosts(tmp_path, store, oauth, client, count=1)
    old = oauth.issue(expires_in=DUE)
    await hosts.stored(old)
    hosts.paths[0].parent.mkdir(parents=True)
    hosts.paths[0].write_text("{half a file")
    await hosts.keepers[0].tick()
    assert oauth.refreshes == 1
    assert hosts.paths[0].read_text() == "{half a file"


async def test_an_unreadable_file_is_left_alone(
    tmp_path: Path,
    store: SqlLoginStore,
    oauth: FakeTokenEndpoint,
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hosts = Hosts(tmp_path, store, oauth, client, count=2)
    _file(hosts.paths[0], oauth.issue())
    await hosts.keepers[0].tick()
    hosts.paths[1].parent.mkdir(parents=True)
    hosts.paths[1].write_text("{not json")
    await hosts.keepers[1].tick()
    await hosts.keepers[1].tick()
    assert hosts.paths[1].read_text() == "{not json"
    assert caplog.text.count("login_file_unreadable") == 1


async def test_nothing_is_read_or_written_while_no_account_runs_on_the_login(
    tmp_path: Path, store: SqlLoginStore, oauth: FakeTokenEndpoint, client: httpx.AsyncClient
) -> None:
    hosts = Hosts(tmp_path, store, oauth, client, count=2)
    _file(hosts.paths[0], oauth.issue(expires_in=DUE))
    keeper = hosts.keeper(0, wanted=lambda: False)
    assert await keeper.tick() == 30
    assert await store.get("login") is None
    assert oauth.requests == []


async def test_a_login_sealed_with_another_key_is_reported_not_used(
    tmp_path: Path,
    store: SqlLoginStore,
    oauth: FakeTokenEndpoint,
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    other = SecretBox(secrets.token_bytes(32))
    await store.put(
        "login",
        other.seal(LoginCredentials.parse(oauth.issue(expires_in=9 * 3600)).dumps()),
        int((time.time() + 9 * 3600) * 1000),
        by="elsewhere",
    )
    hosts = Hosts(tmp_path, store, oauth, client, count=1)
    mine = oauth.issue()
    _file(hosts.paths[0], mine)
    await hosts.keepers[0].tick()
    assert "login_shared_unreadable" in caplog.text and "accounts_key" in caplog.text
    assert _oauth_in(hosts.paths[0]) == mine


async def test_the_endpoint_refuses_what_is_not_a_renewed_token(
    oauth: FakeTokenEndpoint, client: httpx.AsyncClient
) -> None:
    login = LoginCredentials.parse(oauth.issue())
    answers = [
        httpx.Response(200, json={"access_token": "", "expires_in": 60}),
        httpx.Response(200, json={"access_token": "a", "expires_in": 10**30}),
        httpx.Response(200, json={"access_token": "a", "expires_in": True}),
        httpx.Response(200, json={"access_token": "a", "expires_in": 60, "refresh_token": 5}),
        httpx.Response(200, content=b"[1, 2]"),
        httpx.Response(200, content=b"\xff\xfe"),
        httpx.Response(200, content=b"{" * 70_000),
        httpx.Response(503, content=b'{"error": "x\\ud800y\\n"}'),
    ]
    for answer in answers:
        fake = httpx.AsyncClient(transport=httpx.MockTransport(lambda _request, a=answer: a))
        with pytest.raises(LoginRefreshFailed) as failed:
            await OAuthTokenEndpoint("http://oauth.test/token", fake).refresh(login)
        assert not failed.value.refused
        assert login.refresh_token not in failed.value.message
        await fake.aclose()
    unpostable = LoginCredentials.parse({**dict(login.oauth), "refreshToken": "rt-\ud800"})
    with pytest.raises(LoginRefreshFailed, match="not text"):
        await OAuthTokenEndpoint(oauth.url, client).refresh(unpostable)
    nobody = OAuthTokenEndpoint("http://127.0.0.1:9/v1/oauth/token", client, timeout=2)
    with pytest.raises(LoginRefreshFailed, match="did not answer"):
        await nobody.refresh(login)


def test_a_login_is_parsed_strictly(tmp_path: Path) -> None:
    bad: object
    for bad in (
        None,
        [],
        {"accessToken": "a", "refreshToken": "r"},
        {"accessToken": "a", "refreshToken": "", "expiresAt": 1},
        {"accessToken": "a", "refreshToken": "r", "expiresAt": True},
        {"accessToken": "a", "refreshToken": "r", "expiresAt": "1"},
        {"accessToken": "a", "refreshToken": "r", "expiresAt": 10**30},
        {"accessToken": "a", "refreshToken": "r", "expiresAt": int(time.time() * 1000) * 1000},
    ):
        with pytest.raises(ValueError):
            LoginCredentials.parse(bad)
    path = tmp_path / ".credentials.json"
    assert read_login(path) == (None, True)
    path.write_text(json.dumps({"mcpOAuth": {}}))
    assert read_login(path) == (None, True)
    login = LoginCredentials.parse({"accessToken": "at-9", "refreshToken": "rt-7", "expiresAt": 5})
    write_login(path, login)
    assert read_login(path) == (login, True)
    assert "at-9" not in repr(login) and "rt-7" not in repr(login)
    assert json.loads(path.read_text())["mcpOAuth"] == {}
    assert [p.name for p in tmp_path.iterdir()] == [".credentials.json"]


def test_a_symlinked_credentials_file_is_written_where_it_points(tmp_path: Path) -> None:
    target = tmp_path / "secrets" / "claude.json"
    target.parent.mkdir()
    target.write_text(json.dumps({"other": 1}))
    link = tmp_path / ".claude" / ".credentials.json"
    link.parent.mkdir()
    link.symlink_to(target)
    login = LoginCredentials.parse({"accessToken": "at-1", "refreshToken": "rt-1", "expiresAt": 9})
    write_login(link, login)
    assert link.is_symlink()
    assert json.loads(target.read_text()) == {"other": 1, "claudeAiOauth": dict(login.oauth)}
    assert read_login(link) == (login, True)


def test_the_doctor_accepts_a_replica_whose_machine_has_no_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "claude"))
    for variable in ("CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    alone = checks.credentials(load_settings({"data_dir": str(tmp_path)}, {}))
    assert not alone.ok and "claude /login" in alone.detail
    replica = checks.credentials(
        load_settings({"data_dir": str(tmp_path), "redis_url": "redis://127.0.0.1:1/0"}, {})
    )
    assert replica.ok and "from the database" in replica.detail


def test_a_login_file_is_never_set_back_to_an_older_login(tmp_path: Path) -> None:
    path = tmp_path / ".credentials.json"
    newer = LoginCredentials.parse({"accessToken": "at-2", "refreshToken": "r", "expiresAt": 20})
    older = LoginCredentials.parse({"accessToken": "at-1", "refreshToken": "r", "expiresAt": 10})
    assert write_login(path, newer)
    assert not write_login(path, older)
    assert not write_login(path, newer)
    assert read_login(path) == (newer, True)
    path.write_text("[]")
    with pytest.raises(ValueError):
        write_login(path, newer)
    assert path.read_text() == "[]"


def test_the_token_url_is_https_unless_it_stays_on_this_machine(tmp_path: Path) -> None:
    def token_url(url: str) -> str:
        return load_settings(
            {"data_dir": str(tmp_path), "login_token_url": url}, {}
        ).login_token_url

    assert token_url("https://oauth.example.com/v1/oauth/token").startswith("https://")
    assert token_url("http://127.0.0.1:9000/v1/oauth/token").startswith("http://127.0.0.1")
    assert token_url("http://localhost/token").startswith("http://localhost")
    for refused in ("http://oauth.example.com/v1/oauth/token", "ftp://x/y", "https://a b/c"):
        with pytest.raises(ConfigError):
            token_url(refused)


async def test_running_keepers_see_a_new_login_in_a_file_and_wake_each_other(
    tmp_path: Path, store: SqlLoginStore, oauth: FakeTokenEndpoint, client: httpx.AsyncClient
) -> None:
    hosts = Hosts(tmp_path, store, oauth, client, count=2)
    running = [asyncio.create_task(keeper.run()) for keeper in hosts.keepers]
    try:
        await asyncio.sleep(0.5)  # each has looked once: no login anywhere, 30 s until the next
        fresh = oauth.issue()
        _file(hosts.paths[0], fresh)  # `claude /login` on the first machine
        started = time.monotonic()
        while not hosts.paths[1].exists() and time.monotonic() - started < 10:
            await asyncio.sleep(0.05)
        # Seen by its keeper within WATCH_EVERY, stored, and the other keeper woken at once.
        assert _oauth_in(hosts.paths[1]) == fresh
        assert time.monotonic() - started < WATCH_EVERY + 2
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    assert oauth.requests == []
