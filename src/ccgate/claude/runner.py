"""The runner of the compatible APIs: turns on Claude Code processes that stay warm.

Each CLI process is owned by one asyncio task for its whole life (the SDK's
cancel scopes break when a client is used from another task); turns reach the
owner through the process's inbox and their events come back on a queue of the
turn's own. Isolation per process: its own ``CLAUDE_CONFIG_DIR`` (a worker slot
under the data dir), a neutral empty working directory, ``setting_sources=[]``,
no built-in tools, the client's system prompt instead of Claude Code's, and an
environment from which ccgate's own secrets are blanked.

With ``RunnerConfig.transcripts`` a session's transcript is shared with the
other replicas (``claude.shared``): stored after every turn the next may resume
(before the client sees its end), written back here before a session that
another replica advanced is resumed.

A process serves one conversation (Claude Code session). After a turn that
ended cleanly it stays alive for ``session_keepalive`` seconds, so the
conversation's next turn runs on it without a start-up; new conversations take
a spare that the pool started ahead for their configuration
(``claude.pool``). A turn with no process to run on starts one, as does
a conversation rebuilt from the client's history (the CLI reads it at start).

The client's tools are the only tools the model gets: an in-process MCP server
(``claude.client_tools``) whose calls wait for the client's results. While a
turn waits for them, ``request_timeout`` does not run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
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

from ccgate.claude import sdk
from ccgate.claude.binary import find_cli
from ccgate.claude.client_tools import SERVER_NAME, client_tool_server
from ccgate.claude.fidelity import fidelity_env, thinking_option
from ccgate.claude.launch import Launch
from ccgate.claude.memory import SystemMemory
from ccgate.claude.models import cached_cli_models
from ccgate.claude.pool import ProcessPool
from ccgate.claude.process import (
    CLIExited,
    Pause,
    RunnerConfig,
    keep_tail,
    send_signal,
    short,
)
from ccgate.claude.prompt import user_message_content
from ccgate.claude.shared import Found, SharedTranscripts
from ccgate.claude.transcript import transcript_path, write_transcript
from ccgate.claude.translate import Translator, moves_on
from ccgate.claude.warm import CliProcess, Job, ProcessConfig, ProcessState
from ccgate.claude.workdirs import WorkerDirs
from ccgate.engine.events import (
    AgentEvent,
    TurnEnd,
    TurnError,
    TurnStarted,
)
from ccgate.engine.models import CliModel
from ccgate.engine.runner import IdleProcess
from ccgate.engine.stops import apply_stop_sequences
from ccgate.engine.toolbox import ToolResultBox
from ccgate.engine.turn import Message, TurnRequest

__all__ = ["ClaudeRunner"]

log = logging.getLogger("ccgate.engine")

#: System prompts longer than this go through a file: argv strings are capped (128 KiB).
_INLINE_SYSTEM_PROMPT_MAX = 32 * 1024

#: How long the CLI lets one client tool call run; ccgate ends a turn that waits too
#: long itself (``tool_result_timeout``), so the CLI's own limit only has to be longer.
_TOOL_CALL_LIMIT_MS = 7 * 24 * 3600 * 1000


_END = object()

#: How long a spare may take to start before it counts as stalled and is discarded.
_SPARE_START_LIMIT = 60.0


class ClaudeRunner:
    """Run turns on warm Claude Code processes; see :class:`ccgate.engine.runner.Runner`."""

    def __init__(
        self,
        config: RunnerConfig,
        *,
        dirs: WorkerDirs | None = None,
        memory: SystemMemory | None = None,
        elsewhere: Callable[[], list[IdleProcess]] | None = None,
        shared: SharedTranscripts | None = None,
    ) -> None:
        """``shared`` is where transcripts are shared, when several runners share them
        (``claude.accounts``); by default the runner shares through ``config.transcripts``."""
        self._config = config
        self._dirs = dirs or WorkerDirs(config.data_dir)
        self._own_shared = shared is None
        self._shared = shared if shared is not None else SharedTranscripts(config.transcripts)
        self._pool = ProcessPool(
            keepalive=config.session_keepalive,
            max_spares=config.pool_max_processes,
            memory_mb=config.pool_memory_mb,
            start_spare=self._start_spare,
            memory=memory,
            elsewhere=elsewhere,
        )
        #: Every process whose owner task runs.
        self._procs: set[CliProcess] = set()
        #: Processes that wait for client tool results: they are killed outright, since a
        #: gentler stop lets the CLI answer the call itself and ask the model once more.
        self._waiting: set[int] = set()
        self._stopping: str | None = None
        self._launcher = Launch(config, self._dirs)

    @property
    def pool(self) -> ProcessPool:
        """Return the pool of idle processes; whoever builds the runner starts it."""
        return self._pool

    def live_processes(self) -> int:
        """Return how many CLI processes this runner has alive."""
        return sum(1 for p in self._procs if p.pid is not None)

    def pool_status(self) -> dict[str, object]:
        """Return what the pool holds and did (``/health``, ``/metrics``)."""
        return self._pool.status()

    async def cli_models(self) -> tuple[list[CliModel], int]:
        """Return the models the CLI offers and when it first said so (cached per CLI binary)."""
        binary = find_cli(self._config.cli_path)
        launcher = self._launcher.cli_path()
        if binary is None or launcher is None:
            return [], 0
        with contextlib.ExitStack() as stack:
            workdir, path = self._launcher.lease(stack)
            options = ClaudeAgentOptions(
                tools=[],
                setting_sources=[],
                strict_mcp_config=True,
                system_prompt="",
                cwd=str(self._dirs.neutral_cwd),
                env=self._env(ProcessConfig("", ""), workdir, path),
                cli_path=launcher,
            )
            cache = self._config.data_dir / "cache" / "cli-models.json"
            return await cached_cli_models(binary, cache, options)

    def new_session(self, turn: TurnRequest) -> str:
        """Return the session id for a new conversation: a ready spare's, else a fresh one."""
        if self._stopping is None:
            claimed = self._pool.claim(ProcessConfig.of(turn))
            if claimed is not None:
                return claimed
        return str(uuid.uuid4())

    async def has_session(self, cli_session_id: str) -> bool:
        """Tell whether the session's transcript is here, or was fetched from the shared
        store (a turn may resume it)."""
        found = await self._shared.ready(cli_session_id, self._transcript(cli_session_id))
        if found is Found.FETCHED:
            self._pool.release(cli_session_id)  # a warm process holds an older state
        return found is not Found.ABSENT

    def seed_session(
        self,
        cli_session_id: str,
        history: tuple[Message, ...],
        model: str,
        *,
        results: Message | None = None,
    ) -> None:
        """Write a new session's transcript from the client's history (and share it)."""
        path = write_transcript(
            self._config.data_dir,
            self._dirs.neutral_cwd,
            cli_session_id,
            history,
            model,
            results=results,
        )
        self._shared.upload_soon(cli_session_id, path)

    def release(self, cli_session_id: str) -> None:
        """Forget a session's CLI state: its warm process ends, its transcript goes."""
        self._pool.release(cli_session_id)
        self._transcript(cli_session_id).unlink(missing_ok=True)
        self._shared.forget(cli_session_id)

    def release_process(self, cli_session_id: str) -> None:
        """End the session's warm process, keeping its transcript (it moves elsewhere)."""
        self._pool.release(cli_session_id)

    def transcript(self, cli_session_id: str) -> Path:
        """Return where the session's transcript is (shared by every account's CLIs)."""
        return self._transcript(cli_session_id)

    def _transcript(self, cli_session_id: str) -> Path:
        return transcript_path(self._config.data_dir, self._dirs.neutral_cwd, cli_session_id)

    def stop_all(self, reason: str) -> None:
        """End every live turn now; each ends with ``TurnError("unavailable", reason)``."""
        self._stopping = reason
        self._pool.close_idle()
        for proc in list(self._procs):
            running = proc.state is ProcessState.BUSY and not proc.finishing
            if (running or proc.state is ProcessState.STARTING) and proc.task is not None:
                if proc.pid is not None:
                    send_signal(proc.pid, self._stop_signal(proc.pid))
                proc.task.cancel()

    async def aclose(self) -> None:
        """End every turn and every process; let finishing turns end on their own."""
        self.stop_all("ccgate is shutting down")
        await self._pool.aclose()
        tasks = [p.task for p in self._procs if p.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=15)
        if self._own_shared:
            await self._shared.aclose()

    async def run(
        self, turn: TurnRequest, box: ToolResultBox | None = None
    ) -> AsyncGenerator[AgentEvent, None]:
        """Run ``turn`` on its conversation's process (or a new one) and yield its events."""
        events: AsyncGenerator[AgentEvent, None] = self._run_raw(turn, box)
        if turn.stop_sequences:
            events = apply_stop_sequences(events, turn.stop_sequences)
        plan = turn.session
        try:
            async for event in events:
                if (
                    plan is not None
                    and isinstance(event, TurnEnd)
                    and event.stop_reason in ("end_turn", "tool_use")
                ):
                    # The session as the next turn resumes it, shared before the client
                    # sees this turn end (so before the conversation records it).
                    await self._shared.upload(
                        plan.cli_session_id, self._transcript(plan.cli_session_id)
                    )
                yield event
        finally:
            await events.aclose()

    async def _run_raw(
        self, turn: TurnRequest, box: ToolResultBox | None
    ) -> AsyncGenerator[AgentEvent, None]:
        job = Job(turn, box, asyncio.Queue(), cold=True)
        config = ProcessConfig.of(turn)
        plan = turn.session
        proc: CliProcess | None = None
        if plan is not None and plan.deferred_call is None and self._stopping is None:
            proc = await self._pool.take(plan.cli_session_id, config)
        if proc is not None:
            job.cold = False
            self._pool.count_turn(proc, cold=False)
            proc.submit(job)
        else:
            proc = self._start(config, turn, job)
            self._pool.count_turn(proc, cold=True)
        finished = False
        try:
            while True:
                item = await job.out.get()
                if item is _END:
                    finished = True
                    return
                if isinstance(item, TurnError) or (
                    isinstance(item, TurnEnd) and not item.waiting_for
                ):
                    finished = True
                    proc.finishing = True
                yield item
                if finished:
                    return
        finally:
            # A finished turn's process finishes reading the answer in the background
            # (then waits for its conversation's next turn, or exits). A consumer that
            # left early (disconnect, stop sequence, a dropped parked turn) ends the
            # process now, without the SDK's graceful-exit grace period.
            task = proc.task
            if not finished and task is not None and not task.done():
                if proc.pid is not None:
                    send_signal(proc.pid, self._stop_signal(proc.pid))
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.shield(asyncio.gather(task, return_exceptions=True))

    # -- processes --------------------------------------------------------------

    def _start(self, config: ProcessConfig, turn: TurnRequest, job: Job) -> CliProcess:
        """Start a process for ``turn``'s conversation, running ``job`` first."""
        plan = turn.session
        if plan is None:
            # A turn outside any conversation: nobody can continue it, so nothing stays.
            proc = CliProcess(config, "", spare=False, doomed=True)
        else:
            proc = CliProcess(config, plan.cli_session_id, spare=False)
            self._pool.bind(proc)
        proc.state = ProcessState.BUSY
        resume = plan is not None and plan.resume
        self._launch(proc, self._own(proc, job, resume=resume))
        return proc

    def _start_spare(self, config: ProcessConfig) -> CliProcess:
        """Start a spare for ``config`` (the pool's refill calls this)."""
        proc = CliProcess(config, str(uuid.uuid4()), spare=True)
        self._launch(proc, self._own(proc, None, resume=False))
        return proc

    def _launch(self, proc: CliProcess, owner: Any) -> None:
        self._procs.add(proc)
        proc.task = asyncio.create_task(owner, name="ccgate-cli")

    async def _own(self, proc: CliProcess, first: Job | None, *, resume: bool) -> None:
        """Own one CLI process for its life: its first turn (or start), then warm turns."""
        tail: list[str] = []
        started = time.monotonic()
        try:
            with contextlib.ExitStack() as stack:
                workdir, path = self._launcher.lease(stack)
                options = self._options(proc, workdir, path, resume=resume)
                options.stderr = lambda line: keep_tail(tail, line)
                client = ClaudeSDKClient(options)
                clean = False
                try:
                    if first is not None:
                        clean = await self._serve(proc, client, first, tail, connect=True)
                    else:
                        clean = await self._connect_spare(proc, client, tail)
                    while clean and self._stopping is None:
                        job = await self._pool.next_job(proc)
                        if job is None:
                            break
                        clean = await self._serve(proc, client, job, tail, connect=False)
                finally:
                    await self._disconnect(proc, client, clean=clean)
        finally:
            self._procs.discard(proc)
            self._pool.closed(proc)
            log.debug(
                "cli_process_done turns=%d ms=%d", proc.served, (time.monotonic() - started) * 1000
            )

    async def _connect_spare(
        self, proc: CliProcess, client: ClaudeSDKClient, tail: list[str]
    ) -> bool:
        try:
            async with asyncio.timeout(_SPARE_START_LIMIT):
                await client.connect()
        except Exception as exc:  # noqa: BLE001 - a spare that fails is discarded and retried
            why = tail[-1] if tail else short(exc)
            log.warning("pool_spare_start_failed error=%s", why[:300])
            return False
        self._note_process(proc, client)
        return True

    def _note_process(self, proc: CliProcess, client: ClaudeSDKClient) -> None:
        proc.pid = sdk.cli_pid(client)
        proc.handle = sdk.cli_process(client)

    async def _disconnect(self, proc: CliProcess, client: ClaudeSDKClient, *, clean: bool) -> None:
        pid = proc.pid
        if not clean and pid is not None:
            # Cancelled or failed mid-turn: the process would otherwise get the SDK's
            # graceful-exit grace period before it is terminated.
            send_signal(pid, self._stop_signal(pid))
        try:
            await client.disconnect()
        finally:
            # A cancelled disconnect skips this; an open stream warns when collected.
            sdk.close_receive_stream(client)
            if pid is not None:
                self._waiting.discard(pid)
            proc.pid = None

    # -- turns ------------------------------------------------------------------

    async def _serve(
        self, proc: CliProcess, client: ClaudeSDKClient, job: Job, tail: list[str], *, connect: bool
    ) -> bool:
        """Run one turn on the process; return whether it may serve the next one."""
        tail.clear()
        proc.box = job.box
        clean = False
        try:
            async with asyncio.timeout(self._config.request_timeout) as clock:
                clean = await self._drive(proc, client, job, tail, clock, connect=connect)
        except TimeoutError:
            await job.out.put(
                TurnError(
                    "timeout",
                    f"the turn took longer than request_timeout "
                    f"({self._config.request_timeout:g} s) and was stopped",
                )
            )
        except CLINotFoundError as exc:
            await job.out.put(
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
            await job.out.put(
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
            await job.out.put(TurnError("unavailable", self._stopping))
        except Exception as exc:  # noqa: BLE001 - any SDK failure becomes a turn error
            log.warning("turn_failed error=%s", type(exc).__name__, exc_info=True)
            await job.out.put(TurnError("cli_crashed", f"Claude Code failed: {short(exc)}"))
        finally:
            proc.box = None
            if job.box is not None:
                job.box.close("the turn ended")
            if clean:
                proc.served += 1
            job.out.put_nowait(_END)
        return clean

    async def _drive(
        self,
        proc: CliProcess,
        client: ClaudeSDKClient,
        job: Job,
        tail: list[str],
        clock: asyncio.Timeout,
        *,
        connect: bool,
    ) -> bool:
        turn = job.turn
        try:
            if connect:
                await client.connect()
                self._note_process(proc, client)
            await job.out.put(
                TurnStarted(model=turn.model, cold_start=connect, account=self._config.account)
            )
            if not (connect and turn.session is not None and turn.session.deferred_call):
                await client.query(_one_message(turn))
            # else: the CLI re-runs the deferred call at start and goes on by itself.
            translator = Translator(
                frozenset(t.name for t in turn.offered_tools()),
                on_plan=self._config.on_plan,
                output=turn.output,
            )
            paused = Pause(clock, self._waiting, proc.pid)
            last: AgentEvent | None = None
            async for message in client.receive_response():
                if moves_on(message):
                    paused.resume()
                for event in translator.feed(message):
                    await job.out.put(event)
                    last = event
                    if isinstance(event, TurnEnd) and event.waiting_for:
                        paused.start()
                if translator.ended_early:
                    break
            if translator.ended_early:
                return False  # the owner stops the CLI: it would go on by itself
            for event in translator.finish(tail):
                await job.out.put(event)
                last = event
        except Exception as exc:
            # However the SDK words it, a process that died is a crash with an exit code.
            code = exc.exit_code if isinstance(exc, ProcessError) else None
            code = code if code is not None else await sdk.exit_code(client)
            line = tail[-1] if tail else ""
            if code is not None and code != 0:
                raise CLIExited(code, line) from exc
            if code is None and isinstance(exc, CLIConnectionError) and line:
                # The SDK dropped the process (and its exit code) when it failed to start.
                raise CLIExited(None, line) from exc
            raise
        # Only a turn that ended as the model meant leaves a process fit for the next one.
        return isinstance(last, TurnEnd) and last.stop_reason == "end_turn"

    def _stop_signal(self, pid: int) -> signal.Signals:
        return signal.SIGKILL if pid in self._waiting else signal.SIGTERM

    def _options(
        self, proc: CliProcess, workdir: Path, credential_path: Path | None, *, resume: bool
    ) -> ClaudeAgentOptions:
        config = proc.config
        system: Any = config.system
        if len(system.encode()) > _INLINE_SYSTEM_PROMPT_MAX:
            path = workdir / "system-prompt.txt"
            path.write_text(system)
            system = {"type": "file", "path": str(path)}
        servers: dict[str, Any] = {}
        allowed: list[str] = []
        if config.tools:
            server = client_tool_server(config.tools, lambda: proc.box)
            servers[SERVER_NAME] = McpSdkServerConfig(type="sdk", name=SERVER_NAME, instance=server)
            allowed.append(f"mcp__{SERVER_NAME}")
        session = proc.session_id or None
        return ClaudeAgentOptions(
            tools=[],
            mcp_servers=servers,
            allowed_tools=allowed,
            setting_sources=[],
            strict_mcp_config=True,
            system_prompt=system,
            model=config.model,
            cwd=str(self._dirs.neutral_cwd),
            env=self._env(config, workdir, credential_path),
            include_partial_messages=True,
            thinking=thinking_option(config.thinking),  # type: ignore[arg-type]
            resume=session if resume else None,
            session_id=None if resume else session,
            cli_path=self._launcher.cli_path(),
            max_buffer_size=64 * 1024 * 1024,
            output_format=(
                {"type": "json_schema", "schema": config.output.schema}
                if config.output is not None
                else None
            ),
        )

    def _env(
        self, config: ProcessConfig, workdir: Path, credential_path: Path | None
    ) -> dict[str, str]:
        secret = self._launcher.credential
        minimal = secret is not None and secret.is_api_key
        env = self._launcher.environment(workdir, credential_path, key_variable=minimal)
        env.update(fidelity_env(config.thinking, config.effort, minimal=minimal))
        env.update(
            {
                # Client tools keep their own names (no mcp__<server>__ prefix) and wait
                # as long as ccgate lets them.
                "CLAUDE_AGENT_SDK_MCP_NO_PREFIX": "1",
                "MCP_TOOL_TIMEOUT": str(_TOOL_CALL_LIMIT_MS),
                "MAX_MCP_OUTPUT_TOKENS": "1000000",
            }
        )
        if config.max_tokens:
            env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = str(config.max_tokens)
        if config.output is not None:
            # How many answers the model may give in one turn to match the schema.
            env["MAX_STRUCTURED_OUTPUT_RETRIES"] = str(self._config.structured_output_attempts)
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
