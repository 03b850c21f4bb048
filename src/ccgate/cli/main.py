"""The command line: ``ccgate serve|doctor|sessions|keys|accounts|usage|version``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import uvicorn

from ccgate import __version__
from ccgate.config import Settings, load_settings
from ccgate.errors import ConfigError

__all__ = ["build_parser", "main"]


def _add_setting_flags(parser: argparse.ArgumentParser, skip: frozenset[str] = frozenset()) -> None:
    """Give every setting a ``--flag`` (its env var and file key share the name)."""
    for name, field in Settings.model_fields.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        env = "CCGATE_" + name.upper()
        help_text = f"{field.description} [env {env}]"
        if field.annotation is bool:
            parser.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(flag, dest=name, default=None, metavar=name.upper(), help=help_text)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``ccgate`` command."""
    parser = argparse.ArgumentParser(
        prog="ccgate",
        description="A self-hosted gateway that puts Claude Code behind the OpenAI and "
        "Anthropic APIs.",
    )
    parser.add_argument("--version", action="version", version=f"ccgate {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser("serve", help="start the gateway")
    doctor = commands.add_parser("doctor", help="check the CLI, credentials, data dir and port")
    doctor.add_argument(
        "--no-probe", action="store_true", help="skip the real upstream probe (no model call)"
    )
    commands.add_parser("version", help="print the version")
    sessions = commands.add_parser("sessions", help="list or remove conversation sessions")
    actions = sessions.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list sessions (most recently used first)")
    remove = actions.add_parser("rm", help="remove a session (or --all) and its transcript")
    remove.add_argument("key", nargs="?", help="the session key")
    remove.add_argument("--all", dest="everything", action="store_true", help="remove them all")
    for sub in (listing, remove):
        sub.add_argument(
            "--namespace",
            default=None,
            help="whose sessions: 'local' (auth_mode none), 'shared' (auth_mode shared) or a "
            "key's id (auth_mode multi, where it is required); default from the auth mode",
        )
    keys = commands.add_parser(
        "keys", help="create, list or revoke the client keys of auth_mode=multi"
    )
    key_actions = keys.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = key_actions.add_parser("create", help="make a key (shown once, never again)")
    create.add_argument("name", help="who or what the key is for")
    _add_quota_flags(create)
    create.add_argument(
        "--models",
        default=None,
        metavar="A,B",
        help="comma-separated models the key may use (ids or aliases); default all",
    )
    create.add_argument(
        "--expires-at",
        default=None,
        metavar="WHEN",
        help="when the key stops working: Unix seconds or an ISO 8601 date/time "
        "(UTC unless it says)",
    )
    key_list = key_actions.add_parser("list", help="list the keys (never the keys themselves)")
    key_list.add_argument(
        "--all", dest="everything", action="store_true", help="include revoked keys"
    )
    revoke = key_actions.add_parser("revoke", help="revoke a key: it stops working at once")
    revoke.add_argument("key_id", metavar="ID", help="the key's id (key_...)")
    account_commands = _add_accounts(commands)
    usage = commands.add_parser("usage", help="summarise the usage ledger")
    usage.add_argument(
        "--key",
        dest="key_id",
        default=None,
        metavar="ID",
        help="one key's usage (a key's id, or 'local'/'shared'); default all",
    )
    usage.add_argument("--since", default=None, metavar="WHEN", help="from this time on")
    usage.add_argument("--until", default=None, metavar="WHEN", help="before this time")
    usage.add_argument(
        "--group-by", choices=("day", "model", "key"), default="day", help="default day"
    )
    for sub in (create, key_list, revoke, usage, *account_commands):
        sub.add_argument(
            "--json", dest="as_json", action="store_true", help="print JSON (as the admin API)"
        )
    for sub in (serve, doctor, listing, remove, create, key_list, revoke, usage, *account_commands):
        sub.add_argument("--config", type=Path, default=None, help="a ccgate.toml to read")
        # keys create has its own --max-concurrent: the key's limit, not the gateway's.
        _add_setting_flags(sub, skip=frozenset(_QUOTA_FLAGS) if sub is create else frozenset())
    return parser


def _add_accounts(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> list[argparse.ArgumentParser]:
    """Add ``ccgate accounts ...``; return its commands (each takes the settings' flags)."""
    accounts = commands.add_parser(
        "accounts", help="add, list, change or reset the upstream accounts Claude Code runs on"
    )
    actions = accounts.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add an account (its secret from stdin or a variable)")
    add.add_argument("name", help="the account's name: letters, digits, '.', '_', '-'")
    add.add_argument(
        "--kind",
        required=True,
        choices=("login", "oauth_token", "api_key"),
        help="login: the Claude Code login of the user running ccgate; oauth_token: a token "
        "from `claude setup-token`; api_key: an Anthropic API key (billed per token)",
    )
    listing = actions.add_parser("list", help="list the accounts, their plans and state")
    show = actions.add_parser("show", help="everything known of one account")
    enable = actions.add_parser("enable", help="let an account take requests again")
    disable = actions.add_parser("disable", help="stop sending requests to an account")
    remove = actions.add_parser("rm", help="remove an account (not 'default': disable that)")
    reset = actions.add_parser("reset", help="end an account's cooldown now")
    change = actions.add_parser("set", help="change an account's name, priority, URL or secret")
    for sub in (show, enable, disable, remove, reset, change):
        sub.add_argument("name", help="the account's name or id")
    change.add_argument(
        "--name", dest="new_name", default=None, metavar="NEW", help="rename the account"
    )
    for sub in (add, change):
        sub.add_argument(
            "--priority",
            type=int,
            default=None,
            metavar="N",
            help="lower goes first (default 0; 100 for an API key, a fallback)",
        )
        sub.add_argument(
            "--base-url",
            default=None,
            metavar="URL",
            help="the account's own Anthropic-compatible base URL (default the upstream_url "
            "setting, else Anthropic's)" + ("; '' removes it" if sub is change else ""),
        )
        secret = sub.add_mutually_exclusive_group()
        secret.add_argument(
            "--secret-stdin",
            action="store_true",
            help="read the secret from standard input (prompted, not echoed, on a terminal)",
        )
        secret.add_argument(
            "--secret-env",
            default=None,
            metavar="VAR",
            help="read the secret from the environment variable VAR",
        )
        # Taken only to refuse it without echoing it (argparse would print an unknown one).
        sub.add_argument("--secret", dest="plain_secret", default=None, help=argparse.SUPPRESS)
    add.add_argument("--disabled", action="store_true", help="add it disabled (enable it later)")
    return [add, listing, show, enable, disable, remove, reset, change]


def _share(text: str) -> float:
    """Return a key's plan share (0 to 1) from its flag."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a fraction from 0 to 1, like 0.25; got {text!r}"
        ) from None
    if not 0 <= value <= 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"a fraction from 0 to 1, like 0.25; got {text!r}")
    return value


#: The quota flags of ``keys create``: :class:`Quota` field -> (flag, type, what it limits).
_QUOTA_FLAGS: dict[str, tuple[str, Any, str]] = {
    "requests_per_minute": ("--requests-per-minute", int, "at most N requests a minute"),
    "requests_per_day": ("--requests-per-day", int, "at most N requests a day (UTC)"),
    "tokens_per_day": ("--tokens-per-day", int, "at most N tokens a day (UTC)"),
    "budget_usd_per_month": ("--budget-usd", float, "at most N USD a calendar month (UTC)"),
    "max_concurrent": ("--max-concurrent", int, "at most N requests running at once"),
    "plan_share": (
        "--plan-share",
        _share,
        "at most this share (0-1) of each account's 5-hour window once it is plan_share_at full",
    ),
}


def _add_quota_flags(parser: argparse.ArgumentParser) -> None:
    """Give ``keys create`` one flag per quota limit (unset means no limit)."""
    for name, (flag, kind, what) in _QUOTA_FLAGS.items():
        parser.add_argument(
            flag,
            dest="quota_" + name,
            type=kind,
            default=None,
            metavar="SHARE" if name == "plan_share" else "N",
            help=f"the key's limit: {what} (default no limit)",
        )


def _settings(args: argparse.Namespace) -> Settings:
    flags = {
        name: getattr(args, name, None)
        for name in Settings.model_fields
        if getattr(args, name, None) is not None
    }
    return load_settings(flags, os.environ, args.config)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(f"ccgate {__version__}")
        return 0
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"ccgate: {exc.message}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return serve(settings)
    if args.command in ("sessions", "keys", "accounts", "usage"):
        try:
            return _run_database_command(args, settings)
        except ConfigError as exc:
            print(f"ccgate: {exc.message}", file=sys.stderr)
            return 2
    from ccgate.cli.doctor import run_doctor

    return asyncio.run(run_doctor(settings, probe=not args.no_probe))


def _run_database_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``sessions``, ``keys``, ``accounts`` or ``usage`` (on the database, no server)."""
    if args.command == "sessions":
        from ccgate.cli.sessions import run_sessions

        return asyncio.run(
            run_sessions(
                settings,
                args.action,
                args.namespace,
                getattr(args, "key", None),
                getattr(args, "everything", False),
            )
        )
    if args.command == "keys":
        from ccgate.cli.keys import run_keys

        quota = {
            name: getattr(args, "quota_" + name)
            for name in _QUOTA_FLAGS
            if getattr(args, "quota_" + name, None) is not None
        }
        return asyncio.run(
            run_keys(
                settings,
                args.action,
                name=getattr(args, "name", None),
                key_id=getattr(args, "key_id", None),
                quota=quota,
                models=getattr(args, "models", None),
                expires_at=getattr(args, "expires_at", None),
                everything=getattr(args, "everything", False),
                as_json=args.as_json,
            )
        )
    if args.command == "accounts":
        from ccgate.cli.accounts import AccountRequest, run_accounts

        request = AccountRequest(
            action=args.action,
            name=getattr(args, "name", None),
            kind=getattr(args, "kind", None),
            new_name=getattr(args, "new_name", None),
            base_url=getattr(args, "base_url", None),
            priority=getattr(args, "priority", None),
            disabled=getattr(args, "disabled", False),
            secret_stdin=getattr(args, "secret_stdin", False),
            secret_env=getattr(args, "secret_env", None),
            plain_secret=getattr(args, "plain_secret", None) is not None,
            as_json=args.as_json,
        )
        return asyncio.run(run_accounts(settings, request))
    from ccgate.cli.usage import run_usage

    return asyncio.run(
        run_usage(
            settings,
            key_id=args.key_id,
            since=args.since,
            until=args.until,
            group_by=args.group_by,
            as_json=args.as_json,
        )
    )


def _bind(settings: Settings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    # IPPROTO_TCP (not 0): asyncio turns Nagle off only for sockets that say they are TCP,
    # and a streamed event must not wait for the client's delayed ACK (~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host.strip("[]"), settings.port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}; "
            "pick another port with --port or CCGATE_PORT"
        ) from None
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings) -> int:
    """Start the gateway and serve until SIGINT/SIGTERM."""
    from ccgate.api.routes.health import public_upstream
    from ccgate.app import create_app
    from ccgate.logs import configure_logging

    try:
        sock = _bind(settings)
    except ConfigError as exc:
        print(f"ccgate: {exc.message}", file=sys.stderr)
        return 2
    host, port = sock.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    upstream = (
        "built-in scripted model (--demo)"
        if settings.demo
        else public_upstream(settings.upstream_url)
    )
    print(
        f"ccgate {__version__} listening on http://{shown_host}:{port}\n"
        f"  upstream:  {upstream}\n"
        f"  auth mode: {settings.auth_mode}\n"
        f"  data dir:  {settings.data_path}\n"
        f"  try:       curl http://{shown_host}:{port}/health",
        flush=True,
    )
    configure_logging(settings.log_level)

    apps: list[Any] = []

    def factory() -> Any:
        app = create_app(settings)
        apps.append(app)
        return app

    config = uvicorn.Config(
        factory,
        factory=True,
        log_config=None,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout)),
        lifespan="on",
        proxy_headers=False,
    )
    server = _GracefulServer(config, apps)
    server.run(sockets=[sock])
    return 0


class _GracefulServer(uvicorn.Server):
    """uvicorn's server; on SIGINT/SIGTERM it marks the gateway draining, and exits 0."""

    def __init__(self, config: uvicorn.Config, apps: list[Any]) -> None:
        super().__init__(config)
        self._apps = apps

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises the signal after shutdown, which turns a clean stop into a
        # death by signal; a gateway that drained and stopped its processes exits 0.
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handle(sig: int, frame: Any) -> None:
            for app in self._apps:
                gateway = getattr(app.state, "ccgate", None)
                if gateway is not None:
                    # Turns still running just before uvicorn's grace period ends are
                    # stopped with a clean error rather than cut off mid-response.
                    gateway.drain(max(0.5, gateway.settings.shutdown_timeout - 1))
            self.handle_exit(sig, frame)

        for sig in previous:
            signal.signal(sig, handle)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
