"""Keep Claude Code's login fresh on every replica, renewed by one replica at a time.

A Claude Code login (``claude /login``) is an OAuth access token that expires
within hours and a refresh token that works once. Claude Code renews it by
itself, inside the CLI, five minutes before it expires. On one machine that is
fine; on several, each machine's CLIs would spend their own copy of the one
refresh token, and every machine but the first would be signed out.

With replicas (``redis_url``) every replica runs a :class:`LoginKeeper`
instead, which keeps the login in the shared database and renews it before
Claude Code would:

- **Sharing.** Each check compares three copies: the login file Claude Code
  reads on this machine (``~/.claude/.credentials.json``, or under
  ``CLAUDE_CONFIG_DIR``), the copy in the database (:mod:`ccgate.store.logins`,
  encrypted like an account's secret) and the last one this keeper held. The
  one that expires last wins: it is stored in the database when that holds an
  older one, and written to the file when the file holds an older one or none
  (so a machine that never ran ``claude /login`` gets the login too). A login
  renewed anywhere, by ccgate or by a ``claude /login``, reaches every replica
  within seconds: a keeper looks at its file's stamp every ``WATCH_EVERY``
  seconds, and one that stores a newer login wakes the others (``on_share``);
  each checks everything every ``CHECK_EVERY`` seconds anyway. Claude Code
  notices that its login file changed and reads it again.
- **Renewing.** ``REFRESH_BEFORE`` (15 minutes) before the access token
  expires, the keeper that takes the lock (:class:`RefreshLock`, a lease in
  Redis) reads the database again (another replica may just have renewed it)
  and claims the renewal in the database (``LoginStore.claim``: granted only
  while the stored login is still the one it read, and no other claim on it
  lasts). Only then does it post the refresh token to the OAuth token endpoint
  (:class:`OAuthTokenEndpoint`), so two replicas never post the same one, even
  when a lease was lost mid-refresh. The renewed login goes to the database
  first (while the database refuses it, this replica keeps the lock), then to
  the file; the other replicas are woken to take it (``on_share``: a message
  on the replicas' bus), or take it at their next check at the latest. Claude
  Code's own renewal (five minutes before expiry) is never reached while a
  replica can renew. A keeper that does not get the lock looks again after
  ``BUSY_RETRY`` seconds.
- **Failures.** A failed refresh is logged (``login_refresh_failed``, or
  ``login_refresh_refused`` when the endpoint says the refresh token is no
  longer valid: then one ``claude /login`` on any replica's machine brings
  every replica back). Its claim stands for ``FAILED_RETRY`` seconds, so no
  replica tries again before then. A credentials file that is not a JSON
  object is never written. No token is ever logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from ccgate.accounts.secrets import SecretBox
from ccgate.cluster.replicas import Replicas
from ccgate.errors import ConfigError, LoginRefreshFailed
from ccgate.store.logins import LoginStore

__all__ = [
    "BUSY_RETRY",
    "CHECK_EVERY",
    "CLIENT_ID",
    "FAILED_RETRY",
    "REFRESH_BEFORE",
    "WATCH_EVERY",
    "LoginCredentials",
    "LoginKeeper",
    "OAuthTokenEndpoint",
    "RefreshLock",
    "ReplicaLock",
    "TokenEndpoint",
    "read_login",
    "write_login",
]

log = logging.getLogger("ccgate.accounts")

#: Seconds before its access token expires that a login is renewed (Claude Code: 300).
REFRESH_BEFORE = 15 * 60.0
#: Seconds between two checks of the login (file and database).
CHECK_EVERY = 30.0
#: Seconds between two looks at whether this machine's credentials file changed.
WATCH_EVERY = 2.0
#: Seconds before a keeper that did not get the refresh lock looks again.
BUSY_RETRY = 2.0
#: Seconds a replica's claim on a renewal lasts (longer than a refresh may take), so also how
#: long every replica waits after a failed refresh before the next attempt.
FAILED_RETRY = 60.0
#: The latest expiry a login may have (Unix time from now): Claude Code's logins last hours.
_MAX_LIFETIME = 90 * 86_400.0
#: Claude Code's public OAuth client id, as the CLI sends it (its token endpoint is the
#: ``login_token_url`` setting's default).
CLIENT_ID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
#: The name of the operator's login in the database.
NAME = "login"
#: The key of the OAuth login in Claude Code's credentials file.
_FIELD = "claudeAiOauth"
#: The longest answer from the token endpoint that is read.
_MAX_ANSWER = 64 * 1024


@dataclass(frozen=True, slots=True)
class LoginCredentials:
    """Claude Code's ``claudeAiOauth`` object: tokens, expiry, and what else the CLI keeps."""

    oauth: Mapping[str, Any]

    @classmethod
    def parse(cls, value: object) -> LoginCredentials:
        """Return the login in ``value`` (a ``claudeAiOauth`` object); ValueError if it is none."""
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        for field in ("accessToken", "refreshToken"):
            token = value.get(field)
            if not isinstance(token, str) or not token:
                raise ValueError(f"no {field}")
        expires = value.get("expiresAt")
        if isinstance(expires, bool) or not isinstance(expires, int) or expires <= 0:
            raise ValueError("no expiresAt (Unix milliseconds)")
        if expires > (time.time() + _MAX_LIFETIME) * 1000:
            raise ValueError("expiresAt is more than 90 days away (not Unix milliseconds?)")
        return cls(dict(value))

    @property
    def access_token(self) -> str:
        """The access token the CLI sends upstream."""
        return str(self.oauth["accessToken"])

    @property
    def refresh_token(self) -> str:
        """The refresh token that renews it (once)."""
        return str(self.oauth["refreshToken"])

    @property
    def expires_at(self) -> int:
        """When the access token expires, in Unix milliseconds."""
        return int(self.oauth["expiresAt"])

    def renewed(
        self, access_token: str, expires_in: float, refresh_token: str | None, scope: str | None
    ) -> LoginCredentials:
        """Return this login with a refresh's answer (``expires_in`` seconds from now)."""
        oauth = dict(self.oauth)
        oauth["accessToken"] = access_token
        oauth["expiresAt"] = int((time.time() + expires_in) * 1000)
        if refresh_token:
            oauth["refreshToken"] = refresh_token
        if scope:
            oauth["scopes"] = scope.split()
        return LoginCredentials(oauth)

    def dumps(self) -> str:
        """Return the ``claudeAiOauth`` object as JSON."""
        return json.dumps(dict(self.oauth), separators=(",", ":"))

    def __repr__(self) -> str:
        return f"LoginCredentials(expires_at={self.expires_at})"


def read_login(path: Path) -> tuple[LoginCredentials | None, bool]:
    """Return the login in Claude Code's credentials file, and whether ccgate may write it.

    A missing file is writable and holds no login; a file that is not a JSON object is
    left alone (``False``), as ccgate cannot keep what else it holds.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, True
    except (OSError, UnicodeDecodeError):
        return None, False
    try:
        data = json.loads(text)
    except ValueError:
        return None, False
    if not isinstance(data, dict):
        return None, False
    try:
        return LoginCredentials.parse(data.get(_FIELD)), True
    except ValueError:
        return None, True


def write_login(path: Path, login: LoginCredentials) -> bool:
    """Put ``login`` into Claude Code's credentials file, keeping its other entries; say
    whether it was written (not when the file already holds a login as new or newer).

    Written to a new file (mode 0600) that then replaces the old one, so a CLI reading it
    sees the old login or the new one, never half of either. A symlinked file is written
    where the link points, and the link stays. A file that is not a JSON object raises
    ValueError: ccgate does not replace what it cannot keep.
    """
    path = path.resolve()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    with contextlib.suppress(ValueError):
        if LoginCredentials.parse(data.get(_FIELD)).expires_at >= login.expires_at:
            return False
    data[_FIELD] = dict(login.oauth)
    temporary = path.with_name(f".{path.name}.ccgate-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, separators=(",", ":"))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return True


class TokenEndpoint(Protocol):
    """Renews a login with its refresh token.

    Contract: ``refresh`` spends ``login``'s refresh token once and returns the renewed
    login (its other fields kept), or raises :class:`LoginRefreshFailed` (``refused`` when
    the refresh token is no longer valid). It never logs or raises a token.
    """

    async def refresh(self, login: LoginCredentials) -> LoginCredentials:
        """Return ``login`` renewed."""
        ...


class OAuthTokenEndpoint:
    """A :class:`TokenEndpoint` over HTTP: the ``refresh_token`` grant, as Claude Code sends it."""

    def __init__(self, url: str, client: httpx.AsyncClient, *, timeout: float = 20.0) -> None:
        self._url = url
        self._client = client
        self._timeout = timeout

    async def refresh(self, login: LoginCredentials) -> LoginCredentials:
        """Post the refresh token; return the renewed login."""
        client_id = login.oauth.get("clientId")
        body: dict[str, str] = {
            "grant_type": "refresh_token",
            "refresh_token": login.refresh_token,
            "client_id": client_id if isinstance(client_id, str) and client_id else CLIENT_ID,
        }
        scopes = login.oauth.get("scopes")
        if isinstance(scopes, list) and scopes and all(isinstance(s, str) for s in scopes):
            body["scope"] = " ".join(scopes)
        try:
            status, content = await self._post(body)
        except httpx.HTTPError as exc:
            raise LoginRefreshFailed(
                f"the OAuth token endpoint did not answer ({type(exc).__name__})"
            ) from None
        except UnicodeError:
            raise LoginRefreshFailed("the login holds a token that is not text") from None
        answer = _json_object(content)
        if status != 200:
            error = _printable(answer.get("error")) if answer else ""
            refused = status in (400, 401) and error in ("", "invalid_grant")
            raise LoginRefreshFailed(
                f"the OAuth token endpoint answered {status}" + (f" {error}" if error else ""),
                refused=refused,
            )
        access = answer.get("access_token") if answer else None
        expires_in = answer.get("expires_in") if answer else None
        refresh = answer.get("refresh_token") if answer else None
        scope = answer.get("scope") if answer else None
        if (
            not isinstance(access, str)
            or not access
            or isinstance(expires_in, bool)
            or not isinstance(expires_in, int | float)
            or not 0 < expires_in <= _MAX_LIFETIME
            or not isinstance(refresh, str | None)
            or not isinstance(scope, str | None)
        ):
            raise LoginRefreshFailed("the OAuth token endpoint's answer is not a renewed token")
        return login.renewed(access, float(expires_in), refresh, scope)

    async def _post(self, body: dict[str, str]) -> tuple[int, bytes | None]:
        """Post ``body``; return the status and the answer (``None`` when over the limit)."""
        content = b""
        async with self._client.stream(
            "POST", self._url, json=body, timeout=self._timeout
        ) as response:
            async for chunk in response.aiter_bytes():
                content += chunk
                if len(content) > _MAX_ANSWER:
                    return response.status_code, None
            return response.status_code, content


def _json_object(content: bytes | None) -> dict[str, Any] | None:
    if content is None:
        return None
    try:
        data = json.loads(content)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _printable(value: object) -> str:
    if not isinstance(value, str):
        return ""
    return "".join(ch for ch in value[:64] if ch.isalnum() or ch in "_-.")


class RefreshLock(Protocol):
    """Lets one replica at a time renew the login.

    Contract: ``acquire`` returns at once: ``True`` when this replica now holds the lock
    (or already did), ``False`` when another live replica holds it. A holder that dies
    loses it within seconds. ``release`` gives it up (nothing when not held).
    """

    async def acquire(self) -> bool:
        """Take the lock if it is free; say whether this replica holds it."""
        ...

    async def release(self) -> None:
        """Give the lock up."""
        ...


class ReplicaLock:
    """A :class:`RefreshLock` over a replicas' lease (``lease:login:<name>`` in Redis)."""

    def __init__(self, replicas: Replicas, name: str = NAME) -> None:
        self._replicas = replicas
        self._name = name

    async def acquire(self) -> bool:
        """Take the lease if it is free; say whether this replica holds it."""
        return await self._replicas.claim("login", self._name) is None

    async def release(self) -> None:
        """Give the lease up."""
        await self._replicas.release("login", self._name)


class LoginKeeper:
    """Share the login between replicas and renew it on one of them; see the module docstring.

    ``path``: this machine's Claude Code credentials file; ``replica``: who stores what
    (logged, and kept in the database); ``wanted``: whether an enabled account runs on the
    login (when not, nothing is read or renewed); ``on_share``: called after this replica
    stored a newer login in the database (to wake the others).
    """

    def __init__(
        self,
        store: LoginStore,
        box: SecretBox,
        lock: RefreshLock,
        endpoint: TokenEndpoint,
        path: Path,
        *,
        replica: str,
        wanted: Callable[[], bool] = lambda: True,
        on_share: Callable[[], Awaitable[None]] | None = None,
        refresh_before: float = REFRESH_BEFORE,
        every: float = CHECK_EVERY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._box = box
        self._lock = lock
        self._endpoint = endpoint
        self.path = path
        self._replica = replica
        self._wanted = wanted
        self._on_share = on_share
        self._woken = asyncio.Event()
        self._refresh_before = refresh_before
        self._every = every
        self._clock = clock
        #: The newest login this keeper saw (kept when neither file nor database could be).
        self._held: LoginCredentials | None = None
        #: A login this replica renewed that the database has not taken yet: until it has,
        #: this replica keeps the lock, so no other replica posts the spent refresh token.
        self._unshared: LoginCredentials | None = None
        self._attempted = float("-inf")  # when this replica last posted a refresh token
        self._told: set[str] = set()

    def wake(self) -> None:
        """Check again now (the accounts changed, or another replica shared a login)."""
        self._woken.set()

    async def run(self) -> None:
        """Check the login until cancelled: after each check's delay, or at once when woken
        or when this machine's credentials file changed (looked at every ``WATCH_EVERY`` s)."""
        while True:
            self._woken.clear()
            seen = self._stamp()
            try:
                delay = await self.tick()
            except Exception:  # noqa: BLE001 - a database or Redis hiccup: look again later
                log.warning("login_check_failed", exc_info=True)
                delay = self._every
            deadline = time.monotonic() + delay
            while (left := deadline - time.monotonic()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._woken.wait(), min(left, WATCH_EVERY))
                if self._woken.is_set() or self._stamp() != seen:
                    break

    def _stamp(self) -> tuple[int, int] | None:
        """Return what tells whether the credentials file changed (its mtime and size)."""
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    async def tick(self) -> float:
        """Check the login once: share the newest copy, renew it when due; return the seconds
        until the next check (at most ``every``)."""
        if self._unshared is not None:
            if not await self._store_safely(self._unshared):
                return BUSY_RETRY
            self._unshared = None
            await self._lock.release()
        if not self._wanted():
            return self._every
        local, writable = read_login(self.path)
        self._note("login_file_unreadable", not writable, f"path={self.path}")
        stored = await self._shared()
        best = _newest(local, stored, self._held)
        self._note(
            "login_missing", best is None, f"path={self.path} (run `claude /login` on one machine)"
        )
        if best is None:
            return self._every
        self._held = best
        if _older(stored, best):
            await self._put(best)
        if writable and _older(local, best):
            await self._write(best)
        wait = best.expires_at / 1000 - self._refresh_before - self._clock()
        if wait > 0:
            return min(self._every, wait)
        since = self._clock() - self._attempted
        if 0 <= since < FAILED_RETRY:  # (a clock set back does not hold renewals back)
            return min(self._every, FAILED_RETRY - since)
        return await self._renew(best, writable)

    async def _renew(self, best: LoginCredentials, writable: bool) -> float:
        """Renew ``best`` under the lock and the database's claim; return the next delay."""
        if not await self._lock.acquire():
            return BUSY_RETRY
        release = True
        try:
            stored = await self._shared()
            if stored is not None and stored.expires_at > best.expires_at:
                # Another replica renewed it while this one waited for the lock.
                self._held = stored
                if writable:
                    await self._write(stored)
                return self._every
            now = self._clock()
            claimed = await self._store.claim(
                NAME, best.expires_at, by=self._replica, until=now + FAILED_RETRY, now=now
            )
            if not claimed:
                # Another replica renews it now, or failed to within FAILED_RETRY seconds.
                return min(self._every, FAILED_RETRY)
            self._attempted = now
            try:
                renewed = await self._endpoint.refresh(best)
            except LoginRefreshFailed as exc:
                if exc.refused:
                    log.error(
                        "login_refresh_refused error=%r: the login's refresh token is no "
                        "longer valid; run `claude /login` on one replica's machine",
                        exc.message,
                    )
                else:
                    log.warning(
                        "login_refresh_failed error=%r retry_in=%.0fs", exc.message, FAILED_RETRY
                    )
                # The claim stands until it lapses: every replica waits as long.
                return min(self._every, FAILED_RETRY)
            self._held = renewed
            lifetime = renewed.expires_at / 1000 - self._clock()
            log.info("login_refreshed expires_in=%.0fs replica=%s", lifetime, self._replica)
            if lifetime <= self._refresh_before:
                log.warning(
                    "login_lifetime_short expires_in=%.0fs: renewed again within a minute",
                    lifetime,
                )
            if not await self._store_safely(renewed):
                self._unshared = renewed
                release = False
            if writable:
                await self._write(renewed)
            return self._every if release else BUSY_RETRY
        finally:
            if release:
                await self._lock.release()

    async def _shared(self) -> LoginCredentials | None:
        stored = await self._store.get(NAME)
        if stored is None:
            return None
        problem = ""
        try:
            login = LoginCredentials.parse(json.loads(self._box.open(stored.sealed)))
        except ConfigError as exc:
            problem = exc.message
        except ValueError:
            problem = "not a login"
        self._note("login_shared_unreadable", bool(problem), f"error={problem!r}")
        return None if problem else login

    async def _put(self, login: LoginCredentials) -> None:
        """Store ``login`` in the database (kept there only if it is the newest)."""
        sealed = self._box.seal(login.dumps())
        if await self._store.put(NAME, sealed, login.expires_at, by=self._replica):
            log.info("login_shared expires_at=%d replica=%s", login.expires_at, self._replica)
            if self._on_share is not None:
                await self._on_share()

    async def _store_safely(self, login: LoginCredentials) -> bool:
        try:
            await self._put(login)
        except Exception:  # noqa: BLE001 - kept, and tried again at the next check
            log.warning("login_share_failed", exc_info=True)
            return False
        return True

    async def _write(self, login: LoginCredentials) -> None:
        """Put ``login`` into this machine's file; a file that cannot be written is noted."""
        try:
            written = await asyncio.to_thread(write_login, self.path, login)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not a JSON object"
            self._note("login_file_unwritable", True, f"path={self.path} error={reason!r}")
            return
        self._note("login_file_unwritable", False, "")
        if written:
            log.info("login_written path=%s expires_at=%d", self.path, login.expires_at)

    def _note(self, event: str, happening: bool, detail: str) -> None:
        """Log ``event`` when it starts happening, once until it stops."""
        if not happening:
            self._told.discard(event)
        elif event not in self._told:
            log.warning("%s %s", event, detail)
            self._told.add(event)


def _older(copy: LoginCredentials | None, than: LoginCredentials) -> bool:
    return copy is None or copy.expires_at < than.expires_at


def _newest(*logins: LoginCredentials | None) -> LoginCredentials | None:
    found = [login for login in logins if login is not None]
    return max(found, key=lambda login: login.expires_at) if found else None
