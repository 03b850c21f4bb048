"""The seam between front doors and whatever runs turns.

Contract of a :class:`Runner`:

- ``run(turn, box)`` returns an async iterator of :class:`~ccgate.engine.events.AgentEvent`.
  ``box`` (a :class:`~ccgate.engine.toolbox.ToolResultBox`, or ``None`` for a
  turn without client tools) is where the turn's calls of the client's tools
  wait for their results; the runner closes it when the turn ends.
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

What a runner keeps of a conversation (a Claude Code session) between its
turns is :class:`SessionStates`, part of the contract:

- ``has_session(session_id)`` (async): the runner holds the session's state,
  so a turn with ``SessionPlan(resume=True)`` continues it with only the new
  message. A runner whose sessions are shared by several replicas answers for
  the shared state (and makes it its own before answering True); one that
  cannot tell answers False, and the session is rebuilt from the client's
  history;
- ``seed_session(session_id, history, model, results=...)``: make a new
  session's state from the client's history (a conversation that starts with
  history, or one rebuilt after an edit); ``results`` ends it with the
  deferred last call of the client's tools (see ``SessionPlan.deferred_call``);
- ``release(session_id)``: the session's state is discarded (a failed or cut
  turn, a rebuilt, deleted or expired session): no later turn may run on a
  process that holds it, and this runner's ``has_session`` is False from then on.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Protocol

from ccgate.engine.events import AgentEvent
from ccgate.engine.toolbox import ToolResultBox
from ccgate.engine.turn import Message, TurnRequest

__all__ = ["IdleProcess", "Runner", "SessionStates"]


@dataclass(frozen=True)
class IdleProcess:
    """A process kept idle by another part of ccgate (a loop's agent, another upstream
    account's warm process), which a runner's memory pressure may end by calling
    ``release``; ``kind`` names it in the eviction counts (``memory_<kind>``)."""

    idle_since: float
    pid: int | None
    release: Callable[[], None]
    kind: str = "loop"


class SessionStates(Protocol):
    """What a runner keeps of each conversation; see the module docstring."""

    def new_session(self, turn: TurnRequest) -> str:
        """Return the session id of a new conversation starting with ``turn``."""
        ...

    async def has_session(self, cli_session_id: str) -> bool:
        """Tell whether the runner holds the session's state (a turn may resume it)."""
        ...

    def seed_session(
        self,
        cli_session_id: str,
        history: tuple[Message, ...],
        model: str,
        *,
        results: Message | None = None,
    ) -> None:
        """Make a new session's state from the client's history."""
        ...

    def release(self, cli_session_id: str) -> None:
        """Discard a session's state: no process that holds it serves another turn."""
        ...


class Runner(SessionStates, Protocol):
    """Runs turns and yields their neutral events; see the module docstring for the contract."""

    def run(
        self, turn: TurnRequest, box: ToolResultBox | None = None
    ) -> AsyncGenerator[AgentEvent, None]:
        """Run one turn, yielding its events."""
        ...

    def live_processes(self) -> int:
        """Return how many CLI processes are alive."""
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
