"""The Claude Code runner: turns run by the real CLI through ``claude-agent-sdk``.

This is the only module that imports ``claude_agent_sdk``. Each turn gets one
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
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
from claude_agent_sdk import (
    AssistantMessage,
    ClaudeAgentOptions,
    ClaudeSDKClient,
    CLIConnectionError,
    CLINotFoundError,
    McpSdkServerConfig,
    ProcessError,
    ResultMessage,
    ToolResultBlock,
    UserMessage,
)
from claude_agent_sdk.types import StreamEvent

from ccgate.engine.cli_info import find_cli
from ccgate.engine.client_tools import SERVER_NAME, client_tool_server
from ccgate.engine.events import (
    AgentEvent,
    ErrorKind,
    StopReason,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolResult,
    TurnEnd,
    TurnError,
    TurnStarted,
    Usage,
)
from ccgate.engine.launcher import tethered
from ccgate.engine.prompt import system_prompt, user_message_content
from ccgate.engine.stops import apply_stop_sequences
from ccgate.engine.turn import TurnRequest
from ccgate.engine.workdirs import WorkerDirs

__all__ = ["ClaudeRunner", "RunnerConfig"]

log = logging.getLogger("ccgate.engine")

#: System prompts longer than this go through a file: argv strings are capped (128 KiB).
_INLINE_SYSTEM_PROMPT_MAX = 32 * 1024

#: How long the CLI lets one client tool call run; ccgate ends a turn that waits too
#: long itself (``tool_result_timeout``), so the CLI's own limit only has to be longer.
_TOOL_CALL_LIMIT_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True)
class RunnerConfig:
    """What the runner needs from the settings."""

    data_dir: Path
    upstream_url: str | None = None
    upstream_api_key: str | None = None
    upstream_retries: int = 2
    request_timeout: float = 600.0
    cli_path: Path | None = None
    #: Values that must never reach the CLI's environment.
    secrets: tuple[str, ...] = ()
    extra_env: dict[str, str] = field(default_factory=dict)


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
                _signal(pid, self._stop_signal(pid))
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
                    _signal(holder["pid"], self._stop_signal(holder["pid"]))
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
            await queue.put(TurnError("cli_crashed", f"Claude Code failed: {_short(exc)}"))
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
        options.stderr = lambda line: _keep_tail(stderr_tail, line)
        client = ClaudeSDKClient(options)
        completed = False
        pid: int | None = None
        try:
            await client.connect()
            pid = _cli_pid(client)
            if pid is not None:
                holder["pid"] = pid
                self._pid_tasks[pid] = asyncio.current_task()  # type: ignore[assignment]
            await queue.put(TurnStarted(model=turn.model, cold_start=True))
            if turn.session is None or turn.session.deferred_call is None:
                await client.query(_one_message(turn))
            # else: the CLI re-runs the deferred call at start and goes on by itself.
            translator = Translator(frozenset(t.name for t in turn.offered_tools()))
            paused = _Pause(clock, self._waiting, pid)
            async for message in client.receive_response():
                if _moves_on(message):
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
            code = code if code is not None else await _exit_code(client)
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
                _signal(pid, self._stop_signal(pid))
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

    def _stop_signal(self, pid: int) -> signal.Signals:
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
        env.update(
            {
                "CLAUDE_CONFIG_DIR": str(workdir),
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "DISABLE_AUTOUPDATER": "1",
                "DISABLE_TELEMETRY": "1",
                "CLAUDE_CODE_MAX_RETRIES": str(self._config.upstream_retries),
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


def scrubbed_env(environ: Mapping[str, str], secrets: tuple[str, ...]) -> dict[str, str]:
    """Return overrides that blank ccgate's variables and any variable holding a secret.

    The SDK starts the CLI with the parent's environment plus these overrides,
    so blanking (not omitting) is what keeps a value out.
    """
    blanked: dict[str, str] = {}
    for name, value in environ.items():
        if name.startswith("CCGATE_") or (value and value in secrets):
            blanked[name] = ""
    return blanked


def _one_message(turn: TurnRequest) -> AsyncIterator[dict[str, Any]]:
    async def stream() -> AsyncIterator[dict[str, Any]]:
        yield {
            "type": "user",
            "message": {"role": "user", "content": user_message_content(turn)},
            "parent_tool_use_id": None,
        }

    return stream()


def _moves_on(message: object) -> bool:
    """Tell whether a message shows the turn working again after waiting for tool results.

    While it waits, the CLI still sends the rest of the calling message
    (``message_stop``, the assembled ``AssistantMessage``); it moves on with the
    tools' results, a new model call, or the end of the turn.
    """
    if isinstance(message, StreamEvent):
        return message.event.get("type") == "message_start"
    return isinstance(message, UserMessage | ResultMessage)


class _Pause:
    """While a turn waits for client tool results: stop its ``request_timeout``, mark its pid."""

    def __init__(self, clock: asyncio.Timeout, waiting: set[int], pid: int | None) -> None:
        self._clock = clock
        self._waiting = waiting
        self._pid = pid
        self._left: float | None = None
        self._on = False

    def start(self) -> None:
        self._on = True
        if self._pid is not None:
            self._waiting.add(self._pid)
        when = self._clock.when()
        if when is not None:
            self._left = max(0.0, when - asyncio.get_running_loop().time())
            self._clock.reschedule(None)

    def resume(self) -> None:
        if not self._on:
            return
        self._on = False
        if self._pid is not None:
            self._waiting.discard(self._pid)
        if self._left is not None:
            self._clock.reschedule(asyncio.get_running_loop().time() + self._left)
            self._left = None


class CLIExited(Exception):
    """The CLI process died mid-turn with a non-zero exit code (``None``: not known)."""

    def __init__(self, exit_code: int | None, stderr_line: str) -> None:
        super().__init__(f"exit code {exit_code}")
        self.exit_code = exit_code
        self.stderr_line = stderr_line


async def _exit_code(client: ClaudeSDKClient) -> int | None:
    process = getattr(getattr(client, "_transport", None), "_process", None)
    if process is None:
        return None
    with contextlib.suppress(Exception):
        with anyio.move_on_after(2):
            await process.wait()
    code = getattr(process, "returncode", None)
    return code if isinstance(code, int) else None


def _cli_pid(client: ClaudeSDKClient) -> int | None:
    # The SDK does not expose the process; its transport keeps it as ``_process``.
    process = getattr(getattr(client, "_transport", None), "_process", None)
    pid = getattr(process, "pid", None)
    return pid if isinstance(pid, int) else None


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _keep_tail(tail: list[str], line: str) -> None:
    tail.append(line)
    del tail[:-20]


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


_STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "refusal": "refusal",
    "pause_turn": "end_turn",
}

_ASSISTANT_ERRORS: dict[str, ErrorKind] = {
    "authentication_failed": "authentication",
    "billing_error": "billing",
    "rate_limit": "rate_limit",
    "invalid_request": "invalid_request",
    "server_error": "upstream",
    "unknown": "upstream",
}


def _kind_for_status(status: int | None) -> ErrorKind | None:
    if status is None:
        return None
    if status == 401:
        return "authentication"
    if status in (402, 403):
        return "billing"
    if status == 429:
        return "rate_limit"
    if status == 529:
        return "overloaded"
    if status in (400, 413, 422):
        return "invalid_request"
    return "upstream"


class Translator:
    """Turn the SDK's messages of one turn into neutral agent events.

    ``client_tools`` names the client's tools: a message that calls any of them
    ends a segment with ``TurnEnd("tool_use", waiting_for=ids)`` and that
    segment's ``Usage``; the CLI then waits in the tool handlers.
    """

    def __init__(self, client_tools: frozenset[str] = frozenset()) -> None:
        self._client_tools = client_tools
        self._blocks: dict[int, tuple[str, str]] = {}
        self._calls: list[str] = []
        self._streamed_text = False
        self._stop_reason: str | None = None
        self._error_kind: ErrorKind | None = None
        self._error_text = ""
        self._result: ResultMessage | None = None
        self._message_open = False
        self._message_usage = Usage()
        self._segment = Usage()
        self._reported = Usage()
        #: Set when the turn ended on the stream itself and the CLI must be stopped:
        #: after max_tokens or a refusal it would quietly ask the model to go on.
        self.ended_early = False

    def feed(self, message: object) -> list[AgentEvent]:
        """Translate one SDK message."""
        if isinstance(message, StreamEvent):
            if message.parent_tool_use_id is None:
                return self._stream_event(message.event)
        elif isinstance(message, AssistantMessage):
            if message.error is not None and message.parent_tool_use_id is None:
                self._error_kind = _ASSISTANT_ERRORS.get(message.error, "upstream")
                self._error_text = " ".join(
                    getattr(block, "text", "") for block in message.content
                ).strip()
        elif isinstance(message, UserMessage) and isinstance(message.content, list):
            return [
                ToolResult(block.tool_use_id, ok=not block.is_error)
                for block in message.content
                if isinstance(block, ToolResultBlock)
            ]
        elif isinstance(message, ResultMessage):
            self._result = message
        return []

    def _stream_event(self, event: dict[str, Any]) -> list[AgentEvent]:
        kind = event.get("type")
        index = int(event.get("index", 0))
        if kind == "message_start":
            retried = self._message_open
            self._message_open = True
            usage = (event.get("message") or {}).get("usage") or {}
            self._message_usage = _usage_of(usage, output=False)
            # Known from now on, even if the turn is cut before the model finishes.
            so_far = _add(self._segment, self._message_usage)
            if retried and self._streamed_text:
                # The CLI retried an answer that broke off mid-way; its text would repeat.
                self.ended_early = True
                return [
                    TurnError(
                        "upstream",
                        "the upstream connection broke in the middle of the answer; "
                        "retry the request",
                    )
                ]
            self._blocks.clear()
            self._calls.clear()
            return [replace(so_far, partial=True)]
        elif kind == "content_block_start":
            block = event.get("content_block") or {}
            btype = str(block.get("type"))
            name = str(block.get("name"))
            if btype == "tool_use" and name not in self._client_tools:
                btype = "other_tool_use"  # the CLI answers it itself (unknown tool)
            self._blocks[index] = (btype, str(block.get("id") or ""))
            if btype == "tool_use":
                self._calls.append(str(block.get("id")))
                return [ToolCallStart(str(block.get("id")), name)]
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta" and delta.get("text"):
                self._streamed_text = True
                return [TextDelta(str(delta["text"]))]
            if dtype == "thinking_delta":
                return [ThinkingDelta(str(delta.get("thinking", "")))]
            if dtype == "signature_delta":
                return [ThinkingDelta("", signature=str(delta.get("signature", "")))]
            btype, tool_id = self._blocks.get(index, ("", ""))
            if dtype == "input_json_delta" and btype == "tool_use":
                return [ToolCallDelta(tool_id, str(delta.get("partial_json", "")))]
        elif kind == "content_block_stop":
            btype, tool_id = self._blocks.pop(index, ("", ""))
            if btype == "tool_use" and tool_id:
                return [ToolCallEnd(tool_id)]
        elif kind == "message_delta":
            return self._message_delta(event)
        return []

    def _message_delta(self, event: dict[str, Any]) -> list[AgentEvent]:
        self._message_open = False
        reason = (event.get("delta") or {}).get("stop_reason")
        if reason:
            self._stop_reason = str(reason)
        output = int(((event.get("usage") or {}).get("output_tokens")) or 0)
        self._segment = _add(self._segment, replace(self._message_usage, output_tokens=output))
        if reason in ("max_tokens", "refusal"):
            self.ended_early = True
            return [self._take_segment(), TurnEnd(_STOP_REASONS[str(reason)])]
        if reason == "tool_use" and self._calls:
            waiting = tuple(self._calls)
            self._calls.clear()
            self._streamed_text = False
            return [self._take_segment(), TurnEnd("tool_use", waiting_for=waiting)]
        return []

    def _take_segment(self) -> Usage:
        """Return the usage since the last segment ended, and count it as reported."""
        segment, self._segment = self._segment, Usage()
        self._reported = _add(self._reported, segment)
        return segment

    def finish(self, stderr_tail: list[str]) -> list[AgentEvent]:
        """Return the closing events once the result (or the end of output) arrived."""
        result = self._result
        events: list[AgentEvent] = []
        if result is not None and result.usage:
            total = _usage_of(result.usage, output=True)
            r = self._reported
            events.append(
                Usage(
                    input_tokens=max(0, total.input_tokens - r.input_tokens),
                    output_tokens=max(0, total.output_tokens - r.output_tokens),
                    cache_read_tokens=max(0, total.cache_read_tokens - r.cache_read_tokens),
                    cache_creation_tokens=max(
                        0, total.cache_creation_tokens - r.cache_creation_tokens
                    ),
                    cost_usd=result.total_cost_usd,
                )
            )
        status = getattr(result, "api_error_status", None) if result else None
        kind = self._error_kind
        if kind in (None, "upstream"):
            kind = _kind_for_status(status) or kind
        if kind is None and result is not None and result.is_error:
            kind = "upstream"
        if result is None and kind is None:
            detail = f": {stderr_tail[-1][:300]}" if stderr_tail else ""
            return [
                *events,
                TurnError("cli_crashed", f"Claude Code ended without a result{detail}"),
            ]
        if kind is not None:
            text = self._error_text or "; ".join((result.errors or []) if result else [])
            text = text or (result.result if result and result.result else "") or "no details"
            return [*events, TurnError(kind, text[:1000])]
        if self._message_open and self._streamed_text:
            # The streamed answer broke off and the CLI got the rest another way (its
            # non-streaming fallback): what was streamed is incomplete.
            message = "the upstream connection broke in the middle of the answer; retry the request"
            return [*events, TurnError("upstream", message)]
        if not self._streamed_text and result is not None and result.result:
            events.insert(0, TextDelta(result.result))
        reason = self._stop_reason or (result.stop_reason if result else None) or "end_turn"
        stop = _STOP_REASONS.get(reason, "end_turn")
        # A tool_use stop here means the model called a tool the CLI answered itself.
        return [*events, TurnEnd("end_turn" if stop == "tool_use" else stop)]


def _usage_of(usage: dict[str, Any], *, output: bool) -> Usage:
    return Usage(
        input_tokens=int(usage.get("input_tokens") or 0),
        output_tokens=int(usage.get("output_tokens") or 0) if output else 0,
        cache_read_tokens=int(usage.get("cache_read_input_tokens") or 0),
        cache_creation_tokens=int(usage.get("cache_creation_input_tokens") or 0),
    )


def _add(a: Usage, b: Usage) -> Usage:
    return Usage(
        input_tokens=a.input_tokens + b.input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        cache_read_tokens=a.cache_read_tokens + b.cache_read_tokens,
        cache_creation_tokens=a.cache_creation_tokens + b.cache_creation_tokens,
    )
