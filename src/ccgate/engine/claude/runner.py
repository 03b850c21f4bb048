"""The runner of the compatible APIs: each turn on a Claude Code process of its own.

Each turn gets one
CLI process, owned by one asyncio task (the SDK's cancel scopes break when a
client is used from another task); the consumer reads the turn's events from
a queue. Isolation per process: its own ``CLAUDE_CONFIG_DIR`` (a worker slot
under the data dir), a neutral empty working directory, ``setting_sources=[]``,
no built-in tools, the client's system prompt instead of Claude Code's, and an
environment from which ccgate's own secrets are blanked.

The client's tools are the only tools the model gets: an in-process MCP server
(``engine.client_tools``) whose calls wait for the client's results. While a
turn waits for them, ``request_timeout`` does not run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

from claude_agent_sdk import (
    ClaudeAgentOptions,
    ClaudeSDKClient,
    CLIConnectionError,
    CLINotFoundError,
    McpSdkServerConfig,
    ProcessError,
)

from ccgate.engine.claude.process import (
    CLIExited,
    Pause,
    RunnerConfig,
    cli_pid,
    cli_settings_env,
    exit_code,
    keep_tail,
    scrubbed_env,
    send_signal,
    short,
)
from ccgate.engine.claude.translate import Translator, moves_on
from ccgate.engine.cli_info import find_cli
from ccgate.engine.client_tools import SERVER_NAME, client_tool_server
from ccgate.engine.events import (
    AgentEvent,
    TurnEnd,
    TurnError,
    TurnStarted,
)
from ccgate.engine.launcher import tethered
from ccgate.engine.prompt import system_prompt, user_message_content
from ccgate.engine.stops import apply_stop_sequences
from ccgate.engine.turn import TurnRequest
from ccgate.engine.workdirs import WorkerDirs

__all__ = ["ClaudeRunner"]

log = logging.getLogger("ccgate.engine")

#: System prompts longer than this go through a file: argv strings are capped (128 KiB).
_INLINE_SYSTEM_PROMPT_MAX = 32 * 1024

#: How long the CLI lets one client tool call run; ccgate ends a turn that waits too
#: long itself (``tool_result_timeout``), so the CLI's own limit only has to be longer.
_TOOL_CALL_LIMIT_MS = 7 * 24 * 3600 * 1000


_END = object()


class ClaudeRunner:
    """Run each turn on a fresh Claude Code process; see :class:`ccgate.engine.runner.Runner`."""

    def __init__(self, config: RunnerConfig) -> None:
        self._config = config
        self._dirs = WorkerDirs(config.data_dir)
        self._pid_tasks: dict[int, asyncio.Task[None]] = {}
        #: Processes that wait for client tool results: they are killed outright, since a
        #: gentler stop lets the CLI answer the call itself and ask the model once more.
        self._waiting: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._finishing: set[asyncio.Task[None]] = set()
        self._stopping: str | None = None
        self._cli: Path | None = None

    def live_processes(self) -> int:
        """Return how many CLI processes this runner has alive."""
        return len(self._pid_tasks)

    def stop_all(self, reason: str) -> None:
        """End every live turn now; each ends with ``TurnError("unavailable", reason)``."""
        self._stopping = reason
        live = [t for t in self._tasks if t not in self._finishing]
        for pid, task in list(self._pid_tasks.items()):
            if task in live:
                send_signal(pid, self._stopsend_signal(pid))
        for task in live:
            task.cancel()

    async def aclose(self) -> None:
        """End every turn; let finished ones exit on their own, stop live ones now."""
        self.stop_all("ccgate is shutting down")
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=15)

    async def run(self, turn: TurnRequest) -> AsyncGenerator[AgentEvent, None]:
        """Run ``turn`` on its own CLI process and yield its events."""
        events: AsyncGenerator[AgentEvent, None] = self._run_raw(turn)
        if turn.stop_sequences:
            events = apply_stop_sequences(events, turn.stop_sequences)
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()

    async def _run_raw(self, turn: TurnRequest) -> AsyncGenerator[AgentEvent, None]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        holder: dict[str, int] = {}
        task = asyncio.create_task(self._own(turn, queue, holder), name="ccgate-turn")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._finishing.discard)
        finished = False
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    finished = True
                    return
                if isinstance(item, TurnError) or (
                    isinstance(item, TurnEnd) and not item.waiting_for
                ):
                    finished = True
                    self._finishing.add(task)
                yield item
                if finished:
                    return
        finally:
            # A finished turn's process exits on its own in the background (it flushes
            # its transcript first; aclose() still waits for it). A consumer that left
            # early (disconnect, stop sequence) ends the process now, without the SDK's
            # graceful-exit grace period.
            if not finished and not task.done():
                if "pid" in holder:
                    send_signal(holder["pid"], self._stopsend_signal(holder["pid"]))
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.shield(asyncio.gather(task, return_exceptions=True))

    async def _own(
        self, turn: TurnRequest, queue: asyncio.Queue[Any], holder: dict[str, int]
    ) -> None:
        """Own one CLI process for one turn, pushing its events into ``queue``."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._config.request_timeout) as clock:
                with self._dirs.lease() as workdir:
                    await self._drive(turn, queue, holder, workdir, clock)
        except TimeoutError:
            await queue.put(
                TurnError(
                    "timeout",
                    f"the turn took longer than request_timeout "
                    f"({self._config.request_timeout:g} s) and was stopped",
                )
            )
        except CLINotFoundError as exc:
            await queue.put(
                TurnError(
                    "cli_crashed",
                    f"Claude Code CLI not found ({exc}); reinstall claude-agent-sdk "
                    "or set CCGATE_CLI_PATH",
                )
            )
        except (ProcessError, CLIExited) as exc:
            code = exc.exit_code
            detail = (
                f": {exc.stderr_line[:300]}"
                if isinstance(exc, CLIExited) and exc.stderr_line
                else ""
            )
            how = f" with code {code}" if code is not None else ""
            await queue.put(
                TurnError(
                    "cli_crashed",
                    f"the Claude Code process exited{how}{detail}",
                    exit_code=code,
                )
            )
        except asyncio.CancelledError:
            if self._stopping is None:
                raise
            # Stopped by stop_all: the consumer gets a clean error instead of a cut.
            await queue.put(TurnError("unavailable", self._stopping))
        except Exception as exc:  # noqa: BLE001 - any SDK failure becomes a turn error
            log.warning("turn_failed error=%s", type(exc).__name__, exc_info=True)
            await queue.put(TurnError("cli_crashed", f"Claude Code failed: {short(exc)}"))
        finally:
            if turn.tool_box is not None:
                turn.tool_box.close("the turn ended")
            log.debug("turn_owner_done ms=%d", (time.monotonic() - started) * 1000)
            queue.put_nowait(_END)

    async def _drive(
        self,
        turn: TurnRequest,
        queue: asyncio.Queue[Any],
        holder: dict[str, int],
        workdir: Path,
        clock: asyncio.Timeout,
    ) -> None:
        options = self._options(turn, workdir)
        stderr_tail: list[str] = []
        options.stderr = lambda line: keep_tail(stderr_tail, line)
        client = ClaudeSDKClient(options)
        completed = False
        pid: int | None = None
        try:
            await client.connect()
            pid = cli_pid(client)
            if pid is not None:
                holder["pid"] = pid
                self._pid_tasks[pid] = asyncio.current_task()  # type: ignore[assignment]
            await queue.put(TurnStarted(model=turn.model, cold_start=True))
            if turn.session is None or turn.session.deferred_call is None:
                await client.query(_one_message(turn))
            # else: the CLI re-runs the deferred call at start and goes on by itself.
            translator = Translator(frozenset(t.name for t in turn.offered_tools()))
            paused = Pause(clock, self._waiting, pid)
            async for message in client.receive_response():
                if moves_on(message):
                    paused.resume()
                for event in translator.feed(message):
                    await queue.put(event)
                    if isinstance(event, TurnEnd) and event.waiting_for:
                        paused.start()
                if translator.ended_early:
                    break
            if translator.ended_early:
                return  # finally stops the CLI: it would go on by itself
            for event in translator.finish(stderr_tail):
                await queue.put(event)
            completed = True
        except Exception as exc:
            # However the SDK words it, a process that died is a crash with an exit code.
            code = exc.exit_code if isinstance(exc, ProcessError) else None
            code = code if code is not None else await exit_code(client)
            tail = stderr_tail[-1] if stderr_tail else ""
            if code is not None and code != 0:
                raise CLIExited(code, tail) from exc
            if code is None and isinstance(exc, CLIConnectionError) and tail:
                # The SDK dropped the process (and its exit code) when it failed to start.
                raise CLIExited(None, tail) from exc
            raise
        finally:
            if not completed and pid is not None:
                # Cancelled or failed mid-turn: the process would otherwise get the SDK's
                # graceful-exit grace period before it is terminated.
                send_signal(pid, self._stopsend_signal(pid))
            query = getattr(client, "_query", None)
            try:
                await client.disconnect()
            finally:
                # A cancelled disconnect skips this; an open stream warns when collected.
                close_stream = getattr(query, "close_receive_stream", None)
                if close_stream is not None:
                    close_stream()
                if pid is not None:
                    self._pid_tasks.pop(pid, None)
                    self._waiting.discard(pid)

    def _cli_path(self) -> Path | None:
        if self._cli is None:
            self._cli = tethered(find_cli(self._config.cli_path), self._config.data_dir)
        return self._cli or self._config.cli_path

    def _stopsend_signal(self, pid: int) -> signal.Signals:
        return signal.SIGKILL if pid in self._waiting else signal.SIGTERM

    def _options(self, turn: TurnRequest, workdir: Path) -> ClaudeAgentOptions:
        system: Any = system_prompt(turn)
        if len(system.encode()) > _INLINE_SYSTEM_PROMPT_MAX:
            path = workdir / "system-prompt.txt"
            path.write_text(system)
            system = {"type": "file", "path": str(path)}
        resume = session_id = None
        if turn.session is not None:
            if turn.session.resume:
                resume = turn.session.cli_session_id
            else:
                session_id = turn.session.cli_session_id
        thinking: Any = None
        if turn.thinking_budget:
            thinking = {"type": "enabled", "budget_tokens": turn.thinking_budget}
        servers: dict[str, Any] = {}
        allowed: list[str] = []
        offered = turn.offered_tools()
        if offered and turn.tool_box is not None:
            server = client_tool_server(offered, turn.tool_box)
            servers[SERVER_NAME] = McpSdkServerConfig(type="sdk", name=SERVER_NAME, instance=server)
            allowed.append(f"mcp__{SERVER_NAME}")
        return ClaudeAgentOptions(
            tools=[],
            mcp_servers=servers,
            allowed_tools=allowed,
            setting_sources=[],
            strict_mcp_config=True,
            system_prompt=system,
            model=turn.model,
            cwd=str(self._dirs.neutral_cwd),
            env=self._env(turn, workdir),
            include_partial_messages=True,
            thinking=thinking,
            resume=resume,
            session_id=session_id,
            cli_path=self._cli_path(),
            max_buffer_size=64 * 1024 * 1024,
        )

    def _env(self, turn: TurnRequest, workdir: Path) -> dict[str, str]:
        env = scrubbed_env(os.environ, self._config.secrets)
        env.update(cli_settings_env(workdir, self._config))
        env.update(
            {
                # Client tools keep their own names (no mcp__<server>__ prefix) and wait
                # as long as ccgate lets them.
                "CLAUDE_AGENT_SDK_MCP_NO_PREFIX": "1",
                "MCP_TOOL_TIMEOUT": str(_TOOL_CALL_LIMIT_MS),
                "MAX_MCP_OUTPUT_TOKENS": "1000000",
            }
        )
        if self._config.upstream_url:
            env["ANTHROPIC_BASE_URL"] = self._config.upstream_url
        if self._config.upstream_api_key:
            env["ANTHROPIC_API_KEY"] = self._config.upstream_api_key
        if turn.max_tokens:
            env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = str(turn.max_tokens)
        env.update(self._config.extra_env)
        return env


def _one_message(turn: TurnRequest) -> AsyncIterator[dict[str, Any]]:
    async def stream() -> AsyncIterator[dict[str, Any]]:
        yield {
            "type": "user",
            "message": {"role": "user", "content": user_message_content(turn)},
            "parent_tool_use_id": None,
        }

    return stream()
