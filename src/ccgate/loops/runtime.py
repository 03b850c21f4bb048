"""One loop at work: its message queue, its agent process, its choices, its watchers.

Messages run one at a time, in the order they came. A turn runs on the
loop's :class:`~ccgate.loops.agent.Agent`, started (``cold_start``)
when the loop has none and released after ``idle_timeout`` without a turn; a
new process resumes the loop's Claude Code session, so the conversation goes
on. A tool call that needs permission, or a question of the agent, becomes a
*choice*: the turn waits until it is answered, or until ``choice_timeout``
(then it is denied). A turn holds one of the gate's slots while it works and
gives it back while it waits for a choice, which can take a person half an
hour. Every event of a turn is kept in its :class:`TurnLog`,
which the message's own stream (and an idempotent retry of it) reads from the
start, and is sent to the loop's watchers (``loops.hub``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ccgate.engine.events import (
    AgentEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolResult,
    TurnEnd,
    TurnError,
    Usage,
    last_usage,
)
from ccgate.engine.gate import Gate
from ccgate.errors import InvalidRequest, NotFound, PlanLimited
from ccgate.loops.agent import Agent, Chooser, Decision
from ccgate.loops.events import (
    ChoiceRequested,
    ChoiceResolved,
    Done,
    Failed,
    Interrupted,
    LoopEvent,
    Queued,
    Snapshot,
    Started,
    ToolCalled,
    is_final,
)
from ccgate.loops.hub import Hub, Watch
from ccgate.redact import hide_addresses
from ccgate.store.loops import LoopRecord

__all__ = ["LoopRuntime", "TurnLog", "summarize"]

#: Ended turns a runtime keeps for whoever looks later.
FINISHED_KEPT = 5

log = logging.getLogger("ccgate.loops")

#: Not a tool call: the sandbox asks whether a command may connect to ``host``.
NETWORK_ACCESS = "SandboxNetworkAccess"

#: Tools that change something; a turn in plan mode may not use them.
CHANGING_TOOLS = frozenset({"Bash", "Write", "Edit", "NotebookEdit"})

#: Starts the loop's agent: ``(record, resume?) -> started Agent``.
AgentFactory = Callable[[LoopRecord, Chooser], Awaitable[Agent]]


def summarize(tool: str, tool_input: dict[str, Any]) -> str:
    """Return a one-line, readable summary of a tool call's input."""

    def text(key: str) -> str:
        return str(tool_input.get(key, ""))

    if tool == "Bash":
        return text("command")
    if tool in ("Write", "NotebookEdit"):
        size = len(text("content") or text("new_source"))
        return f"write {text('file_path') or text('notebook_path')} ({size} characters)"
    if tool == "Edit":
        return f"edit {text('file_path')}"
    if tool == "Read":
        return text("file_path")
    if tool in ("Glob", "Grep"):
        where = f" in {text('path')}" if tool_input.get("path") else ""
        return f"{text('pattern')}{where}"
    if tool == "WebFetch":
        return text("url")
    if tool == "WebSearch":
        return text("query")
    if tool == NETWORK_ACCESS:
        return f"connect to {text('host')} from a command"
    if tool == "TodoWrite":
        return f"update the todo list ({len(tool_input.get('todos') or [])} items)"
    return json.dumps(tool_input, ensure_ascii=False)[:200]


@dataclass(eq=False)
class TurnLog:
    """One message's turn: its events from the start, for every stream that reads it."""

    turn_id: str
    content: str
    permission_mode: str
    events: list[LoopEvent] = field(default_factory=list)
    agent_events: list[AgentEvent] = field(default_factory=list)
    #: Run once the turn's last event (``final``) is known and before it is sent: what must
    #: be on record before a client can learn that the turn ended (its ledger entry).
    on_final: list[Callable[[TurnLog], Awaitable[None]]] = field(default_factory=list)
    #: Run after the turn ended and was sent.
    on_end: list[Callable[[TurnLog], Awaitable[None]]] = field(default_factory=list)
    #: The turn's last event, once it is known (``on_final`` reads it).
    final: LoopEvent | None = None
    started_at: float | None = None
    interrupted: bool = False
    #: Tool calls already announced by a ``tool_call`` event.
    announced: set[str] = field(default_factory=set)
    #: The hash of the message's body, when it came with an idempotency key.
    digest: str = ""
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def done(self) -> bool:
        """Tell whether the turn is over."""
        return bool(self.events) and is_final(self.events[-1])

    def add(self, event: LoopEvent) -> None:
        """Append an event and wake the readers."""
        self.events.append(event)
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, seen: int, timeout: float) -> bool:
        """Wait until there are more than ``seen`` events; say whether there are."""
        if len(self.events) <= seen and not self.done:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
        return len(self.events) > seen


@dataclass(eq=False)
class _Choice:
    id: str
    kind: str
    tool_input: dict[str, Any]
    turn: TurnLog
    future: asyncio.Future[Decision]
    timer: asyncio.TimerHandle | None = None


class LoopRuntime:
    """The live side of one loop; the manager keeps one per loop that was used."""

    def __init__(
        self,
        record: LoopRecord,
        start_agent: AgentFactory,
        *,
        idle_timeout: float,
        choice_timeout: float,
        gate: Gate,
        on_event: Callable[[LoopRecord, LoopEvent], None] | None = None,
    ) -> None:
        self.record = record
        #: Told of every event (webhooks); must not block or raise.
        self._on_event = on_event
        self._start_agent = start_agent
        self._idle_timeout = idle_timeout
        self._choice_timeout = choice_timeout
        self._gate = gate
        self._holding = False  # the running turn holds a gate slot
        self._deciding = 0  # choices the running turn waits for
        self.hub = Hub()
        self._queue: deque[TurnLog] = deque()
        self._current: TurnLog | None = None
        self._text_so_far = ""
        self._choices: dict[str, _Choice] = {}
        self._agent: Agent | None = None
        self._worker: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        #: Releases of the process running in the background (kept: a task nobody holds
        #: may be collected before it ends).
        self._releasing: set[asyncio.Task[None]] = set()
        #: When the loop's process became idle (None while a turn runs or without one).
        self.idle_since: float | None = None
        self._closed = False
        self._close_reason: str | None = None
        #: The last turns that ended, oldest first (for a page that opens afterwards).
        self.finished: deque[TurnLog] = deque(maxlen=FINISHED_KEPT)

    # -- what the API sees -------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Tell whether a turn is running."""
        return self._current is not None

    @property
    def queue_depth(self) -> int:
        """Return how many messages wait behind the running turn."""
        return len(self._queue)

    @property
    def current(self) -> TurnLog | None:
        """Return the running turn."""
        return self._current

    @property
    def pending_choice_id(self) -> str | None:
        """Return the choice the running turn waits for."""
        return next(iter(self._choices), None)

    @property
    def live_process(self) -> bool:
        """Tell whether the loop holds a Claude Code process."""
        return self._agent is not None and self._agent.alive

    def submit(self, content: str, permission_mode: str, *, turn_id: str | None = None) -> TurnLog:
        """Queue a message; its turn runs when the ones before it are over."""
        turn = TurnLog(turn_id or "turn_" + secrets.token_hex(12), content, permission_mode)
        ahead = len(self._queue) + (self._current is not None)
        if ahead:
            self._emit(turn, Queued(position=ahead, turn_id=turn.turn_id))  # 1: it runs next
        self._queue.append(turn)
        self._cancel_idle()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name=f"ccgate-loop-{self.record.id}")
        return turn

    def watch(self) -> tuple[Watch, Snapshot | None]:
        """Start watching; a running turn is described by a snapshot first."""
        snap = None
        if self._current is not None:
            snap = Snapshot(self._current.turn_id, self._text_so_far, self.pending_choice_id)
        return self.hub.watch(), snap

    def resolve(self, choice_id: str, body: dict[str, Any]) -> None:
        """Answer a pending choice (``{allow, message?}`` or ``{answers}``)."""
        choice = self._choices.get(choice_id)
        if choice is None:
            raise NotFound(f"no pending choice '{choice_id}'", code="choice_not_found")
        if choice.kind == "permission":
            allow = body.get("allow")
            if not isinstance(allow, bool):
                raise InvalidRequest(
                    'a permission is answered with {"allow": true|false, "message"?: ...}',
                    code="invalid_choice_payload",
                )
            message = body.get("message")
            decision = Decision(allow, str(message) if message is not None else "")
        else:
            answers = body.get("answers")
            if not isinstance(answers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in answers.items()
            ):
                raise InvalidRequest(
                    'a question is answered with {"answers": {"<question>": "<answer>"}}',
                    code="invalid_choice_payload",
                )
            decision = Decision(True, updated_input={**choice.tool_input, "answers": answers})
        self._settle(choice, decision, "api")

    def interrupt(self) -> bool:
        """Stop the running turn at once; say whether one was running."""
        turn = self._current
        if turn is None:
            return False
        turn.interrupted = True
        for choice in list(self._choices.values()):
            self._settle(choice, Decision(False, "the user interrupted the turn"), "interrupt")
        if self._agent is not None:
            self._agent.interrupt()
        return True

    async def close(self, reason: str) -> None:
        """Stop: end the running turn and the queued ones with ``loop_closed``, end the process."""
        self._closed = True
        self._close_reason = reason
        self._cancel_idle()
        while self._queue:
            turn = self._queue.popleft()
            await self._finish(turn, Failed("loop_closed", reason))
            await self._ended(turn)
        self.interrupt()
        if self._worker is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(self._worker), timeout=20)
        await self._release()
        if self._releasing:  # a release begun before the close
            await asyncio.wait(list(self._releasing), timeout=20)
        self.hub.publish(Failed("loop_closed", reason))  # watchers learn why their watch ends
        self.hub.close()

    # -- the worker ---------------------------------------------------------------------

    async def _work(self) -> None:
        while self._queue and not self._closed:
            turn = self._queue.popleft()
            self._current, self._text_so_far = turn, ""
            try:
                await self._run(turn)
            except Exception:  # noqa: BLE001 - a failed turn must not stop the loop
                log.error("loop_turn_failed loop=%s", self.record.id, exc_info=True)
                if not turn.done:
                    # The exception's text stays in the log: it may hold a statement's values.
                    message = (
                        "the turn failed on an internal error; the details are in ccgate's log"
                    )
                    await self._finish(turn, Failed("internal_error", message))
            finally:
                self._current = None
                self.finished.append(turn)
                await self._ended(turn)
        if not self._closed:
            self.idle_since = time.monotonic()
            self._idle = asyncio.get_running_loop().call_later(
                self._idle_timeout, self._release_soon
            )

    async def _ended(self, turn: TurnLog) -> None:
        if turn.final is None:  # ended without a last event (cancelled): recorded as it stands
            await self._finalize(turn, turn.events[-1] if turn.events else None)
        for callback in turn.on_end:
            try:
                await callback(turn)
            except Exception:  # noqa: BLE001 - one listener's failure is logged, not spread
                log.warning("loop_turn_listener_failed loop=%s", self.record.id, exc_info=True)

    async def _run(self, turn: TurnLog) -> None:
        await self._gate.acquire(bounded=False)
        self._holding = True
        try:
            await self._run_holding(turn)
        finally:
            if self._holding:
                self._holding = False
                self._gate.release()

    async def _run_holding(self, turn: TurnLog) -> None:
        cold = not self.live_process
        if cold:
            await self._release()
            try:
                self._agent = await self._start_agent(self.record, self._choose)
            except PlanLimited as exc:  # no upstream account can take the loop now
                await self._finish(turn, Failed(exc.loop_code, exc.message))
                return
            except Exception as exc:  # noqa: BLE001 - reported to the turn
                message = hide_addresses(f"Claude Code could not start: {exc}")
                await self._finish(turn, Failed("cli_crashed", message))
                return
        turn.started_at = time.time()
        self._emit(turn, Started(turn.turn_id, cold_start=cold))
        if turn.interrupted:
            await self._finish(turn, self._stopped(turn))
            return
        assert self._agent is not None
        calls: dict[str, tuple[str, list[str]]] = {}
        async for event in self._agent.run(turn.content, turn.permission_mode):
            turn.agent_events.append(event)
            await self._relay(turn, event, calls)
        if not turn.done:
            await self._finish(turn, Failed("cli_crashed", "Claude Code ended the turn early"))
        if not self._agent.alive:
            self._agent = None

    async def _relay(
        self, turn: TurnLog, event: AgentEvent, calls: dict[str, tuple[str, list[str]]]
    ) -> None:
        if isinstance(event, TextDelta):
            self._text_so_far += event.text
            self._emit(turn, event)
        elif isinstance(event, ThinkingDelta) and event.text:
            self._emit(turn, event)
        elif isinstance(event, ToolCallStart):
            calls[event.tool_use_id] = (event.name, [])
        elif isinstance(event, ToolCallDelta) and event.tool_use_id in calls:
            calls[event.tool_use_id][1].append(event.partial_json)
        elif isinstance(event, ToolCallEnd) and event.tool_use_id in calls:
            name, pieces = calls.pop(event.tool_use_id)
            try:
                tool_input = json.loads("".join(pieces) or "{}")
            except ValueError:
                tool_input = {}
            summary = summarize(name, tool_input if isinstance(tool_input, dict) else {})
            self._announce(turn, event.tool_use_id, name, summary)
        elif isinstance(event, ToolResult):
            self._emit(turn, event)
        elif isinstance(event, TurnEnd):
            await self._finish(turn, Done(turn.turn_id, last_usage(turn.agent_events) or Usage()))
        elif isinstance(event, TurnError):
            if turn.interrupted:
                await self._finish(turn, self._stopped(turn))
            else:
                await self._finish(turn, Failed(event.kind, hide_addresses(event.message)))

    def _announce(self, turn: TurnLog, tool_use_id: str, tool: str, summary: str) -> None:
        """Send a call's ``tool_call`` once (a choice may need it before the stream has it)."""
        if tool_use_id and tool_use_id in turn.announced:
            return
        turn.announced.add(tool_use_id)
        self._emit(turn, ToolCalled(tool_use_id, tool, summary))

    def _stopped(self, turn: TurnLog) -> LoopEvent:
        """Return how a stopped turn ends: interrupted, or failed when the loop closed."""
        if self._close_reason is not None:
            return Failed("loop_closed", f"the turn was stopped: {self._close_reason}")
        return Interrupted(turn.turn_id)

    def _emit(self, turn: TurnLog, event: LoopEvent) -> None:
        turn.add(event)
        self.hub.publish(event)
        if self._on_event is not None:
            try:
                self._on_event(self.record, event)
            except Exception:  # noqa: BLE001 - a listener never stops a turn
                log.warning("loop_event_listener_failed loop=%s", self.record.id, exc_info=True)

    async def _finish(self, turn: TurnLog, event: LoopEvent) -> None:
        """End the turn with ``event``: recorded first (``on_final``), then sent."""
        if turn.done or turn.final is not None:
            return
        await self._finalize(turn, event)
        self._emit(turn, event)

    async def _finalize(self, turn: TurnLog, event: LoopEvent | None) -> None:
        turn.final = event
        for callback in turn.on_final:
            try:
                await callback(turn)
            except Exception:  # noqa: BLE001 - one listener's failure is logged, not spread
                log.warning("loop_turn_listener_failed loop=%s", self.record.id, exc_info=True)

    # -- choices ------------------------------------------------------------------------

    async def _choose(self, tool: str, tool_input: dict[str, Any], tool_use_id: str) -> Decision:
        turn = self._current
        if turn is None or turn.interrupted:
            return Decision(False, "the turn was interrupted")
        if turn.permission_mode == "plan" and tool in CHANGING_TOOLS:
            # Claude Code's plan mode would still ask before an edit; a loop's plan mode
            # changes nothing.
            return Decision(
                False,
                "this turn is in plan mode: read, search and plan, but run no command and "
                "change no file; present the plan instead",
            )
        kind = "question" if tool == "AskUserQuestion" else "permission"
        choice = _Choice(
            "choice_" + secrets.token_hex(12),
            kind,
            tool_input,
            turn,
            asyncio.get_running_loop().create_future(),
        )
        if kind == "question":
            payload: dict[str, Any] = {"questions": tool_input.get("questions", [])}
        else:
            payload = {
                "tool": tool,
                "tool_use_id": tool_use_id,
                "summary": summarize(tool, tool_input),
                "input": tool_input,
            }
        self._choices[choice.id] = choice
        choice.timer = asyncio.get_running_loop().call_later(
            self._choice_timeout,
            self._settle,
            choice,
            Decision(False, f"nobody answered within {self._choice_timeout:g} s"),
            "timeout",
        )
        if tool != NETWORK_ACCESS:
            self._announce(turn, tool_use_id, tool, summarize(tool, tool_input))
        self._emit(turn, ChoiceRequested(choice.id, kind, payload))  # type: ignore[arg-type]
        self._deciding += 1
        if self._deciding == 1 and self._holding:
            self._holding = False
            self._gate.release()  # nobody works while a person decides
        try:
            return await choice.future
        finally:
            self._choices.pop(choice.id, None)
            if choice.timer is not None:
                choice.timer.cancel()
            self._deciding -= 1
            if self._deciding == 0 and not self._holding and self._current is turn:
                await self._gate.acquire(bounded=False)
                if self._current is turn and not self._holding:
                    self._holding = True
                else:  # the turn ended meanwhile (interrupted): its slot is not needed
                    self._gate.release()

    def _settle(self, choice: _Choice, decision: Decision, source: str) -> None:
        if choice.future.done():
            return
        self._choices.pop(choice.id, None)
        choice.future.set_result(decision)
        self._emit(choice.turn, ChoiceResolved(choice.id, source))

    # -- the process --------------------------------------------------------------------

    @property
    def idle_pid(self) -> int | None:
        """Return the pid of the loop's process while it waits for a message, else None."""
        if self._idle is None or self._current is not None or self._agent is None:
            return None
        return self._agent.pid if self._agent.alive else None

    def release_idle(self) -> None:
        """End the loop's idle process now (memory is short); its next message resumes."""
        if self._idle is not None and self._current is None:
            self._cancel_idle()
            self._release_soon()

    def _release_soon(self) -> None:
        """End the process in a task of its own, kept until it is done."""
        task = asyncio.get_running_loop().create_task(
            self._release(), name=f"ccgate-loop-release-{self.record.id}"
        )
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    def _cancel_idle(self) -> None:
        self.idle_since = None
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    async def _release(self) -> None:
        """End the loop's process (idle, closed, or dead)."""
        agent, self._agent = self._agent, None
        if agent is not None and self._current is None:
            log.info("loop_process_released loop=%s", self.record.id)
            await agent.aclose()
        elif agent is not None:
            self._agent = agent  # a turn is running on it: it stays
