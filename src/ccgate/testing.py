"""Test doubles shipped beside the interfaces they stand in for; tests and benchmarks share them.

:class:`ScriptedRunner` is a :class:`ccgate.engine.runner.Runner` that starts no
process: each turn yields the events of a script (by default an echo of the
turn's last user message, at once) and the runner records the turns it was
asked to run. The front doors, accounting, sessions and the cache can be
tested, and ccgate's own cost measured, without the Claude Code CLI.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Callable, Sequence

from ccgate.engine.events import AgentEvent, TextDelta, TurnEnd, TurnStarted, Usage
from ccgate.engine.toolbox import ToolResultBox
from ccgate.engine.turn import Message, TurnRequest

__all__ = ["ECHO_PREFIX", "ScriptedRunner", "echo"]

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

    def has_session(self, cli_session_id: str) -> bool:
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
