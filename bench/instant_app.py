"""ccgate's real app on :class:`ccgate.testing.ScriptedRunner`: turns that cost nothing.

The runner answers every turn with :func:`ccgate.testing.echo` (``ok: <the user's message>``,
so a client can check it got its own answer), its ``Usage`` given a cost (:data:`COST_USD`)
so a quota charges money as well as tokens -- no sleep, no I/O, no process.

:func:`create` is a uvicorn app factory: it builds ``create_app(settings, runner=...)``
from the ``CCGATE_*`` variables of its environment (``load_settings({}, os.environ)``)
and sets up ccgate's JSON logging at ``settings.log_level``, as ``ccgate serve`` does::

    python -m uvicorn --factory bench.instant_app:create \\
        --host 127.0.0.1 --port 8790 --no-access-log --log-level warning
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI

from ccgate.app import create_app
from ccgate.config import load_settings
from ccgate.engine.events import AgentEvent, Usage
from ccgate.engine.turn import TurnRequest
from ccgate.logs import configure_logging
from ccgate.testing import ECHO_PREFIX, ScriptedRunner, echo

__all__ = ["APP", "COST_USD", "create", "priced_echo", "reply_for", "uvicorn_argv"]

#: The ``uvicorn --factory`` target of this module.
APP = "bench.instant_app:create"

#: What every turn costs, in USD.
COST_USD = 1e-5


def reply_for(prompt: str) -> str:
    """Return the answer the runner gives to the user message ``prompt``."""
    return ECHO_PREFIX + prompt


def priced_echo(turn: TurnRequest) -> Sequence[AgentEvent]:
    """Return :func:`ccgate.testing.echo`'s events with a cost on the usage."""
    return [
        dataclasses.replace(event, cost_usd=COST_USD) if isinstance(event, Usage) else event
        for event in echo(turn)
    ]


def create() -> FastAPI:
    """Build the gateway from ``CCGATE_*`` variables on a ScriptedRunner (uvicorn factory)."""
    settings = load_settings({}, os.environ)
    configure_logging(settings.log_level)
    app: FastAPI = create_app(settings, runner=ScriptedRunner(priced_echo, record=False))
    return app


def uvicorn_argv(port: int, log_level: str = "warning", *extra: str) -> list[str]:
    """Return the command line that serves :func:`create` with uvicorn on ``port``."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        APP,
        "--app-dir",
        str(Path(__file__).resolve().parents[1]),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        log_level,
        *extra,
    ]
