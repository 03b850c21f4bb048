"""Test doubles shipped beside the interfaces they stand in for; tests and benchmarks share them.

:class:`ScriptedRunner` is a :class:`ccgate.engine.runner.Runner` that starts no
process: each turn yields the events of a script (by default an echo of the
turn's last user message, at once) and the runner records the turns it was
asked to run. The front doors, accounting, sessions and the cache can be
tested, and ccgate's own cost measured, without the Claude Code CLI.

:class:`ScriptedAgent` is a :class:`ccgate.loops.agent.Agent` with no process,
and :class:`ScriptedAgents` starts them: a loop's queue, choices, interrupts,
idle release and watchers can be tested without Claude Code.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence

from ccgate.engine.events import (
    AgentEvent,
    TextDelta,
    ToolResult,
    TurnEnd,
    TurnError,
    TurnStarted,
    Usage,
)
from ccgate.engine.toolbox import ToolResultBox
from ccgate.engine.turn import Message, TurnRequest
from ccgate.loops.agent import AgentSpec, Chooser

__all__ = [
    "ECHO_PREFIX",
    "LocalLease",
    "ScriptedAgent",
    "ScriptedAgents",
    "ScriptedRunner",
    "echo",
]

#: What :func:`echo` puts before the user's text.
ECHO_PREFIX = "ok: "


def echo(turn: TurnRequest) -> list[AgentEvent]:
    """Answer a turn with ``ok: <its last user message>`` and a small usage."""
    prompt = turn.last.text()
    return [
        TurnStarted(turn.model, cold_start=False),
        TextDelta(ECHO_PREFIX),
        TextDelta(prompt),
        Usage(
            input_tokens=max(1, len(prompt) // 4),
            output_tokens=max(1, (len(ECHO_PREFIX) + len(prompt)) // 4),
        ),
        TurnEnd(),
    ]


Script = Sequence[AgentEvent] | Callable[[TurnRequest], Sequence[AgentEvent]]


class ScriptedRunner:
    """A Runner that plays a script of events and records what it was asked.

    ``script`` is the events every turn yields, or a function of the turn that
    returns them (default: :func:`echo`); it may be replaced between turns.
    ``turns`` lists the turns run (and ``boxes`` their tool boxes),
    ``closed_runs`` counts the runs whose iterators ended (early or not),
    ``closed`` and ``stopped`` tell whether :meth:`aclose` and :meth:`stop_all`
    were called. Like Claude Code, it holds a session's state once a turn ran
    in it or it was seeded (``seeded`` maps those to the history they got),
    until it is released. With ``record=False`` it keeps no turns and boxes
    (for long benchmark runs, whose memory would otherwise grow with them).
    """

    def __init__(self, script: Script = echo, *, record: bool = True) -> None:
        self.script: Script = script
        self.record = record
        self.turns: list[TurnRequest] = []
        self.boxes: list[ToolResultBox | None] = []
        self.sessions: set[str] = set()
        self.seeded: dict[str, tuple[Message, ...]] = {}
        self.released: list[str] = []
        self.closed_runs = 0
        self.closed = False
        self.stopped: str | None = None

    def run(
        self, turn: TurnRequest, box: ToolResultBox | None = None
    ) -> AsyncGenerator[AgentEvent, None]:
        """Yield the script's events for ``turn``."""
        if self.record:
            self.turns.append(turn)
            self.boxes.append(box)
        if turn.session is not None:
            self.sessions.add(turn.session.cli_session_id)
        events = self.script(turn) if callable(self.script) else self.script
        return self.play(list(events))

    async def play(self, events: list[AgentEvent]) -> AsyncGenerator[AgentEvent, None]:
        """Yield a turn's events (a subclass may wait, fail or stall here)."""
        try:
            for event in events:
                yield event
        finally:
            self.closed_runs += 1

    def live_processes(self) -> int:
        """Return 0: no process is ever started."""
        return 0

    def new_session(self, turn: TurnRequest) -> str:
        """Return a fresh session id: nothing is started ahead."""
        return str(uuid.uuid4())

    async def has_session(self, cli_session_id: str) -> bool:
        """Tell whether a turn ran in the session, or it was seeded, since its release."""
        return cli_session_id in self.sessions

    def seed_session(
        self,
        cli_session_id: str,
        history: tuple[Message, ...],
        model: str,
        *,
        results: Message | None = None,
    ) -> None:
        """Note the session's history (and the results that end it)."""
        self.sessions.add(cli_session_id)
        self.seeded[cli_session_id] = history + ((results,) if results is not None else ())

    def release(self, cli_session_id: str) -> None:
        """Forget the session."""
        self.sessions.discard(cli_session_id)
        self.released.append(cli_session_id)

    def pool_status(self) -> dict[str, object]:
        """Return an empty mapping: nothing is kept warm."""
        return {}

    def stop_all(self, reason: str) -> None:
        """Note the reason; a scripted turn is over before anything could stop it."""
        self.stopped = reason

    async def aclose(self) -> None:
        """Note the close; there is no process to end."""
        self.closed = True


class ScriptedAgent:
    """An :class:`ccgate.loops.agent.Agent` that answers by the first word of a message.

    ``tool X`` asks the chooser to run the command X (tool ``Bash``) and says
    what was decided; ``ask Q`` asks the question Q (tool ``AskUserQuestion``)
    and says the answer; ``wait`` waits until interrupted; anything else is
    answered ``echo <message>``. ``turns`` lists the messages it was given.
    """

    def __init__(self, chooser: Chooser, model: str = "sonnet") -> None:
        self._chooser = chooser
        self._model = model
        self._alive = True
        self._stop = asyncio.Event()
        self.turns: list[str] = []
        self.modes: list[str] = []

    @property
    def alive(self) -> bool:
        """Tell whether it was not closed or killed."""
        return self._alive

    @property
    def pid(self) -> int | None:
        """Return None: there is no process."""
        return None

    async def run(self, content: str, permission_mode: str) -> AsyncIterator[AgentEvent]:
        """Play one turn (see the class docstring)."""
        self.turns.append(content)
        self.modes.append(permission_mode)
        self._stop.clear()
        yield TurnStarted(self._model, cold_start=False)
        word, _, rest = content.partition(" ")
        if word in ("tool", "ask"):
            tool = "AskUserQuestion" if word == "ask" else "Bash"
            tool_input = {"questions": [{"question": rest}]} if word == "ask" else {"command": rest}
            decision = await self._chooser(tool, tool_input, "toolu_1")
            yield ToolResult("toolu_1", ok=decision.allow)
            answer = json.dumps(decision.updated_input) if decision.allow else decision.message
            yield TextDelta(f"{tool}: {answer}")
        elif word == "wait":
            await self._stop.wait()
            yield TurnError("upstream", "interrupted")
            return
        else:
            yield TextDelta(f"echo {content}")
        yield Usage(input_tokens=3, output_tokens=2)
        yield TurnEnd()

    def interrupt(self) -> None:
        """End a ``wait`` turn."""
        self._stop.set()

    async def aclose(self) -> None:
        """Note the close."""
        self._alive = False

    def kill(self) -> None:
        """Note the kill."""
        self._alive = False


class ScriptedAgents:
    """Starts :class:`ScriptedAgent` s and keeps them (``started``) for a test to look at."""

    def __init__(self) -> None:
        self.started: list[ScriptedAgent] = []
        self.specs: list[AgentSpec] = []

    async def start(self, spec: AgentSpec, chooser: Chooser) -> ScriptedAgent:
        """Return a new agent for ``spec``."""
        agent = ScriptedAgent(chooser, spec.model)
        self.started.append(agent)
        self.specs.append(spec)
        return agent


class LocalLease:
    """One lease in this process; :meth:`lock` is a :class:`~ccgate.accounts.login.RefreshLock`
    for each would-be holder. ``taken`` counts the acquisitions that succeeded."""

    def __init__(self) -> None:
        self.holder: str | None = None
        self.taken = 0

    def lock(self, name: str) -> _HeldBy:
        """Return the lock as ``name`` takes it."""
        return _HeldBy(self, name)


class _HeldBy:
    def __init__(self, lease: LocalLease, name: str) -> None:
        self._lease = lease
        self._name = name

    async def acquire(self) -> bool:
        if self._lease.holder not in (None, self._name):
            return False
        if self._lease.holder is None:
            self._lease.taken += 1
        self._lease.holder = self._name
        return True

    async def release(self) -> None:
        if self._lease.holder == self._name:
            self._lease.holder = None
