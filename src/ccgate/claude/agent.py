"""A loop's agent: one Claude Code process with its built-in tools, confined to a workspace.

A loop (``loops.manager``) runs its turns on one :class:`ClaudeAgent` while it
is active; :class:`ClaudeAgents` starts them (the ``loops.agent.Agents`` seam).
The process is owned by one task (the SDK's cancel scopes break when a
client is used from another task); turns and interrupts reach it through a
queue. Confinement, all by Claude Code's own means:

- its working directory is the workspace; ``blockReadsOutsideWorkingDirectories``
  and ``blockWritesOutsideWorkingDirectories`` keep file tools inside it;
- commands run in Claude Code's sandbox (bubblewrap on Linux), which lets them
  write the workspace and the agent's own temporary directory and nothing else,
  hides the paths in ``deny_read`` (ccgate's data dir, other loops, the
  operator's Claude login), and never runs a command outside the sandbox;
- commands see an environment made for them, without the operator's
  variables or the upstream credential (``claude.environment``);
- every tool call that needs permission under the permission mode goes to
  ``chooser`` (``can_use_tool``): a person or program decides.

With ``RunnerConfig.transcripts`` the loop's session transcript is shared with
the other replicas (``claude.shared``): stored after every turn and when the
process ends, and fetched before an agent starts, so a loop taken over by
another replica resumes its session there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from claude_agent_sdk import (
    ClaudeAgentOptions,
    ClaudeSDKClient,
    PermissionResultAllow,
    PermissionResultDeny,
    ToolPermissionContext,
)

from ccgate.claude import sdk
from ccgate.claude.launch import Launch
from ccgate.claude.process import (
    RunnerConfig,
    keep_tail,
    send_signal,
    short,
)
from ccgate.claude.shared import Found, SharedTranscripts
from ccgate.claude.transcript import ACCOUNT_REFUSALS, rewind_transcript, transcript_path
from ccgate.claude.translate import Translator
from ccgate.claude.workdirs import WorkerDirs, user_credentials
from ccgate.engine.events import AgentEvent, TurnError, TurnStarted, Usage
from ccgate.loops.agent import AgentSpec, Chooser

__all__ = ["AGENT_TOOLS", "ClaudeAgent", "ClaudeAgents", "sandbox_missing"]

log = logging.getLogger("ccgate.engine")

#: The built-in tools an agent has (no sub-agents, schedules or plugins).
AGENT_TOOLS = (
    "Bash",
    "Read",
    "Write",
    "Edit",
    "Glob",
    "Grep",
    "NotebookEdit",
    "TodoWrite",
    "WebFetch",
    "WebSearch",
    "AskUserQuestion",
)

_END = object()


@dataclass
class _Turn:
    content: str
    permission_mode: str
    out: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)


def sandbox_missing() -> list[str]:
    """Return the programs Claude Code's sandbox needs that are not installed here."""
    if not sys.platform.startswith("linux"):
        return []
    return [name for name in ("bwrap", "socat") if shutil.which(name) is None]


class ClaudeAgents:
    """Start loops' agents as Claude Code processes (the ``loops.agent.Agents`` seam)."""

    def __init__(
        self,
        config: RunnerConfig,
        dirs: WorkerDirs,
        *,
        launches: Callable[[str], Launch] | None = None,
    ) -> None:
        """``launches(model)`` says how to start an agent of ``model`` (on which upstream
        account, ``claude.accounts``); without it every agent runs on ``config``."""
        self._config = config
        self._launch = Launch(config, dirs)
        self._launches = launches
        self._shared = SharedTranscripts(config.transcripts)

    async def start(self, spec: AgentSpec, chooser: Chooser) -> ClaudeAgent:
        """Start an agent; it resumes the loop's session when Claude Code kept it."""
        missing = sandbox_missing()
        if missing:
            raise RuntimeError(
                f"Claude Code's sandbox needs {' and '.join(missing)}, which are not installed: "
                "install the Debian packages bubblewrap and socat"
            )
        data_dir = self._config.data_dir
        # Besides what the loop hides: ccgate's data dir and the operator's login.
        deny = {*spec.deny_read, data_dir, user_credentials().parent}
        path = transcript_path(data_dir, spec.workspace, spec.session_id)
        # A loop is never rebuilt: a local file the store cannot give (it was written
        # before transcripts were shared, or the store failed) is resumed as it is.
        resume = await self._shared.ready(spec.session_id, path) is not Found.ABSENT
        resume = resume or path.exists()
        launch = self._launches(spec.model) if self._launches is not None else self._launch
        agent = ClaudeAgent(launch, spec, chooser, resume=resume, deny=deny, shared=self._shared)
        await agent.start()
        return agent


class ClaudeAgent:
    """One Claude Code process running an agent's turns, one at a time."""

    def __init__(
        self,
        launch: Launch,
        spec: AgentSpec,
        chooser: Chooser,
        *,
        resume: bool,
        deny: set[Path],
        shared: SharedTranscripts | None = None,
    ) -> None:
        self._launch = launch
        self._config = launch.config
        self._shared = shared if shared is not None else SharedTranscripts(None)
        self._spec = spec
        self._transcript = transcript_path(launch.config.data_dir, spec.workspace, spec.session_id)
        self._chooser = chooser
        self._resume = resume
        self._deny = tuple(sorted(deny))
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._interrupt = asyncio.Event()
        self._owner: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._mode = spec.permission_mode
        self._turns = 0
        self.pid: int | None = None
        self.stderr_tail: list[str] = []
        #: The account refused the last turn before the model answered.
        self._refused = False

    @property
    def alive(self) -> bool:
        """Tell whether the process is running and takes turns (not after its account
        refused a turn: it is ending, so the next turn starts on another account)."""
        return self._owner is not None and not self._owner.done() and not self._refused

    async def start(self) -> None:
        """Start the process; raise what stopped it from starting."""
        self._ready = asyncio.get_running_loop().create_future()
        self._owner = asyncio.create_task(self._own(), name="ccgate-agent")
        await asyncio.shield(self._ready)

    async def run(self, content: str, permission_mode: str) -> AsyncIterator[AgentEvent]:
        """Run one turn and yield its events; the last is a ``TurnEnd`` or a ``TurnError``."""
        if not self.alive:
            yield TurnError("cli_crashed", "the Claude Code process is not running")
            return
        turn = _Turn(content, permission_mode)
        self._interrupt.clear()
        await self._inbox.put(turn)
        while True:
            item = await turn.out.get()
            if item is _END:
                return
            yield item

    def interrupt(self) -> None:
        """Stop the running turn at once (the CLI's interrupt); the process stays."""
        self._interrupt.set()

    async def aclose(self) -> None:
        """End the process (its transcript is flushed first)."""
        if self._owner is None:
            return
        await self._inbox.put(_END)
        try:
            await asyncio.wait_for(asyncio.shield(self._owner), timeout=15)
        except TimeoutError:
            self.kill()
            with contextlib.suppress(BaseException):
                await self._owner

    def kill(self) -> None:
        """End the process now."""
        if self.pid is not None:
            send_signal(self.pid, signal.SIGKILL)
        if self._owner is not None:
            self._owner.cancel()

    def _options(self, workdir: Path, credential_path: Path | None) -> ClaudeAgentOptions:
        spec = self._spec
        tmp = spec.private_dir / "tmp"
        tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
        settings = {
            "permissions": {
                "blockReadsOutsideWorkingDirectories": True,
                "blockWritesOutsideWorkingDirectories": True,
            },
            "sandbox": {
                "enabled": True,
                "autoAllowBashIfSandboxed": False,
                "allowUnsandboxedCommands": False,
                "filesystem": {
                    "denyRead": [str(p) for p in self._deny],
                    "allowRead": [str(spec.workspace), str(spec.private_dir)],
                },
            },
        }
        # The credential on its descriptor: commands inherit the CLI's environment.
        env = self._launch.environment(workdir, credential_path)
        env["CLAUDE_CODE_TMPDIR"] = str(tmp)
        env.update(self._config.extra_env)
        return ClaudeAgentOptions(
            tools=list(AGENT_TOOLS),
            setting_sources=[],
            strict_mcp_config=True,
            settings=json.dumps(settings),
            permission_mode=spec.permission_mode,  # type: ignore[arg-type]
            can_use_tool=self._can_use_tool,
            model=spec.model,
            cwd=str(spec.workspace),
            env=env,
            include_partial_messages=True,
            resume=spec.session_id if self._resume else None,
            session_id=None if self._resume else spec.session_id,
            cli_path=self._launch.cli_path(),
            stderr=lambda line: keep_tail(self.stderr_tail, line),
            max_buffer_size=64 * 1024 * 1024,
        )

    async def _can_use_tool(
        self, tool: str, tool_input: dict[str, Any], context: ToolPermissionContext
    ) -> PermissionResultAllow | PermissionResultDeny:
        decision = await self._chooser(tool, tool_input, context.tool_use_id or "")
        if decision.allow:
            return PermissionResultAllow(updated_input=decision.updated_input)
        return PermissionResultDeny(message=decision.message or "the user denied this tool call")

    async def _own(self) -> None:
        assert self._ready is not None
        try:
            with contextlib.ExitStack() as stack:
                workdir, path = self._launch.lease(stack)
                client = ClaudeSDKClient(self._options(workdir, path))
                try:
                    await client.connect()
                    if path is not None:
                        path.unlink(missing_ok=True)
                    self.pid = sdk.cli_pid(client)
                    self._ready.set_result(None)
                    while True:
                        turn = await self._inbox.get()
                        if turn is _END:
                            break
                        await self._turn(client, turn)
                        if self._refused:
                            # The upstream account refused before the model answered: end
                            # this process so the loop's next turn starts on another account
                            # (``claude.accounts``), from the session as it was.
                            log.info("agent_account_refused; the next turn starts afresh")
                            break
                finally:
                    with contextlib.suppress(Exception):
                        await client.disconnect()
                    # The process flushed its transcript as it ended.
                    await self._shared.upload(self._spec.session_id, self._transcript)
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError())
            if not isinstance(exc, Exception):
                raise
            log.warning("agent_failed error=%s", type(exc).__name__, exc_info=True)
        finally:
            self._fail_waiting()

    def _fail_waiting(self) -> None:
        """Answer a turn still queued when the process is gone."""
        while not self._inbox.empty():
            turn = self._inbox.get_nowait()
            if isinstance(turn, _Turn):
                turn.out.put_nowait(
                    TurnError("cli_crashed", "the Claude Code process ended before this turn")
                )
                turn.out.put_nowait(_END)

    async def _turn(self, client: ClaudeSDKClient, turn: _Turn) -> None:
        started = time.monotonic()
        try:
            await turn.out.put(
                TurnStarted(
                    model=self._spec.model,
                    cold_start=self._turns == 0,
                    account=self._config.account,
                )
            )
            self._turns += 1
            if turn.permission_mode != self._mode:
                await client.set_permission_mode(turn.permission_mode)  # type: ignore[arg-type]
                self._mode = turn.permission_mode
            transcript = self._transcript
            mark = transcript.stat().st_size if transcript.exists() else None
            await client.query(turn.content)
            pump = asyncio.ensure_future(self._pump(client, turn))
            while not pump.done():
                stop = asyncio.ensure_future(self._interrupt.wait())
                done, _ = await asyncio.wait({pump, stop}, return_when=asyncio.FIRST_COMPLETED)
                if stop in done:
                    self._interrupt.clear()
                    with contextlib.suppress(Exception):
                        await client.interrupt()
                else:
                    stop.cancel()
            pump.result()
            if self._refused:
                rewind_transcript(transcript, mark)
            # The session as the loop's next turn resumes it, wherever that runs.
            await self._shared.upload(self._spec.session_id, transcript)
        except Exception as exc:  # noqa: BLE001 - the process failed mid-turn
            tail = f": {self.stderr_tail[-1][:300]}" if self.stderr_tail else ""
            await turn.out.put(TurnError("cli_crashed", f"Claude Code failed: {short(exc)}{tail}"))
            raise
        finally:
            log.debug("agent_turn_done ms=%d", (time.monotonic() - started) * 1000)
            turn.out.put_nowait(_END)

    async def _pump(self, client: ClaudeSDKClient, turn: _Turn) -> None:
        translator = Translator(all_tools=True, on_plan=self._config.on_plan)
        answered = False
        async for message in client.receive_response():
            for event in translator.feed(message):
                answered = answered or not isinstance(event, TurnStarted | Usage)
                await turn.out.put(event)
        for event in translator.finish(self.stderr_tail):
            if isinstance(event, TurnError) and not answered:
                self._refused = event.kind in ACCOUNT_REFUSALS
            await turn.out.put(event)
