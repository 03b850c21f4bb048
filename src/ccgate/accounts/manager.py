"""The upstream accounts ccgate runs Claude Code with: added, changed, listed, and ready to run.

An account is a credential and where to use it:

- ``login``: Claude Code's own login (``claude /login`` as the user running
  ccgate); its config dirs see that login, no other account's do;
- ``oauth_token``: a long-lived token from ``claude setup-token``;
- ``api_key``: an Anthropic API key (billed per token; the upstream reports no
  plan for it).

Each may have a base URL of its own. Secrets are stored encrypted
(``accounts.secrets``) and shown only as a hint (``sk-ant-oat01…abcd``); no
answer, log line or other account's process ever gets one.

The credential of ccgate's settings (``upstream_api_key``, the operator's
``ANTHROPIC_API_KEY`` or ``CLAUDE_CODE_OAUTH_TOKEN``, else the login) is the
account named ``default`` (source ``settings``): it exists from the first start,
so a setup from before accounts keeps working unchanged. Its secret stays in the
settings and is never copied into the database; it can be disabled,
re-prioritised and reset like any other, but not removed.

:class:`Accounts` keeps the list in memory (the router asks for it on every new
conversation) and tells ``on_change`` listeners when it changed.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ccgate.accounts.meter import PlanMeter, PlanState
from ccgate.accounts.secrets import SecretBox, hint
from ccgate.errors import Conflict, InvalidRequest, NotFound
from ccgate.store.accounts import AccountExists, AccountRecord, AccountStore

__all__ = ["DEFAULT_NAME", "KINDS", "Accounts", "SettingsCredential", "Upstream"]

log = logging.getLogger("ccgate.accounts")

#: The account of the settings' credential.
DEFAULT_NAME = "default"
KINDS = ("login", "oauth_token", "api_key")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: A new API-key account's priority: after subscriptions, which it would otherwise
#: out-rank (it reports no plan, so it always looks empty).
API_KEY_PRIORITY = 100


@dataclass(frozen=True, slots=True)
class SettingsCredential:
    """The credential of ccgate's settings: its kind and secret (``None`` for a login)."""

    kind: str
    secret: str | None = None
    base_url: str | None = None

    def __repr__(self) -> str:
        return f"SettingsCredential(kind={self.kind!r})"


@dataclass(frozen=True, slots=True)
class Upstream:
    """An enabled account, ready to run: its secret in clear (never shown or logged)."""

    id: str
    name: str
    kind: str
    secret: str | None
    base_url: str | None
    priority: int
    source: str

    def __repr__(self) -> str:
        return f"Upstream(id={self.id!r}, name={self.name!r}, kind={self.kind!r})"


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid account name, else raise InvalidRequest."""
    if _NAME.fullmatch(name) is None:
        raise InvalidRequest(
            "name: an account name is 1 to 64 letters, digits, '.', '_' or '-', starting "
            f"with a letter or digit; got {ascii(name[:40])}",
            param="name",
        )
    return name


def _check_secret(kind: str, secret: str | None) -> str | None:
    if kind == "login":
        if secret:
            raise InvalidRequest(
                "secret: a login account has no secret (it uses `claude /login`)", param="secret"
            )
        return None
    if not secret or not secret.strip():
        what = "an OAuth token (claude setup-token)" if kind == "oauth_token" else "an API key"
        raise InvalidRequest(f"secret: a {kind} account needs {what}", param="secret")
    secret = secret.strip()
    if any(ord(ch) < 33 or ord(ch) > 126 for ch in secret):
        raise InvalidRequest(
            "secret: a credential is printable ASCII without spaces", param="secret"
        )
    if len(secret) > 4096:
        raise InvalidRequest("secret: longer than 4096 characters", param="secret")
    return secret


def _check_url(url: str | None) -> str | None:
    if url is None or url == "":
        return None
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", url) or len(url) > 2048:
        raise InvalidRequest(
            "base_url: an http(s) URL such as https://api.anthropic.com", param="base_url"
        )
    return url.rstrip("/")


class Accounts:
    """The accounts, their secrets and their plan state; see the module docstring."""

    def __init__(
        self,
        store: AccountStore,
        box: SecretBox,
        meter: PlanMeter,
        settings_credential: SettingsCredential,
    ) -> None:
        self._store = store
        self._box = box
        self.meter = meter
        self._settings = settings_credential
        self._records: list[AccountRecord] = []
        self._listeners: list[Callable[[], None]] = []
        self._saving: set[asyncio.Task[None]] = set()

    # -- reading ----------------------------------------------------------------------

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever accounts are added, changed or removed."""
        self._listeners.append(listener)

    def records(self) -> list[AccountRecord]:
        """Return every account as last loaded, lowest priority number first."""
        return list(self._records)

    def find(self, id_or_name: str) -> AccountRecord:
        """Return the account with that id or name, or raise NotFound."""
        for record in self._records:
            if id_or_name in (record.id, record.name):
                return record
        raise NotFound(f"no upstream account {id_or_name!r}; `ccgate accounts list` shows them")

    def upstreams(self) -> list[Upstream]:
        """Return the enabled accounts with their secrets, ready to run."""
        ready = []
        for record in self._records:
            if not record.enabled:
                continue
            if record.source == "settings":
                secret, base_url = self._settings.secret, record.base_url or self._settings.base_url
                kind = self._settings.kind
            else:
                secret = self._box.open(record.secret) if record.secret else None
                base_url, kind = record.base_url, record.kind
            ready.append(
                Upstream(
                    record.id, record.name, kind, secret, base_url, record.priority, record.source
                )
            )
        return ready

    def name_of(self, account_id: str) -> str:
        """Return an account's name (its id when it is gone)."""
        return next((r.name for r in self._records if r.id == account_id), account_id)

    def view(self, record: AccountRecord) -> dict[str, Any]:
        """Return what ``/admin/accounts`` and ``ccgate accounts`` show of one (no secret)."""
        state = self.meter.state(record.id)
        verdict = self.meter.verdict(record.id)
        kind = self._settings.kind if record.source == "settings" else record.kind
        return {
            "id": record.id,
            "name": record.name,
            "kind": kind,
            "source": record.source,
            "secret_hint": record.secret_hint,
            "base_url": record.base_url,
            "priority": record.priority,
            "enabled": record.enabled,
            "available": record.enabled and verdict.usable,
            "unavailable_reason": None if verdict.usable else verdict.reason,
            "headroom": round(verdict.headroom, 4),
            "plan": state.as_json(),
            "created_at": record.created_at,
        }

    # -- changing ---------------------------------------------------------------------

    async def load(self) -> None:
        """Read the accounts (making the settings' account on the first start) and their plans.

        Replicas starting at once on a new database may all try to make the
        settings' account: one does, the others find it made and read it.
        """
        records = await self._store.list_accounts()
        if not any(r.source == "settings" for r in records):
            name = DEFAULT_NAME
            taken = {r.name for r in records}
            while name in taken:
                name += "_"
            try:
                made = await self._store.create(
                    name,
                    self._settings.kind,
                    secret_hint=hint(self._settings.secret) if self._settings.secret else None,
                    source="settings",
                )
            except AccountExists:
                records = await self._store.list_accounts()
            else:
                records.append(made)
                log.info("account_created name=%s kind=%s source=settings", name, made.kind)
        if not any(r.source == "settings" for r in records):
            raise AccountExists(DEFAULT_NAME)  # made by hand in the meantime: say so at start
        else:
            ours = next(r for r in records if r.source == "settings")
            shown = hint(self._settings.secret) if self._settings.secret else None
            if ours.kind != self._settings.kind or ours.secret_hint != shown:
                await self._store.update(ours.id, kind=self._settings.kind, secret_hint=shown)
        await self._reload()
        for record in self._records:
            if record.plan:
                self.meter.load(record.id, PlanState.from_json(record.plan))

    async def add(
        self,
        name: str,
        kind: str,
        *,
        secret: str | None = None,
        base_url: str | None = None,
        priority: int | None = None,
        enabled: bool = True,
    ) -> AccountRecord:
        """Add an account; its secret is stored encrypted."""
        check_name(name)
        if kind not in KINDS:
            raise InvalidRequest(
                f"kind: one of {', '.join(KINDS)}; got {kind[:40]!r}", param="kind"
            )
        clear = _check_secret(kind, secret)
        if priority is None:
            priority = API_KEY_PRIORITY if kind == "api_key" else 0
        try:
            made = await self._store.create(
                name,
                kind,
                secret=self._box.seal(clear) if clear else None,
                secret_hint=hint(clear) if clear else None,
                base_url=_check_url(base_url),
                priority=priority,
                enabled=enabled,
            )
        except AccountExists as exc:
            raise Conflict(f"an upstream account named {name!r} exists") from exc
        log.info("account_created name=%s kind=%s", name, kind)
        await self._changed()
        return made

    async def update(self, id_or_name: str, **values: Any) -> AccountRecord:
        """Change an account's ``name``, ``priority``, ``enabled``, ``base_url`` or ``secret``."""
        record = self.find(id_or_name)
        changes: dict[str, Any] = {}
        if "name" in values and values["name"] is not None:
            changes["name"] = check_name(values["name"])
        if "priority" in values and values["priority"] is not None:
            changes["priority"] = int(values["priority"])
        if "enabled" in values and values["enabled"] is not None:
            changes["enabled"] = bool(values["enabled"])
        if "base_url" in values:
            changes["base_url"] = _check_url(values["base_url"])
        if values.get("secret") is not None:
            if record.source == "settings":
                raise InvalidRequest(
                    "secret: the default account's credential is ccgate's setting; change "
                    "the setting instead",
                    param="secret",
                )
            clear = _check_secret(record.kind, values["secret"])
            changes["secret"] = self._box.seal(clear) if clear else None
            changes["secret_hint"] = hint(clear) if clear else None
        try:
            updated = await self._store.update(record.id, **changes) if changes else record
        except AccountExists as exc:
            raise Conflict(f"an upstream account named {changes.get('name')!r} exists") from exc
        if updated is None:
            raise NotFound(f"no upstream account {id_or_name!r}")
        log.info("account_changed name=%s fields=%s", updated.name, ",".join(sorted(changes)))
        await self._changed()
        return updated

    async def remove(self, id_or_name: str) -> AccountRecord:
        """Remove an account (not the settings' one: disable that)."""
        record = self.find(id_or_name)
        if record.source == "settings":
            raise InvalidRequest(
                f"the account {record.name!r} is ccgate's own credential setting: disable it "
                "instead (`ccgate accounts disable`)",
                param="account",
            )
        await self._store.delete(record.id)
        self.meter.forget(record.id)
        log.info("account_removed name=%s", record.name)
        await self._changed()
        return record

    async def reset(self, id_or_name: str) -> AccountRecord:
        """End an account's cooldown now (a person knows it can serve again)."""
        record = self.find(id_or_name)
        self.meter.reset(record.id)
        log.info("account_reset name=%s", record.name)
        return record

    def save_plan(self, account_id: str, state: PlanState) -> None:
        """Store an account's plan state in the background (the meter's changes)."""
        task = asyncio.get_running_loop().create_task(self._save(account_id, state))
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)

    async def flush(self) -> None:
        """Wait for plan states being stored (at shutdown)."""
        if self._saving:
            await asyncio.wait(set(self._saving), timeout=5)

    async def _save(self, account_id: str, state: PlanState) -> None:
        try:
            await self._store.save_plan(account_id, state.as_json())
        except Exception:  # noqa: BLE001 - the meter keeps it; the next change stores it
            log.warning("account_plan_not_saved account=%s", account_id, exc_info=True)

    async def refresh(self) -> None:
        """Adopt what another process changed (``ccgate accounts ...`` beside the server)."""
        before = [
            (r.id, r.name, r.kind, r.secret, r.base_url, r.priority, r.enabled)
            for r in self._records
        ]
        await self._reload()
        after = [
            (r.id, r.name, r.kind, r.secret, r.base_url, r.priority, r.enabled)
            for r in self._records
        ]
        for record in self._records:
            stored = PlanState.from_json(record.plan) if record.plan else None
            known = self.meter.state(record.id).reset_at or 0.0
            if stored is not None and stored.reset_at and stored.reset_at > known:
                self.meter.reset(record.id)
        if before != after:
            for listener in self._listeners:
                listener()

    async def _reload(self) -> None:
        self._records = await self._store.list_accounts()

    async def _changed(self) -> None:
        await self._reload()
        for listener in self._listeners:
            listener()
