"""``ccgate accounts add|list|show|enable|disable|set|reset|rm``: the upstream accounts.

The commands work on the database directly, beside a running server or without
one; a running server adopts what they changed within a few seconds
(``Accounts.refresh``). A secret is never taken as an argument, where it would
land in the shell's history and in ``ps``: it is read from standard input
(``--secret-stdin``, prompted without echo on a terminal) or from an environment
variable (``--secret-env VAR``). It is stored encrypted, and no command prints
it: only its hint (``sk-ant-oat01…abcd``).
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from ccgate.accounts.manager import Accounts, SettingsCredential
from ccgate.accounts.meter import PlanMeter, PlanState, when
from ccgate.accounts.plan import WINDOW_LABELS
from ccgate.accounts.secrets import SecretBox
from ccgate.cli.keys import fail, format_time, print_json, print_table, printable
from ccgate.config import Settings
from ccgate.errors import ConfigError, Conflict, InvalidRequest, NotFound
from ccgate.gateway import DEMO_KEY, settings_credential
from ccgate.protocol.admin import PRIORITY_MAX, PRIORITY_MIN, account_object, accounts_list
from ccgate.store.accounts import SqlAccountStore
from ccgate.store.database import Database

__all__ = ["AccountRequest", "open_accounts", "read_secret", "run_accounts"]

#: What a running server needs to adopt a change made here (its bookkeeping interval).
ADOPTED = "a running ccgate adopts it within 5 s"
_NO_ARGUMENT = (
    "a secret is not taken as an argument (it would be kept in the shell's history and "
    "shown by ps): pipe it in with --secret-stdin, or name an environment variable that "
    "holds it with --secret-env VAR"
)


@dataclass(frozen=True, slots=True)
class AccountRequest:
    """What one ``ccgate accounts`` command was asked (the parsed flags)."""

    action: str
    name: str | None = None
    kind: str | None = None
    new_name: str | None = None
    base_url: str | None = None
    priority: int | None = None
    disabled: bool = False
    secret_stdin: bool = False
    secret_env: str | None = None
    #: A secret given as a plain argument (``--secret``): refused, never used or shown.
    plain_secret: bool = False
    as_json: bool = False


def read_secret(request: AccountRequest, environ: Mapping[str, str], stdin: TextIO) -> str | None:
    """Return the secret ``--secret-stdin`` or ``--secret-env`` gives (``None``: neither).

    Raises InvalidRequest when it is asked for and missing; the message never holds it.
    """
    if request.plain_secret:
        raise InvalidRequest(_NO_ARGUMENT)
    if request.secret_stdin and request.secret_env is not None:
        raise InvalidRequest("give the secret one way: --secret-stdin or --secret-env VAR")
    if request.secret_env is not None:
        value = environ.get(request.secret_env)
        if value is None or not value.strip():
            raise InvalidRequest(
                f"--secret-env: the environment variable {printable(request.secret_env)!r} "
                "is not set or empty"
            )
        return value.strip()
    if request.secret_stdin:
        if stdin.isatty():
            value = getpass.getpass("secret (not echoed): ", stream=sys.stderr)
        else:
            value = stdin.read(65_536)
        if not value.strip():
            raise InvalidRequest("--secret-stdin: nothing was read from standard input")
        return value.strip()
    return None


def _settings_box(settings: Settings) -> SecretBox:
    if settings.accounts_key is not None:
        return SecretBox.from_setting(settings.accounts_key.get_secret_value())
    data = settings.data_path
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    return SecretBox.from_data_dir(data)


async def open_accounts(
    settings: Settings,
    database: Database,
    environ: Mapping[str, str],
    box: SecretBox | None = None,
) -> Accounts:
    """Return the accounts of ``database`` as the server sees them, loaded.

    On the first start (no ``default`` account yet) the settings' credential is
    read as the server would read it. Later, the stored ``default`` account is
    taken as the server last described it: this command's environment (which may
    lack the server's ``CLAUDE_CODE_OAUTH_TOKEN``) does not rewrite it.
    """
    store = SqlAccountStore(database)
    stored = await store.list_accounts()
    ours = next((r for r in stored if r.source == "settings"), None)
    holder: list[Accounts] = []

    def save(account: str, state: PlanState, news: tuple[str, ...]) -> None:
        holder[0].save_plan(account, state)

    meter = PlanMeter(allow_extra_usage=settings.allow_extra_usage, on_change=save)
    box = box or _settings_box(settings)
    if ours is None:
        key = settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None
        if settings.demo:
            key = DEMO_KEY
        credential = settings_credential(key, settings.upstream_url, environ)
    else:
        credential = SettingsCredential(ours.kind, None, ours.base_url)
    accounts = Accounts(store, box, meter, credential)
    holder.append(accounts)
    if ours is None:
        await accounts.load()
    else:
        for record in stored:
            if record.plan:
                meter.load(record.id, PlanState.from_json(record.plan))
        await accounts.refresh()
    return accounts


def _check_box(accounts: Accounts, box: SecretBox, settings: Settings) -> None:
    """Refuse to seal a secret with a key that cannot open the ones already stored (this
    command run with another data dir or ``accounts_key`` than the server's)."""
    stored = next((r.secret for r in accounts.records() if r.secret), None)
    if stored is None:
        return
    try:
        box.open(stored)
    except ConfigError:
        where = (
            "the accounts_key setting"
            if settings.accounts_key is not None
            else f"{settings.data_path / 'accounts.key'}"
        )
        raise ConfigError(
            f"the account key of this command ({where}) cannot open the secrets already "
            "stored: run it with the server's data dir and accounts_key (--data-dir, "
            "--config or CCGATE_*), or the server could not read this secret"
        ) from None


def _percent(value: Any) -> str:
    return f"{value:.0%}" if isinstance(value, int | float) else "-"


def _windows(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    reading = view["plan"].get("reading") or {}
    return {w["name"]: w for w in reading.get("windows") or []}


def _window_cell(window: dict[str, Any] | None) -> str:
    if window is None:
        return "-"
    used = _percent(window.get("utilization"))
    if window.get("status") == "rejected":
        used += " used up"
    elif window.get("status") == "warning":
        used += " (warning)"
    resets = window.get("resets_at")
    return f"{used}, resets {format_time(resets)}" if resets is not None else used


def _state(view: dict[str, Any]) -> str:
    if not view["enabled"]:
        return "disabled"
    if view["available"]:
        return "available"
    cooldown = view["plan"].get("cooldown")
    if cooldown is not None:
        return f"cooling until {format_time(cooldown['until'])}"
    return "unavailable"


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _print_list(body: dict[str, Any]) -> None:
    views = body["data"]
    rows = []
    for view in views:
        windows = _windows(view)
        has_plan = bool(view["plan"].get("reading"))
        rows.append(
            [
                view["name"],
                view["kind"],
                _yes(view["enabled"]),
                _state(view),
                _window_cell(windows.get("five_hour")),
                _window_cell(windows.get("seven_day")),
                _percent(view["headroom"]) if has_plan else "-",
                str(view["priority"]),
                view["unavailable_reason"] or "",
            ]
        )
    headers = [
        "NAME",
        "KIND",
        "ENABLED",
        "STATE",
        "5-HOUR (RESETS UTC)",
        "7-DAY (RESETS UTC)",
        "HEADROOM",
        "PRIORITY",
        "REASON",
    ]
    print_table(headers, rows, right=(6, 7))
    summary = body["summary"]
    print()
    if summary["next_account"] is not None:
        print(
            f"{summary['available']} of {summary['accounts']} accounts can serve; a new "
            f"conversation goes to {printable(summary['next_account'])!r} "
            f"(routing: {summary['routing']})"
        )
    else:
        print(f"no account can serve now: {printable(summary['unavailable_reason'] or '')}")
    if any(v["kind"] == "api_key" for v in views):
        print("API-key accounts report no plan: their windows and headroom show '-'.")


#: Where a reading came from, as people say it.
_SOURCES = {"answer": "an answer", "refusal": "a refusal", "probe": "a probe request"}


def _time(stamp: float | None) -> str:
    return f"{format_time(stamp)} UTC" if stamp is not None else "-"


def _print_show(view: dict[str, Any]) -> None:
    plan = view["plan"]
    source = "ccgate's own credential setting" if view["source"] == "settings" else "added"
    print(f"account {printable(view['name'])} ({view['id']})")
    print(f"  kind:          {view['kind']} ({source})")
    print(f"  secret:        {printable(view['secret_hint'] or '-')}")
    base = view["base_url"] or "- (the upstream_url setting, else Anthropic's)"
    print(f"  base URL:      {printable(base)}")
    print(f"  priority:      {view['priority']}")
    print(f"  enabled:       {_yes(view['enabled'])}")
    state = _state(view)
    if view["unavailable_reason"]:
        state += f": {view['unavailable_reason']}"
    print(f"  state:         {printable(state)}")
    reading = plan.get("reading")
    print(f"  headroom:      {_percent(view['headroom']) if reading else '-'}")
    print(f"  created:       {_time(view['created_at'])}")
    cooldown = plan.get("cooldown")
    if cooldown is not None:
        print(
            f"  cooldown:      until {_time(cooldown['until'])} ({cooldown['limit']}): "
            f"{printable(cooldown['reason'])}"
        )
    for label, field in (
        ("last success", "last_success"),
        ("last refusal", "last_refusal"),
        ("last reset", "reset_at"),
        ("extra usage", "extra_usage_at"),
    ):
        if plan.get(field) is not None:
            print(f"  {label + ':':<14} {_time(plan[field])}")
    if reading is None:
        what = (
            "an API key reports no plan"
            if view["kind"] == "api_key"
            else "no reading yet (the next answer of this account brings one)"
        )
        print(f"plan: {what}")
        return
    source = _SOURCES.get(reading["source"], reading["source"])
    print(f"plan (read {_time(reading['observed_at'])}, from {source}):")
    binding = reading.get("binding")
    status = reading["status"]
    if binding:
        status += f", bound by the {WINDOW_LABELS.get(binding, binding)} window"
    if reading.get("resets_at") is not None:
        status += f" until {when(reading['resets_at'])}"
    print(f"  status:        {status}")
    for window in reading.get("windows") or []:
        label = window.get("label") or window["name"]
        line = f"{_percent(window.get('utilization'))} {window['status']}"
        if window.get("resets_at") is not None:
            line += f", resets {_time(window['resets_at'])}"
        print(f"  {label + ':':<14} {line}")
    overage = reading.get("overage") or {}
    if overage.get("status") is None:
        extra = "not reported"
    else:
        extra = overage["status"]
        if overage.get("disabled_reason"):
            extra += f" ({overage['disabled_reason']})"
        if overage.get("resets_at") is not None:
            extra += f", resets {_time(overage['resets_at'])}"
    print(f"  {'extra usage:':<14} {printable(extra)}")
    if reading.get("error_code"):
        print(f"  {'error code:':<14} {printable(reading['error_code'])}")


def _done(accounts: Accounts, record_name: str, message: str, as_json: bool) -> int:
    if as_json:
        print_json(account_object(accounts.view(accounts.find(record_name))))
    else:
        print(message)
    return 0


async def _act(
    accounts: Accounts,
    settings: Settings,
    request: AccountRequest,
    secret: str | None,
    box: SecretBox,
) -> int:
    action, name, as_json = request.action, request.name or "", request.as_json
    if action == "list":
        body = accounts_list(
            accounts,
            order=settings.account_routing,
            allow_extra_usage=settings.allow_extra_usage,
        )
        if as_json:
            print_json(body)
        else:
            _print_list(body)
        return 0
    if action == "add":
        if secret is not None:
            _check_box(accounts, box, settings)
        if request.kind in ("oauth_token", "api_key") and secret is None:
            raise InvalidRequest(
                f"an {request.kind} account needs its secret: " + _NO_ARGUMENT.split(": ", 1)[1]
            )
        made = await accounts.add(
            name,
            request.kind or "",
            secret=secret,
            base_url=request.base_url,
            priority=request.priority,
            enabled=not request.disabled,
        )
        hint = f", secret {made.secret_hint}" if made.secret_hint else ""
        state = "disabled" if not made.enabled else "enabled"
        message = (
            f"added account {printable(made.name)!r} ({made.id}): {made.kind}{hint}, priority "
            f"{made.priority}, {state}; {ADOPTED}"
        )
        if made.kind == "login":
            message += (
                "\nA login account runs on the Claude Code login (`claude /login`) of the "
                "user running ccgate; there is one such login per user."
            )
        return _done(accounts, made.id, message, as_json)
    if action == "show":
        view = accounts.view(accounts.find(name))
        if as_json:
            print_json(account_object(view))
        else:
            _print_show(view)
        return 0
    if action in ("enable", "disable"):
        record = await accounts.update(name, enabled=action == "enable")
        return _done(
            accounts, record.id, f"account {printable(record.name)!r} {action}d; {ADOPTED}", as_json
        )
    if action == "rm":
        record = await accounts.remove(name)
        if as_json:
            print_json(account_object(accounts.view(record)))
            return 0
        print(f"removed account {printable(record.name)!r} ({record.id}); {ADOPTED}")
        return 0
    if action == "reset":
        before = accounts.view(accounts.find(name))
        record = await accounts.reset(name)
        await accounts.flush()
        what = "its cooldown ended" if not before["available"] else "it was not cooling down"
        return _done(
            accounts,
            record.id,
            f"account {printable(record.name)!r} reset: {what}; {ADOPTED}",
            as_json,
        )
    # set
    changes: dict[str, Any] = {}
    if request.new_name is not None:
        changes["name"] = request.new_name
    if request.priority is not None:
        changes["priority"] = request.priority
    if request.base_url is not None:
        changes["base_url"] = request.base_url
    if secret is not None:
        _check_box(accounts, box, settings)
        changes["secret"] = secret
    if not changes:
        raise InvalidRequest(
            "nothing to change: give --name, --priority, --base-url, --secret-stdin or --secret-env"
        )
    record = await accounts.update(name, **changes)
    return _done(
        accounts,
        record.id,
        f"account {printable(record.name)!r} changed ({', '.join(sorted(changes))}); {ADOPTED}",
        as_json,
    )


async def run_accounts(
    settings: Settings,
    request: AccountRequest,
    *,
    environ: Mapping[str, str] | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Run one accounts command; return the exit code (1: unknown or taken, 2: bad input)."""
    environ = os.environ if environ is None else environ
    try:
        if request.priority is not None and not (PRIORITY_MIN <= request.priority <= PRIORITY_MAX):
            raise InvalidRequest(
                f"--priority must be between {PRIORITY_MIN} and {PRIORITY_MAX}; "
                f"got {request.priority}"
            )
        secret = read_secret(request, environ, sys.stdin if stdin is None else stdin)
    except InvalidRequest as exc:
        return fail(exc.message, 2)
    database = Database(settings.effective_database_url)
    try:
        await database.migrate()
        box = _settings_box(settings)
        accounts = await open_accounts(settings, database, environ, box)
        return await _act(accounts, settings, request, secret, box)
    except (NotFound, Conflict) as exc:
        return fail(exc.message, 1)
    except InvalidRequest as exc:
        return fail(exc.message, 2)
    except ConfigError as exc:
        return fail(exc.message, 2)
    finally:
        await database.close()
