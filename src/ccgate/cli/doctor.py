"""``ccgate doctor``: check what a working gateway needs, each with a fix when it fails."""

from __future__ import annotations

import socket

from ccgate.checks import Check, claude_cli, credentials, data_dir, database, redis, sandbox
from ccgate.config import Settings
from ccgate.gateway import Gateway

__all__ = ["run_doctor"]


def _print(check: Check) -> None:
    mark = "ok  " if check.ok else "FAIL"
    print(f"[{mark}] {check.name}: {check.detail}", flush=True)


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
        data_dir(settings),
        _port(settings),
        database(settings),
        credentials(settings),
        sandbox(),
    ]
    shared = await redis(settings)
    if shared is not None:
        checks.append(shared)
    for check in checks:
        _print(check)
    cli = await claude_cli(settings)
    _print(cli)
    checks.append(cli)
    if probe and cli.ok:
        result = await _probe(settings)
        _print(result)
        checks.append(result)
    failed = [c for c in checks if not c.ok]
    print("all checks passed" if not failed else f"{len(failed)} check(s) failed", flush=True)
    return 0 if not failed else 1
