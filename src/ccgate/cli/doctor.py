"""``ccgate doctor``: check what a working gateway needs, each with a fix when it fails."""

from __future__ import annotations

import os
import socket
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ccgate.claude.agent import sandbox_missing
from ccgate.claude.binary import cli_version, find_cli
from ccgate.claude.environment import cli_environment
from ccgate.claude.workdirs import user_credentials
from ccgate.config import Settings
from ccgate.gateway import Gateway

__all__ = ["Check", "run_doctor"]


@dataclass
class Check:
    """One check's outcome."""

    name: str
    ok: bool
    detail: str


def _print(check: Check) -> None:
    mark = "ok  " if check.ok else "FAIL"
    print(f"[{mark}] {check.name}: {check.detail}", flush=True)


def _credentials(settings: Settings) -> Check:
    if settings.demo:
        return Check("credentials", True, "demo mode: the scripted model needs none")
    if settings.upstream_api_key is not None:
        return Check("credentials", True, "CCGATE_UPSTREAM_API_KEY is set")
    if os.environ.get("CLAUDE_CODE_OAUTH_TOKEN"):
        return Check("credentials", True, "CLAUDE_CODE_OAUTH_TOKEN is set")
    if os.environ.get("ANTHROPIC_API_KEY"):
        return Check("credentials", True, "ANTHROPIC_API_KEY is set in ccgate's environment")
    creds = user_credentials(dict(os.environ))
    if creds.is_file():
        return Check("credentials", True, f"Claude Code login found at {creds}")
    return Check(
        "credentials",
        False,
        "no login found: run `claude /login` (or `claude setup-token` and set "
        "CLAUDE_CODE_OAUTH_TOKEN), or set CCGATE_UPSTREAM_API_KEY",
    )


def _data_dir(settings: Settings) -> Check:
    path = settings.data_path
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as exc:
        return Check("data dir", False, f"{path} is not writable ({exc.strerror})")
    mode = path.stat().st_mode & 0o777
    note = "" if mode == 0o700 else f" (mode {mode:o}; 700 keeps other users out)"
    return Check("data dir", True, f"{path} is writable{note}")


def _port(settings: Settings) -> Check:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((settings.host.strip("[]"), settings.port))
        except OSError as exc:
            return Check(
                "port",
                False,
                f"{settings.host}:{settings.port} is taken or not bindable ({exc.strerror}); "
                "is ccgate already running? choose another with --port",
            )
    return Check("port", True, f"{settings.host}:{settings.port} is free")


def _database(settings: Settings) -> Check:
    url = settings.effective_database_url
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with sqlite3.connect(path) as conn:
                conn.execute("select 1")
        except (OSError, sqlite3.Error) as exc:
            return Check("database", False, f"cannot open {path}: {exc}")
        return Check("database", True, f"SQLite at {path}")
    scheme = url.split(":", 1)[0]
    return Check("database", True, f"{scheme} configured (checked when the store starts)")


def _sandbox() -> Check:
    missing = sandbox_missing()
    if missing:
        # A warning, not a failure: the compatible APIs run without it.
        return Check(
            "sandbox",
            True,
            f"warning: {' and '.join(missing)} missing, so loops cannot run (Claude Code's "
            "sandbox needs them): run scripts/install-sandbox or apt-get install bubblewrap socat",
        )
    return Check("sandbox", True, "bubblewrap and socat found (loops run commands sandboxed)")


async def _cli(settings: Settings) -> Check:
    path = find_cli(settings.cli_path)
    if path is None:
        return Check(
            "claude cli",
            False,
            "not found: reinstall ccgate (claude-agent-sdk bundles it) or set CCGATE_CLI_PATH",
        )
    try:
        version = await cli_version(path, {**os.environ, **cli_environment(os.environ, None)})
    except (OSError, TimeoutError) as exc:
        return Check("claude cli", False, f"{path} does not run: {exc}")
    return Check("claude cli", True, f"{version} at {path}")


async def _probe(settings: Settings) -> Check:
    """Run a real one-line turn through a gateway of these settings (no retries)."""
    quick = settings.model_copy(update={"upstream_retries": 0, "request_timeout": 120.0})
    async with Gateway(quick) as gateway:
        model = gateway.catalogue.resolve(settings.default_model)
        await gateway.probe.check(gateway.runner, model)
        failed = gateway.probe.ok is False
        error = gateway.probe.error or ""
    if failed:
        return Check("upstream probe", False, error)
    return Check("upstream probe", True, "a real one-line turn succeeded")


async def run_doctor(settings: Settings, *, probe: bool = True) -> int:
    """Run every check, print them, and return 0 when all passed."""
    checks = [
        _data_dir(settings),
        _port(settings),
        _database(settings),
        _credentials(settings),
        _sandbox(),
    ]
    for check in checks:
        _print(check)
    cli = await _cli(settings)
    _print(cli)
    checks.append(cli)
    if probe and cli.ok:
        result = await _probe(settings)
        _print(result)
        checks.append(result)
    failed = [c for c in checks if not c.ok]
    print("all checks passed" if not failed else f"{len(failed)} check(s) failed", flush=True)
    return 0 if not failed else 1
