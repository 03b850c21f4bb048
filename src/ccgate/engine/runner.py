"""The seam between front doors and whatever runs turns.

Contract of a :class:`Runner`:

- ``run(turn)`` returns an async iterator of :class:`~ccgate.engine.events.AgentEvent`.
  It yields :class:`TurnStarted` first, then content events, at most one
  :class:`Usage`, and ends with exactly one :class:`TurnEnd` or
  :class:`TurnError`; it never raises for a failure of the model side (those
  are ``TurnError`` events). It may raise :class:`ccgate.errors.GatewayError`
  before the first event for a request it cannot run at all.
- Closing the iterator early (``aclose()``, or the consuming task being
  cancelled) stops the turn and ends its CLI process before ``aclose`` returns.
- ``stop_all(reason)`` ends every live turn at once with ``TurnError("unavailable")``.
- ``aclose()`` of the runner stops every live turn and leaves no process.
- ``live_processes()`` counts CLI processes alive right now (idle warm ones too).
- ``new_session(turn)`` returns the Claude Code session id for a new conversation
  that starts with ``turn``: a fresh id, or the id of a process started ahead for
  that turn's configuration, which is from then on bound to that conversation
  alone.
- ``pool_status()`` says what the runner keeps warm (sizes, hits, misses,
  evictions, memory) as a JSON-ready mapping.
- ``release(session_id)``: the session's CLI state was discarded (a failed or cut
  turn, a rebuilt, deleted or expired session); no later turn may run on a
  process that holds it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Protocol

from ccgate.engine.events import AgentEvent
from ccgate.engine.turn import TurnRequest

__all__ = ["IdleProcess", "Runner"]


@dataclass(frozen=True)
class IdleProcess:
    """A process kept idle by another part of ccgate (a loop's agent), which a runner's
    memory pressure may end by calling ``release``."""

    idle_since: float
    pid: int | None
    release: Callable[[], None]


class Runner(Protocol):
    """Runs turns and yields their neutral events; see the module docstring for the contract."""

    def run(self, turn: TurnRequest) -> AsyncGenerator[AgentEvent, None]:
        """Run one turn, yielding its events."""
        ...

    def live_processes(self) -> int:
        """Return how many CLI processes are alive."""
        ...

    def new_session(self, turn: TurnRequest) -> str:
        """Return the Claude Code session id of a new conversation starting with ``turn``."""
        ...

    def release(self, cli_session_id: str) -> None:
        """Forget a session's CLI state: no process that holds it serves another turn."""
        ...

    def pool_status(self) -> dict[str, object]:
        """Return what is kept warm and what that did (``/health``); empty when nothing is."""
        ...

    def stop_all(self, reason: str) -> None:
        """End every live turn now with an ``unavailable`` error."""
        ...

    async def aclose(self) -> None:
        """Stop every turn and end every process."""
        ...
