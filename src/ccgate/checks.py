"""What a working gateway needs, each checked with a fix when it fails (``ccgate doctor`` and
the console's settings page): the data dir, the database, credentials, the sandbox, the CLI."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ccgate.claude.agent import sandbox_missing
from ccgate.claude.binary import cli_version, find_cli
from ccgate.claude.environment import cli_environment
from ccgate.claude.workdirs import user_credentials
from ccgate.cluster.redis import Shared
from ccgate.config import Settings

__all__ = ["Check", "claude_cli", "credentials", "data_dir", "database", "redis", "sandbox"]


@dataclass
class Check:
    """One check's outcome."""

    name: str
    ok: bool
    detail: str


def credentials(settings: Settings) -> Check:
    """Check that Claude Code has something to sign in with."""
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
    if settings.redis_url:
        return Check(
            "credentials",
            True,
            f"no Claude Code login at {creds}: with replicas, this machine gets the login from "
            "the database once any replica's machine has run `claude /login` (or use "
            "CLAUDE_CODE_OAUTH_TOKEN or CCGATE_UPSTREAM_API_KEY)",
        )
    return Check(
        "credentials",
        False,
        "no login found: run `claude /login` (or `claude setup-token` and set "
        "CLAUDE_CODE_OAUTH_TOKEN), or set CCGATE_UPSTREAM_API_KEY",
    )


def data_dir(settings: Settings) -> Check:
    """Check that the data directory is writable (and private)."""
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


def database(settings: Settings) -> Check:
    """Check that the database opens (SQLite) or is configured."""
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


def sandbox() -> Check:
    """Check the packages Claude Code's sandbox needs (a warning: only loops need them)."""
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


async def claude_cli(settings: Settings) -> Check:
    """Check that the Claude Code binary is there and runs."""
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


async def redis(settings: Settings) -> Check | None:
    """Check that the Redis of several replicas answers (``None``: one replica, no Redis)."""
    if not settings.redis_url:
        return None
    try:
        shared = Shared(settings.redis_url, prefix=settings.redis_prefix)
    except Exception as exc:  # noqa: BLE001 - a bad URL is this check's failure
        return Check("redis", False, f"redis_url is not usable: {exc}")
    try:
        if not await shared.ping():
            return Check(
                "redis",
                False,
                "the Redis of redis_url does not answer within 1 s: start it, or check the "
                "URL (host, port, password, database number)",
            )
        return Check("redis", True, f"answers; keys under {settings.redis_prefix!r}")
    finally:
        await shared.aclose()
