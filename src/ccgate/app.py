"""The application factory: ``create_app(settings, *, runner=None, store=None, environ=None)``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from ccgate import __version__
from ccgate.access.accounting import Accounting
from ccgate.access.keys import KeyManager
from ccgate.access.quotas import Quotas, windows_at
from ccgate.api.crash import CrashGuard
from ccgate.api.errors import install_error_handlers
from ccgate.api.hosts import HostGuard, HostPolicy
from ccgate.api.limits import BodyLimit
from ccgate.api.routes import admin as admin_routes
from ccgate.api.routes import anthropic as anthropic_routes
from ccgate.api.routes import docs as docs_routes
from ccgate.api.routes import health as health_routes
from ccgate.api.routes import loops as loops_routes
from ccgate.api.routes import openai as openai_routes
from ccgate.api.routes import sessions as sessions_routes
from ccgate.api.routes import usage as usage_routes
from ccgate.api.state import AppState, Counters
from ccgate.claude import ClaudeRunner, RunnerConfig
from ccgate.claude.agent import ClaudeAgents
from ccgate.claude.launcher import clear_credential_files
from ccgate.claude.workdirs import WorkerDirs
from ccgate.config import Settings
from ccgate.engine.cache import ResponseCache
from ccgate.engine.gate import Gate
from ccgate.engine.live import TurnManager
from ccgate.engine.models import Catalogue
from ccgate.engine.probe import AuthProbe
from ccgate.engine.runner import Runner
from ccgate.engine.sessions import ConversationSessions
from ccgate.loops.manager import LoopManager
from ccgate.metrics import Gauges, Metrics
from ccgate.store.admissions import Settlement, SqlAdmissionStore
from ccgate.store.counters import SqlCounterStore
from ccgate.store.database import Database
from ccgate.store.journal import Apply, Journal
from ccgate.store.keys import SqlKeyStore
from ccgate.store.loops import SqlLoopStore
from ccgate.store.owners import process_owner
from ccgate.store.sessions import SqlSessionStore
from ccgate.store.usage import SqlUsageStore

__all__ = ["create_app"]

log = logging.getLogger("ccgate")

#: How long what a finished turn records may wait for a locked database before it goes to
#: the journal (the answer waits for it); and how often the journal is replayed, running
#: requests checkpointed and the admissions of dead processes reconciled.
AFTER_TURN_WAIT = 1.0
BOOKKEEPING_EVERY = 5.0
#: How long noting a key's last use may wait for the database before it is skipped.
LAST_USE_WAIT = 0.1
#: How long a shutdown waits for requests to record what they got (those left are found
#: interrupted at the next start).
SHUTDOWN_RECORD_WAIT = 10.0


def _runner_config(
    settings: Settings, upstream_url: str | None, key: str | None, environ: Mapping[str, str]
) -> RunnerConfig:
    return RunnerConfig(
        environ=environ,
        data_dir=settings.data_path,
        upstream_url=upstream_url,
        upstream_api_key=key,
        upstream_retries=settings.upstream_retries,
        request_timeout=settings.request_timeout,
        cli_path=settings.cli_path,
        secrets=tuple(settings.secrets()),
        session_keepalive=settings.session_keepalive,
        pool_max_processes=settings.pool_max_processes,
        pool_memory_mb=settings.pool_memory_mb,
    )


async def _sweep(
    sessions: ConversationSessions, counters: SqlCounterStore, loops: LoopManager, ttl: float
) -> None:
    """Expire idle sessions, old quota windows and old idempotency records, now and then."""
    interval = min(60.0, max(1.0, ttl / 10))
    while True:
        try:
            removed = await sessions.expire(ttl)
            if removed:
                log.info("sessions_expired count=%d", removed)
            minute, day, month = windows_at(time.time())
            await counters.sweep("minute", minute.start - 3600)
            await counters.sweep("day", day.start - 2 * 86_400)
            await counters.sweep("month", month.start - 40 * 86_400)
            await loops.expire()
        except Exception:  # noqa: BLE001 - a failed sweep is retried next interval
            log.warning("sweep_failed", exc_info=True)
        await asyncio.sleep(interval)


async def _follow_cli_models(runner: ClaudeRunner, catalogue: Catalogue) -> None:
    """Adopt the models the CLI offers into the catalogue (once, in the background)."""
    try:
        models, seen_at = await runner.cli_models()
    except Exception as exc:  # noqa: BLE001 - the packaged list stays in use
        log.warning("cli_models_unavailable error=%s", type(exc).__name__)
        return
    catalogue.adopt(models, seen_at=seen_at)
    log.info("cli_models models=%s", ",".join(f"{m.value}={m.resolved}" for m in models))


def _journal(hurried: Database, path: Path) -> Journal:
    """Return the journal of what finished turns record, applied by stores in a hurry."""
    admissions = SqlAdmissionStore(hurried)
    sessions = SqlSessionStore(hurried)
    loops = SqlLoopStore(hurried)

    async def settle(payload: dict[str, Any]) -> None:
        await admissions.settle(Settlement.from_json(payload))

    def call(method: Callable[..., Awaitable[object]]) -> Apply:
        return lambda payload: method(**payload)

    return Journal(
        path,
        {
            "settle": settle,
            "session_turn": call(sessions.record_turn),
            "loop_turn": call(loops.record_turn),
            "loop_finish": call(loops.finish),
        },
    )


async def _catch_up(journal: Journal, accounting: Accounting) -> None:
    """Apply what the journal holds, then reconcile the admissions of dead processes."""
    await journal.replay()
    interrupted = await accounting.reconcile(skip=journal.refs())
    if interrupted:
        log.warning("admissions_reconciled count=%d", len(interrupted))


async def _keep_books(journal: Journal, accounting: Accounting) -> None:
    """Replay the journal, checkpoint running requests and reconcile, now and then."""
    while True:
        await asyncio.sleep(BOOKKEEPING_EVERY)
        try:
            await accounting.checkpoint()
            await _catch_up(journal, accounting)
        except Exception:  # noqa: BLE001 - tried again next interval
            log.info("bookkeeping_deferred", exc_info=True)


async def _recorded(app: FastAPI) -> None:
    """Wait, bounded, for every admitted request to be recorded (at shutdown)."""
    state: AppState | None = getattr(app.state, "ccgate", None)
    if state is None:
        return
    left = await state.accounting.drain(SHUTDOWN_RECORD_WAIT)
    if left:
        log.warning("shutdown_unrecorded count=%d", left)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(
    settings: Settings,
    *,
    runner: Runner | None = None,
    store: Any = None,
    environ: Mapping[str, str] | None = None,
) -> FastAPI:
    """Build the gateway; its parts start in the lifespan, never at import or build time.

    ``runner`` replaces the Claude Code runner (tests of the front doors use a
    fake); with ``settings.demo`` the scripted model is started in-process and
    the CLI pointed at it. ``environ`` is the environment ccgate runs in (default
    ``os.environ``): every Claude Code process's environment is made from it.
    """
    environment: Mapping[str, str] = os.environ if environ is None else environ

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            upstream = settings.upstream_url
            key = (
                settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None
            )
            if settings.demo and runner is None:
                from ccgate.demo import DemoServer, ScriptedModel

                demo = await stack.enter_async_context(DemoServer(ScriptedModel()))
                upstream, key = demo.url, "ccgate-demo"
                app.state.demo = demo
            settings.data_path.mkdir(mode=0o700, parents=True, exist_ok=True)
            settings.data_path.chmod(0o700)  # ccgate's own: nobody else reads keys or transcripts
            clear_credential_files(settings.data_path)
            database = Database(
                settings.effective_database_url, busy_timeout=settings.database_busy_timeout
            )
            stack.push_async_callback(database.close)
            await database.migrate()
            hurried = database.hurried(AFTER_TURN_WAIT)
            journal = _journal(hurried, settings.data_path / "journal.jsonl")
            sessions = ConversationSessions(
                SqlSessionStore(database),
                settings.data_path,
                settings.data_path / "cwd",
                continuation=settings.session_continuation,
                journal=journal,
            )
            runner_config = _runner_config(settings, upstream, key, environment)
            dirs = WorkerDirs(settings.data_path)
            counters = SqlCounterStore(database)
            gate = Gate(settings.max_concurrent, settings.max_queue)
            catalogue = Catalogue.load()
            loops = LoopManager(
                SqlLoopStore(database),
                agents=ClaudeAgents(runner_config, dirs),
                loops_dir=settings.loops_path,
                gate=gate,
                cli_model=lambda name: catalogue.resolve(name).cli,
                idle_timeout=settings.loop_idle_timeout,
                choice_timeout=settings.choice_timeout,
                journal=journal,
            )
            the_runner = runner
            if the_runner is None:
                # Idle loops share the warm processes' memory budget and pressure.
                claude = ClaudeRunner(runner_config, dirs=dirs, elsewhere=loops.idle_processes)
                claude.pool.start()
                follow = asyncio.create_task(_follow_cli_models(claude, catalogue))
                stack.push_async_callback(_stop, follow)
                the_runner = claude
            stack.push_async_callback(the_runner.aclose)
            # Requests the server cancelled at shutdown are still recording what they got, which
            # needs their turns' processes and the database: wait for them before those close.
            stack.push_async_callback(_recorded, app)
            turns = TurnManager(
                the_runner, gate, sessions, tool_timeout=settings.tool_result_timeout
            )
            stack.push_async_callback(turns.aclose)
            stack.push_async_callback(loops.aclose)
            sweeper = asyncio.create_task(_sweep(sessions, counters, loops, settings.session_ttl))
            stack.push_async_callback(_stop, sweeper)
            cache = ResponseCache(settings.cache_ttl, settings.cache_max_entries)
            counts = Counters()

            def gauges() -> Gauges:
                return Gauges(
                    active=gate.active,
                    queued=gate.queued,
                    waiting_for_tools=turns.parked,
                    cli_processes=the_runner.live_processes() + loops.live_processes(),
                    cached_answers=len(cache),
                    turns_finished=counts.turns_finished,
                    turns_failed=counts.turns_failed,
                    pool=the_runner.pool_status(),
                )

            metrics = Metrics(gauges, per_key=settings.metrics_per_key)
            ledger = SqlUsageStore(database)
            accounting = Accounting(
                Quotas(SqlAdmissionStore(database)),
                metrics,
                journal,
                SqlAdmissionStore(hurried),
                owner=process_owner(),
                ledger=settings.usage_ledger,
            )
            try:
                await _catch_up(journal, accounting)
            except Exception:  # noqa: BLE001 - a locked database must not stop the start
                log.warning("bookkeeping_deferred", exc_info=True)
            books = asyncio.create_task(_keep_books(journal, accounting))
            stack.push_async_callback(_stop, books)
            app.state.ccgate = AppState(
                settings=settings,
                runner=the_runner,
                gate=gate,
                catalogue=catalogue,
                sessions=sessions,
                turns=turns,
                loops=loops,
                keys=KeyManager(
                    SqlKeyStore(database),
                    last_used=SqlKeyStore(database.hurried(LAST_USE_WAIT)),
                ),
                accounting=accounting,
                ledger=ledger,
                metrics=metrics,
                cache=cache,
                counters=counts,
                upstream=upstream or "",
                probe=AuthProbe(ttl=settings.health_probe_ttl),
            )
            log.info("gateway_started version=%s auth_mode=%s", __version__, settings.auth_mode)
            try:
                yield
            finally:
                app.state.ccgate.draining = True
                log.info("gateway_stopping live_processes=%d", the_runner.live_processes())

    app = FastAPI(
        title="ccgate",
        version=__version__,
        summary="Claude Code behind the OpenAI and Anthropic APIs",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.include_router(openai_routes.router)
    app.include_router(anthropic_routes.router)
    app.include_router(sessions_routes.router)
    app.include_router(usage_routes.router)
    app.include_router(admin_routes.router)
    app.include_router(loops_routes.router)
    app.include_router(health_routes.router)
    app.include_router(docs_routes.router)
    # The last one added runs first: crashes end in CrashGuard; a wrong Host or origin is
    # refused before anything else is done.
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(HostGuard, policy=HostPolicy.from_settings(settings))
    app.add_middleware(CrashGuard)
    return app
