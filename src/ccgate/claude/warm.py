"""A Claude Code process that outlives its turn: what it was started with, whom it serves.

A CLI process is configured when it starts (model, system prompt, tools,
thinking, output limit): :class:`ProcessConfig` is that configuration, and its
``key`` says which turns a process can serve. :class:`CliProcess` is the
record of one process: the conversation (Claude Code session) it serves, its
state, and the inbox through which the one task that owns it receives turns
(:class:`Job`). A process serves exactly one conversation for its whole life:
a pre-started one is bound to a conversation when it is first used and never
to another.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ccgate.claude.prompt import system_prompt
from ccgate.engine.toolbox import ToolResultBox
from ccgate.engine.turn import Effort, OutputSchema, Thinking, ToolSpec, TurnRequest

__all__ = ["CliProcess", "Job", "ProcessConfig", "ProcessState"]


@dataclass(frozen=True)
class ProcessConfig:
    """What a Claude Code process is started with; turns with the same ``key`` can share it."""

    model: str
    system: str
    tools: tuple[ToolSpec, ...] = ()
    thinking: Thinking | None = None
    effort: Effort | None = None
    max_tokens: int | None = None
    #: Structured output: Claude Code holds every turn of the process to this schema.
    output: OutputSchema | None = None

    @classmethod
    def of(cls, turn: TurnRequest) -> ProcessConfig:
        """Return the configuration a process needs to run ``turn``."""
        tools = turn.offered_tools()
        return cls(
            model=turn.model,
            system=system_prompt(turn),
            tools=tools,
            thinking=turn.thinking,
            effort=turn.effort,
            max_tokens=turn.max_tokens,
            output=turn.output,
        )

    @cached_property
    def key(self) -> str:
        """Return a digest naming this configuration (it holds no text of it)."""
        canonical = json.dumps(
            [
                self.model,
                self.system,
                [[t.name, t.description, t.input_schema] for t in self.tools],
                None
                if self.thinking is None
                else [self.thinking.budget_tokens, self.thinking.display],
                self.effort,
                self.max_tokens,
                self.output.text if self.output is not None else None,
            ],
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:24]


@dataclass(eq=False)
class Job:
    """One turn handed to a process's owner; its events (then an end marker) go to ``out``."""

    turn: TurnRequest
    #: Where the turn's calls of client tools wait for their results.
    box: ToolResultBox | None
    out: asyncio.Queue[Any]
    #: The process starts for this turn (a cold start) rather than running it warm.
    cold: bool


class ProcessState(enum.Enum):
    """Where a process is in its life."""

    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    CLOSED = "closed"


@dataclass(eq=False)
class CliProcess:
    """One Claude Code process, owned by one task, serving one conversation."""

    config: ProcessConfig
    #: The Claude Code session the process runs: its conversation, for its whole life.
    session_id: str
    #: Started ahead of demand; not yet bound to a conversation.
    spare: bool
    state: ProcessState = ProcessState.STARTING
    pid: int | None = None
    #: The SDK's process handle (``returncode`` tells whether it still runs).
    handle: Any = None
    #: Turns it has served.
    served: int = 0
    started_at: float = field(default_factory=time.monotonic)
    idle_since: float = field(default_factory=time.monotonic)
    #: The tool box of the turn running now (the client-tools server reads it).
    box: ToolResultBox | None = None
    #: Its running turn has ended for the client; the process finishes reading it.
    finishing: bool = False
    #: End it after its running turn instead of keeping it (its session was discarded).
    doomed: bool = False
    #: Why it was ended, when ccgate ended it while idle.
    closed_because: str | None = None
    memory_mb: float | None = None
    inbox: asyncio.Queue[Job | None] = field(default_factory=asyncio.Queue)
    #: Set while the process is idle or closed: nothing of it is running.
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def alive(self) -> bool:
        """Tell whether the CLI still runs."""
        if self.state is ProcessState.CLOSED:
            return False
        code = getattr(self.handle, "returncode", None)
        return self.handle is None or code is None

    def submit(self, job: Job) -> None:
        """Hand the (idle) process its next turn."""
        self.state = ProcessState.BUSY
        self.finishing = False
        self.settled.clear()
        self.inbox.put_nowait(job)

    def end(self, reason: str) -> None:
        """Ask an idle process's owner to end it (a no-op for a busy or closed one)."""
        if self.state is ProcessState.IDLE:
            self.closed_because = reason
            self.state = ProcessState.CLOSED
            self.inbox.put_nowait(None)
