"""ccgate's real app with a runner that answers instantly, for ``bench/overhead.py``.

``InstantRunner`` keeps the :class:`ccgate.engine.runner.Runner` contract (every method of
the protocol) without a Claude Code CLI: every turn yields ``TurnStarted``, two ``TextDelta``
pieces (``ok: `` and the new user message's text, so a client can check it got its own
answer), a complete ``Usage`` with a cost, and ``TurnEnd()`` -- no sleep, no I/O, no process.

``create()`` is a uvicorn app factory: it builds ``create_app(settings, runner=...)``
from the ``CCGATE_*`` variables of its environment (``load_settings({}, os.environ)``)
and sets up ccgate's JSON logging at ``settings.log_level``, as ``ccgate serve`` does.
The benchmark serves it as a subprocess::

    python -m uvicorn --factory instant_app:create --app-dir bench \\
        --host 127.0.0.1 --port 8790 --no-access-log --log-level warning
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncGenerator

from fastapi import FastAPI

from ccgate.app import create_app
from ccgate.config import load_settings
from ccgate.engine.events import AgentEvent, TextDelta, TurnEnd, TurnStarted, Usage
from ccgate.engine.turn import TurnRequest
from ccgate.logs import configure_logging

__all__ = ["REPLY_PREFIX", "InstantRunner", "create", "reply_for"]

REPLY_PREFIX = "ok: "


def reply_for(prompt: str) -> str:
    """Return the answer ``InstantRunner`` gives to the user message ``prompt``."""
    return REPLY_PREFIX + prompt


class InstantRunner:
    """A Runner whose turns cost nothing: a fixed script of events, yielded at once."""

    async def run(self, turn: TurnRequest) -> AsyncGenerator[AgentEvent, None]:
        """Answer ``turn`` with ``reply_for`` its last user message."""
        prompt = turn.last.text()
        yield TurnStarted(turn.model, cold_start=False)
        yield TextDelta(REPLY_PREFIX)
        yield TextDelta(prompt)
        yield Usage(
            input_tokens=max(1, len(prompt) // 4),
            output_tokens=max(1, len(reply_for(prompt)) // 4),
            cost_usd=1e-5,
        )
        yield TurnEnd()

    def live_processes(self) -> int:
        """Return 0: this runner never starts a process."""
        return 0

    def new_session(self, turn: TurnRequest) -> str:
        """Return a fresh session id: nothing is started ahead for any conversation."""
        return str(uuid.uuid4())

    def release(self, cli_session_id: str) -> None:
        """Do nothing: no process holds a session's state."""

    def pool_status(self) -> dict[str, object]:
        """Return an empty mapping: nothing is kept warm."""
        return {}

    def stop_all(self, reason: str) -> None:
        """Do nothing: a turn of this runner is over before anything could stop it."""

    async def aclose(self) -> None:
        """Do nothing: there is no process to end."""


def create() -> FastAPI:
    """Build the gateway from ``CCGATE_*`` variables with an ``InstantRunner`` (uvicorn factory)."""
    settings = load_settings({}, os.environ)
    configure_logging(settings.log_level)
    return create_app(settings, runner=InstantRunner())
