"""The seam between loops and whatever runs an agent: :class:`Agent` and :class:`Agents`.

Contract of an :class:`Agent` (one process that runs a loop's turns, one at a time):

- ``run(content, permission_mode)`` yields the turn's neutral events; the last
  is a ``TurnEnd`` or a ``TurnError``, and a failure of the process is a
  ``TurnError``, never an exception;
- every tool call that needs permission under the permission mode, and every
  question the agent asks, awaits the ``chooser`` the agent was started with;
- ``interrupt()`` ends the running turn at once; the process takes the next;
- ``aclose()`` ends the process gracefully (its session is kept for a later
  resume), ``kill()`` at once; ``alive`` and ``pid`` describe the process.

:class:`Agents` starts agents: ``start(spec, chooser)`` returns one that is
running (resuming the loop's session when the agent's runtime has it), or
raises what stopped it. The Claude Code implementation is
``ccgate.claude.agent.ClaudeAgents``; ``ccgate.testing.ScriptedAgents`` is
the test double (no process).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ccgate.engine.events import AgentEvent

__all__ = ["Agent", "AgentSpec", "Agents", "Chooser", "Decision"]


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to a tool call that needed permission (or to a question)."""

    allow: bool
    message: str = ""
    updated_input: dict[str, Any] | None = None


#: Decide on a tool call: ``(tool, input, tool_use_id) -> Decision``.
Chooser = Callable[[str, dict[str, Any], str], Awaitable[Decision]]


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """What a loop's agent is started with."""

    workspace: Path
    #: The agent's own directory (its temporary files), readable and writable by it.
    private_dir: Path
    session_id: str
    model: str
    permission_mode: str
    #: Paths its commands may not read (the agent's runtime adds its own).
    deny_read: tuple[Path, ...] = ()


class Agent(Protocol):
    """One running agent process; see the module docstring for the contract."""

    @property
    def alive(self) -> bool:
        """Tell whether the process runs and takes turns."""
        ...

    @property
    def pid(self) -> int | None:
        """Return the process id, if there is a process."""
        ...

    def run(self, content: str, permission_mode: str) -> AsyncIterator[AgentEvent]:
        """Run one turn and yield its events."""
        ...

    def interrupt(self) -> None:
        """End the running turn at once."""
        ...

    async def aclose(self) -> None:
        """End the process, keeping its session."""
        ...

    def kill(self) -> None:
        """End the process now."""
        ...


class Agents(Protocol):
    """Starts agents; see the module docstring."""

    async def start(self, spec: AgentSpec, chooser: Chooser) -> Agent:
        """Start an agent for ``spec`` whose permissions ``chooser`` decides."""
        ...
