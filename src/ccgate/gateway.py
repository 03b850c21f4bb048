"""The composition root: :class:`Gateway` builds, starts, drains and closes every part of ccgate.

The HTTP app (``ccgate.app``), the commands (``ccgate.cli``) and the tests all
use it::

    async with Gateway(settings) as gateway:      # everything built and started
        ...                                        # gateway.turns, gateway.loops, ...
                                                   # closed in reverse order on exit

Building wires every collaborator through its constructor: the store and its
journal, the runner (Claude Code, or a test's), the concurrency gate and the
turns waiting for tool results, conversation sessions, loops and their agents,
keys, quotas and accounting, the response cache, metrics and the upstream
probe. Starting also runs what keeps them healthy in the background (expiry
sweeps, the journal's replay and the reconciliation of interrupted requests,
the runner's pool, reading the CLI's model list). :meth:`drain` begins a
shutdown: no new turns, and those still running stopped with a clean error
just before the server's grace period ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from ccgate import __version__
from ccgate.access.accounting import Accounting, Ticket
from ccgate.access.caller import Caller
from ccgate.access.feed import Entry, Feed, Notice
from ccgate.access.keys import KeyManager
from ccgate.access.quotas import Quotas, windows_at
from ccgate.access.signins import Signins
from ccgate.accounts.alerts import PlanAlerts
from ccgate.accounts.login import LoginKeeper, OAuthTokenEndpoint, ReplicaLock
from ccgate.accounts.manager import Accounts, SettingsCredential
from ccgate.accounts.meter import PlanMeter, PlanState, when
from ccgate.accounts.secrets import SecretBox
from ccgate.accounts.share import FairShare
from ccgate.claude import RunnerConfig
from ccgate.claude.accounts import AccountRouter
from ccgate.claude.agent import ClaudeAgents
from ccgate.claude.launcher import clear_credential_files, reap_orphans
from ccgate.claude.workdirs import WorkerDirs, user_credentials
from ccgate.cluster.blobs import SharedBlobs
from ccgate.cluster.bus import Bus
from ccgate.cluster.redis import Shared
from ccgate.cluster.replicas import Peer, Replicas, replica_id
from ccgate.config import Settings
from ccgate.engine.cache import Flights, ResponseCache
from ccgate.engine.gate import Gate
from ccgate.engine.live import ParkedTurns, TurnManager
from ccgate.engine.models import Catalogue, ModelInfo
from ccgate.engine.probe import AuthProbe
from ccgate.engine.runner import Runner
from ccgate.engine.sessions import ConversationSessions
from ccgate.engine.sources import Answers
from ccgate.errors import (
    Conflict,
    DatabaseBusy,
    PlanLimited,
    QuotaExceeded,
    SharedStateUnavailable,
    Unavailable,
)
from ccgate.loops.events import ChoiceRequested, LoopEvent
from ccgate.loops.manager import LoopManager
from ccgate.metrics import AccountGauge, Counters, Gauges, Metrics
from ccgate.notify.webhooks import Webhooks
from ccgate.store.accounts import SqlAccountStore
from ccgate.store.admissions import Settlement, SqlAdmissionStore
from ccgate.store.console import SqlConsoleSessionStore
from ccgate.store.counters import SqlCounterStore
from ccgate.store.database import Database
from ccgate.store.journal import Apply, Journal
from ccgate.store.keys import SqlKeyStore
from ccgate.store.logins import SqlLoginStore
from ccgate.store.loops import SqlLoopStore
from ccgate.store.owners import process_owner
from ccgate.store.records import LoopRecord
from ccgate.store.redis_counters import RedisCounterStore, RedisRunning
from ccgate.store.responses import SqlResponseStore
from ccgate.store.sessions import SqlSessionStore
from ccgate.store.transcripts import SqlTranscriptStore
from ccgate.store.usage import SqlUsageStore

__all__ = ["QUIET_ENDS", "Gateway", "runner_config"]

#: How a request may end without a ``turn.failed`` webhook: answered, waiting for the
#: client's tools, running, or ended by the client or a person.
QUIET_ENDS = frozenset({"running", "ok", "tool_use", "cancelled", "interrupted", "stop"})

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
#: The credential the CLI sends the built-in scripted model (``--demo``).
DEMO_KEY = "ccgate-demo"


def runner_config(
    settings: Settings, upstream_url: str | None, key: str | None, environ: Mapping[str, str]
) -> RunnerConfig:
    """Return what a Claude Code runner (and a loop's agents) needs from the settings."""
    return RunnerConfig(
        environ=environ,
        data_dir=settings.data_path,
        upstream_url=upstream_url,
        upstream_api_key=key,
        upstream_retries=settings.upstream_retries,
        request_timeout=settings.request_timeout,
        cli_path=settings.cli_path,
        session_keepalive=settings.session_keepalive,
        pool_max_processes=settings.pool_max_processes,
        pool_memory_mb=settings.pool_memory_mb,
        structured_output_attempts=settings.structured_output_attempts,
    )


class Gateway:
    """Every long-lived part of ccgate; see the module docstring.

    ``runner`` replaces the Claude Code runner (tests of the front doors pass
    ``ccgate.testing.ScriptedRunner``); with ``settings.demo`` the scripted
    model is started here and the CLI pointed at it. ``environ`` is the
    environment ccgate runs in (default ``os.environ``): every Claude Code
    process's environment is made from it.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        runner: Runner | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self._given_runner = runner
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._stack = AsyncExitStack()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._background: dict[str, asyncio.Task[Any]] = {}
        self.started_at = time.time()
        self.draining = False
        self.counters = Counters()
        self.flights = Flights()
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
        self.webhooks = Webhooks(settings.webhook_urls, secret)
        self.probe = AuthProbe(
            ttl=settings.health_probe_ttl,
            on_unhealthy=lambda view: self.webhooks.emit("upstream.unhealthy", view),
        )
        self.catalogue = Catalogue.load()
        #: The upstream's URL as the CLI sees it ("" for Anthropic's own).
        self.upstream = ""
        #: The scripted model of ``--demo`` (its ``url`` and ``model``), when it runs.
        self.demo: Any = None
        #: With ``redis_url``: the shared Redis, this replica among the others, the messages
        #: they all hear, and the client that forwards requests to another replica.
        self.shared: Shared | None = None
        self.replicas: Replicas | None = None
        self.bus: Bus | None = None
        self.peers: httpx.AsyncClient | None = None

    # -- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> Gateway:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.draining = True
        self.feed.close()
        log.info("gateway_stopping live_processes=%d", self.live_processes())
        await self._stack.aclose()

    def drain(self, grace: float) -> None:
        """Take no new turns; stop those still running (and close loops) in ``grace`` s."""
        if self.draining:
            return
        self.draining = True
        self.feed.close()  # the console's live streams end now, not after the grace period
        loop = asyncio.get_running_loop()
        # Turns still running just before the server's grace period ends are stopped with a
        # clean error rather than cut off mid-response; loops' turns end with loop_closed.
        loop.call_later(grace, self.runner.stop_all, "ccgate is shutting down")
        # The coroutine is made when it runs: a shutdown sooner than ``grace`` leaves none
        # behind unawaited (the exit stack closes the loops then).
        loop.call_later(grace, lambda: self._spawn(self.loops.aclose(), "ccgate-close-loops"))

    async def admit(
        self,
        caller: Caller,
        endpoint: str,
        model: ModelInfo,
        requested: str,
        *,
        session_key: str | None = None,
    ) -> Ticket:
        """Admit a request of every front door alike.

        Refused while draining (503), by its key's quota (429) or by a database
        another process holds locked (503); a refusal is counted in the metrics.
        """
        if self.draining:
            raise Unavailable("ccgate is shutting down and takes no new turns; retry shortly")
        self.counters.requests += 1
        try:
            accounts = await self._plan_admit(caller, model)
            ticket = await self.accounting.admit(
                caller, endpoint, model, requested, session_key=session_key
            )
            ticket.accounts = accounts
            return ticket
        except PlanLimited as exc:
            self.metrics.refused(
                endpoint=endpoint, model=model.id, status=exc.code or "", key_name=caller.name
            )
            raise
        except (QuotaExceeded, DatabaseBusy) as exc:
            self.metrics.refused(
                endpoint=endpoint, model=model.id, status=exc.code or "", key_name=caller.name
            )
            if isinstance(exc, QuotaExceeded):
                self.webhooks.emit(
                    "quota.exceeded",
                    {
                        "key": caller.name,
                        "namespace": caller.namespace,
                        "endpoint": endpoint,
                        "message": exc.message,
                    },
                )
            raise

    async def _plan_admit(self, caller: Caller, model: ModelInfo) -> frozenset[str] | None:
        """Refuse a request no upstream account can take now; return the accounts it may use.

        ``None``: any account (no fair share applies to the caller).
        """
        router = self.router
        if router is None:
            return None
        share = caller.key.quota.plan_share if caller.key is not None else None
        barred = await self.share.barred(
            caller.namespace, share, [u.id for u in self.accounts.upstreams()]
        )
        excluded = frozenset(b.account for b in barred)
        choice = router.availability(model.cli, exclude=excluded)
        if choice.account is not None:
            return (
                None
                if not barred
                else frozenset(u.id for u in self.accounts.upstreams() if u.id not in excluded)
            )
        if barred and router.availability(model.cli).account is not None:
            first = min(barred, key=lambda b: b.until or 0.0)
            reasons = "; ".join(b.reason(self.accounts.name_of(b.account)) for b in barred)
            self.webhooks.emit(
                "plan.share",
                {"key": caller.name, "namespace": caller.namespace, "message": reasons},
            )
            log.info("plan_share_refused key=%s", caller.name)
            raise PlanLimited(
                f"{reasons}; it may run again when the window resets",
                limit="plan_share",
                retry_after=max(1.0, first.until - time.time()) if first.until else None,
            )
        raise PlanLimited(
            f"no upstream account can take this request now: {choice.reason}",
            limit=choice.limit,
            retry_after=max(1.0, choice.until - time.time()) if choice.until else None,
        )

    def run_in_background(self, name: str, work: Coroutine[Any, Any, Any]) -> None:
        """Run a background response's work; :meth:`cancel_background` may stop it."""
        task = asyncio.get_running_loop().create_task(work, name=f"ccgate-{name}")
        self._background[name] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._background.pop(name, None))

    async def cancel_background(self, name: str) -> None:
        """Stop a background response's work (nothing when it already ended)."""
        task = self._background.get(name)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def live_processes(self) -> int:
        """Return how many Claude Code processes are alive (turns, warm ones, loops)."""
        runner = getattr(self, "runner", None)
        loops = getattr(self, "loops", None)
        return (runner.live_processes() if runner else 0) + (loops.live_processes() if loops else 0)

    # -- building ---------------------------------------------------------------------

    async def _start(self) -> None:
        settings, stack = self.settings, self._stack
        upstream = settings.upstream_url
        key = settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None
        if settings.demo and self._given_runner is None:
            from ccgate.demo import DemoServer, ScriptedModel

            self.demo = await stack.enter_async_context(DemoServer(ScriptedModel()))
            upstream, key = self.demo.url, DEMO_KEY
        self.upstream = upstream or ""
        data = settings.data_path
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
        data.chmod(0o700)  # ccgate's own: nobody else reads keys or transcripts
        clear_credential_files(data)
        orphans = reap_orphans(data)
        if orphans:
            log.warning("orphans_reaped count=%d pids=%s", len(orphans), orphans)

        database = Database(
            settings.effective_database_url, busy_timeout=settings.database_busy_timeout
        )
        stack.push_async_callback(database.close)
        await database.migrate()
        hurried = database.hurried(AFTER_TURN_WAIT)
        if settings.redis_url:
            await self._join_replicas(settings.redis_url)
        replicas = self.replicas
        # With replicas, the quota counters are in Redis (also for what the journal settles).
        counters = RedisCounterStore(self.shared) if self.shared is not None else None
        journal = _journal(hurried, data / "journal.jsonl", counters)

        config = runner_config(settings, upstream, key, self._environ)
        if replicas is not None:
            # Any replica resumes any conversation (or loop): transcripts go to the database.
            config = replace(config, transcripts=SqlTranscriptStore(database))
        dirs = WorkerDirs(data)  # one set of config dirs for turns and loops alike
        self.feed = Feed()
        self.alerts = PlanAlerts(settings.plan_warnings)
        meter = PlanMeter(
            allow_extra_usage=settings.allow_extra_usage, on_change=self._plan_changed
        )
        box = (
            SecretBox.from_setting(settings.accounts_key.get_secret_value())
            if settings.accounts_key
            else SecretBox.from_data_dir(data)
        )
        self.accounts = Accounts(
            SqlAccountStore(database), box, meter, settings_credential(key, upstream, self._environ)
        )
        await self.accounts.load()
        stack.push_async_callback(self.accounts.flush)
        #: The router over the accounts' runners (``None`` when a test's runner is given).
        self.router: AccountRouter | None = None
        if self._given_runner is None:
            # Idle loops share the warm processes' memory budget and pressure.
            self.router = AccountRouter(
                config,
                self.accounts,
                meter,
                order=settings.account_routing,
                elsewhere=lambda: self.loops.idle_processes(),
            )
            self.accounts.on_change(self.router.sync)
        self.parked = ParkedTurns(tool_timeout=settings.tool_result_timeout, placement=replicas)
        self.gate = Gate(
            settings.max_concurrent, settings.max_queue, make_room=self.parked.make_room
        )
        catalogue = self.catalogue
        self.loops = LoopManager(
            SqlLoopStore(database),
            agents=ClaudeAgents(
                config, dirs, launches=self.router.agent_launch if self.router else None
            ),
            loops_dir=settings.loops_path,
            gate=self.gate,
            cli_model=lambda name: catalogue.resolve(name).cli,
            idle_timeout=settings.loop_idle_timeout,
            choice_timeout=settings.choice_timeout,
            journal=journal,
            on_event=self._loop_event,
        )
        if self.router is not None:
            self.router.start()
            self._spawn(_follow_cli_models(self.router, catalogue), "ccgate-cli-models")
            self.runner: Runner = self.router
        else:
            assert self._given_runner is not None
            self.runner = self._given_runner
        stack.push_async_callback(self.runner.aclose)
        self.sessions = ConversationSessions(
            SqlSessionStore(database),
            self.runner,
            supersede=self.parked.supersede,
            continuation=settings.session_continuation,
            journal=journal,
        )
        self.turns = TurnManager(
            self.runner,
            self.gate,
            self.sessions,
            self.parked,
            placement=replicas,
            keepalive=settings.session_keepalive,
        )
        self.cache = ResponseCache(
            settings.cache_ttl,
            settings.cache_max_entries,
            shared=SharedBlobs(self.shared, replicas.id)
            if self.shared is not None and replicas is not None
            else None,
        )
        self.metrics = Metrics(self._gauges, per_key=settings.metrics_per_key)
        self.answers = Answers(
            self.turns,
            self.cache,
            self.flights,
            lookup=self.metrics.cache_lookup,
            flight_wait=settings.request_timeout,
        )
        self.ledger = SqlUsageStore(database, before_read=journal.flush)
        self.responses = SqlResponseStore(database)
        stale = await self.responses.fail_unfinished(
            "ccgate restarted before this background response finished; ask again"
        )
        if stale:
            log.warning("background_responses_failed count=%d", stale)
        self.share = FairShare(meter, self.ledger.account_spend, enforce_at=settings.plan_share_at)
        quotas = Quotas(
            SqlAdmissionStore(database, counters=counters),
            running=RedisRunning(self.shared) if self.shared is not None else None,
        )
        self.accounting = Accounting(
            quotas,
            self.metrics,
            journal,
            SqlAdmissionStore(hurried, counters=counters),
            owner=process_owner(),
            ledger=settings.usage_ledger,
            feed=self.feed,
        )
        self.keys = KeyManager(
            SqlKeyStore(database),
            last_used=SqlKeyStore(database.hurried(LAST_USE_WAIT)),
            on_change=self._key_changed if self.bus is not None else None,
        )
        if self.bus is not None:
            keys = self.keys
            self.bus.subscribe("keys", lambda data: keys.forget(data.get("id") if data else None))
            if replicas is not None:
                keeper = self._login_keeper(replicas, self.bus, SqlLoginStore(database), box)
                self.bus.subscribe("login", lambda _data: keeper.wake())
            await self.bus.start()
            stack.push_async_callback(self.bus.aclose)
        self.signins = Signins(settings, SqlConsoleSessionStore(database), self.keys)
        # Then what they recorded is written (behind their answers) before the database closes.
        stack.push_async_callback(journal.aclose)
        # Requests the server cancelled at shutdown are still recording what they got, which
        # needs their turns' processes and the database: wait for them before those close.
        stack.push_async_callback(self._recorded)
        stack.push_async_callback(self.parked.aclose)
        stack.push_async_callback(self.loops.aclose)
        stack.push_async_callback(self._stop_tasks)
        await self.webhooks.start()
        stack.push_async_callback(self.webhooks.aclose)
        try:
            await _catch_up(journal, self.accounting)
        except Exception:  # noqa: BLE001 - a locked database must not stop the start
            log.warning("bookkeeping_deferred", exc_info=True)
        self._spawn(self._sweep(SqlCounterStore(database)), "ccgate-sweep")
        self._spawn(_keep_books(journal, self.accounting, self.accounts), "ccgate-bookkeeping")
        if self.shared is not None:
            self._spawn(_keep_places(quotas), "ccgate-running-places")
        if self.webhooks.on:
            self._spawn(self._failures(), "ccgate-webhook-failures")
        if settings.plan_probe_interval > 0 and self.router is not None:
            self._spawn(self._probe_idle(settings.plan_probe_interval), "ccgate-plan-probes")
        log.info("gateway_started version=%s auth_mode=%s", __version__, settings.auth_mode)

    async def _join_replicas(self, url: str) -> None:
        """Connect to the shared Redis and take this replica's place among the others."""
        settings, stack = self.settings, self._stack
        shared = Shared(url, prefix=settings.redis_prefix, outage=settings.redis_outage)
        stack.push_async_callback(shared.aclose)
        if not await shared.ping():
            log.warning("redis_unreachable_at_start outage=%s", settings.redis_outage)
        self.shared = shared
        self.replicas = Replicas(shared, id=replica_id(), url=self._replica_url())
        await self.replicas.start()
        stack.push_async_callback(self.replicas.aclose)
        self.bus = Bus(shared)
        # Forwarded requests may stream for as long as a turn or a watch lasts.
        self.peers = httpx.AsyncClient(
            timeout=httpx.Timeout(None, connect=2.0),
            limits=httpx.Limits(max_keepalive_connections=32),
        )
        stack.push_async_callback(self.peers.aclose)

    def _login_keeper(
        self, replicas: Replicas, bus: Bus, store: SqlLoginStore, box: SecretBox
    ) -> LoginKeeper:
        """Start sharing the Claude Code login between the replicas, renewed on one at a time."""
        client = httpx.AsyncClient(follow_redirects=False)
        self._stack.push_async_callback(client.aclose)
        accounts = self.accounts

        async def shared() -> None:
            # While Redis is out of reach the others take it at their next check (30 s).
            with contextlib.suppress(SharedStateUnavailable):
                await bus.publish("login", {})

        keeper = LoginKeeper(
            store,
            box,
            ReplicaLock(replicas),
            OAuthTokenEndpoint(self.settings.login_token_url, client),
            user_credentials(dict(self._environ)),
            replica=replicas.id,
            wanted=lambda: any(u.kind == "login" for u in accounts.upstreams()),
            on_share=shared,
        )
        accounts.on_change(keeper.wake)
        self._spawn(keeper.run(), "ccgate-login")
        return keeper

    def _replica_url(self) -> str:
        settings = self.settings
        if settings.replica_url:
            return settings.replica_url.rstrip("/")
        host = settings.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{settings.port}"

    async def _key_changed(self, key_id: str) -> None:
        """Tell every replica to forget a key it may have cached."""
        assert self.bus is not None
        try:
            await self.bus.publish("keys", {"id": key_id})
        except SharedStateUnavailable:
            log.warning("key_change_not_shared key=%s (other replicas see it within 1 s)", key_id)

    async def loop_home(self, loop_id: str, *, forwarded: bool) -> Peer | None:
        """Return the replica that runs a loop (``None``: this one, which now holds its lease).

        ``forwarded``: another replica sent the request here as the loop's owner.
        """
        replicas = self.replicas
        if replicas is None or replicas.holds("loop", loop_id):
            return None
        try:
            peer = await replicas.claim("loop", loop_id)
        except SharedStateUnavailable:
            assert self.shared is not None
            if self.shared.tolerate("loop leases"):
                return None
            raise
        if peer is not None and forwarded:
            log.warning("loop_lease_race loop=%s holder=%s", loop_id, peer.id)
            return None
        return peer

    async def take_loop(self, loop_id: str) -> None:
        """Run a loop here: the replica that held it cannot be reached."""
        if self.replicas is not None:
            await self.replicas.steal("loop", loop_id)

    def _gauges(self) -> Gauges:
        return Gauges(
            active=self.gate.active,
            queued=self.gate.queued,
            waiting_for_tools=len(self.parked),
            cli_processes=self.live_processes(),
            cached_answers=len(self.cache),
            turns_finished=self.counters.turns_finished,
            turns_failed=self.counters.turns_failed,
            pool=self.runner.pool_status(),
            accounts=self._account_gauges(),
            routing=self._routing(),
        )

    def _account_gauges(self) -> tuple[AccountGauge, ...]:
        router = self.router
        turns = router.routed.turns if router is not None else {}
        meter = self.accounts.meter
        gauges = []
        for record in self.accounts.records():
            state = meter.state(record.id)
            windows = {
                w.name: (w.utilization, w.resets_at)
                for w in (state.reading.windows if state.reading else ())
            }
            gauges.append(
                AccountGauge(
                    name=record.name,
                    available=record.enabled and meter.verdict(record.id).usable,
                    windows=windows,
                    cooldown_until=state.cooldown.until if state.cooldown else 0.0,
                    turns=turns.get(record.id, 0),
                )
            )
        return tuple(gauges)

    def _routing(self) -> dict[str, int]:
        routed = self.router.routed if self.router is not None else None
        if routed is None:
            return {}
        return {"moved": routed.moved, "failovers": routed.failovers, "refused": routed.refused}

    async def probe_account(self, id_or_name: str) -> dict[str, Any]:
        """Read an account's plan now with a tiny request; return its view afterwards."""
        record = self.accounts.find(id_or_name)
        if self.router is None:
            raise Unavailable("no Claude Code runs here (a test's runner); nothing to probe")
        if not record.enabled:
            raise Conflict(f"account {record.name!r} is disabled; enable it to probe it")
        model = self.catalogue.resolve(self.settings.default_model)
        failed = await self.router.probe(record.id, model)
        view = self.accounts.view(record)
        view["probe"] = {"ok": failed is None, "error": failed.message[:300] if failed else None}
        return view

    async def _probe_idle(self, interval: float) -> None:
        """Probe subscription accounts nobody used for ``interval`` seconds (their plan
        would otherwise be unknown or old)."""
        while True:
            await asyncio.sleep(min(interval, 60.0))
            router = self.router
            if router is None or self.draining:
                continue
            now = time.time()
            for upstream in self.accounts.upstreams():
                if upstream.kind == "api_key":
                    continue
                reading = self.accounts.meter.state(upstream.id).reading
                seen = max(
                    reading.observed_at if reading else 0.0,
                    router.routed.last_turn.get(upstream.id, 0.0),
                )
                if now - seen < interval or not self.accounts.meter.verdict(upstream.id).usable:
                    continue
                try:
                    await self.probe_account(upstream.id)
                    log.info("account_probed account=%s", upstream.name)
                except Exception:  # noqa: BLE001 - tried again next interval
                    log.warning("account_probe_failed account=%s", upstream.name, exc_info=True)

    async def shared_plan(self, namespace: str) -> list[dict[str, Any]]:
        """Return what a key holder may see of the plans: each enabled account's windows
        (utilisation and reset), whether it takes requests now, and this key's own estimated
        share of its 5-hour window; no account's name, credential or other key's data."""
        meter = self.accounts.meter
        shown = []
        for number, record in enumerate((r for r in self.accounts.records() if r.enabled), start=1):
            state = meter.state(record.id)
            verdict = meter.verdict(record.id)
            mine, _, _ = await self.share.used(namespace, record.id)
            windows = [
                {
                    "window": w.name,
                    "utilization": w.utilization,
                    "status": w.status,
                    "resets_at": w.resets_at,
                }
                for w in (state.reading.windows if state.reading else ())
            ]
            shown.append(
                {
                    "account": number,
                    "available": verdict.usable,
                    "available_at": None if verdict.usable else verdict.until,
                    "windows": windows,
                    "your_share_of_five_hour": round(mine, 4),
                }
            )
        return shown

    def plan_summary(self) -> dict[str, Any]:
        """Return the accounts' state in brief, for ``/health`` (no names, no secrets)."""
        meter = self.accounts.meter
        records = [r for r in self.accounts.records() if r.enabled]
        verdicts = [meter.verdict(r.id) for r in records]
        usable = [v for v in verdicts if v.usable]
        ends = [v.until for v in verdicts if not v.usable and v.until is not None]
        return {
            "enabled": len(records),
            "available": len(usable),
            "cooling": len(records) - len(usable),
            "headroom": round(max((v.headroom for v in usable), default=0.0), 4),
            "next_available_at": min(ends) if ends and not usable else None,
        }

    def _plan_changed(self, account: str, state: PlanState, news: tuple[str, ...]) -> None:
        """Store an account's new plan state; tell people what they should know of it."""
        self.accounts.save_plan(account, state)
        name = self.accounts.name_of(account)
        told: list[tuple[str, str, dict[str, Any]]] = []
        reading = state.reading
        if "extra_usage" in news:
            told.append(
                (
                    "plan.extra_usage",
                    f"account {name!r} answered a request billed as extra usage"
                    + (
                        ""
                        if self.settings.allow_extra_usage
                        else "; it takes no more until "
                        f"{when(reading.resets_at if reading else None)}"
                    ),
                    {},
                )
            )
        if "rejected" in news and state.cooldown is not None:
            told.append(
                (
                    "plan.rejected",
                    f"account {name!r} cools down: {state.cooldown.reason}",
                    {"until": state.cooldown.until, "limit": state.cooldown.limit},
                )
            )
        if "recovered" in news:
            told.append(("plan.recovered", f"account {name!r} serves again", {}))
        for window, threshold, used, resets_at in self.alerts.crossed(account, state):
            told.append(
                (
                    "plan.warning",
                    f"account {name!r}: its {window} window is {used:.0%} used "
                    f"(warning at {threshold:.0%}); it resets at {when(resets_at)}",
                    {"window": window, "utilization": used, "resets_at": resets_at},
                )
            )
        for event, message, extra in told:
            level = logging.WARNING if event != "plan.recovered" else logging.INFO
            log.log(level, "%s account=%s %s", event.replace(".", "_"), name, message)
            self.webhooks.emit(event, {"account": name, "message": message, **extra})
            self.feed.tell(
                Notice(namespace="", title=f"Plan: {name}", body=message, link="/console/accounts")
            )

    # -- background work --------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        """Run ``work`` in the background, kept until it ends or the gateway closes."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stop_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _loop_event(self, record: LoopRecord, event: LoopEvent) -> None:
        """Tell the webhooks a loop waits for a person."""
        if isinstance(event, ChoiceRequested):
            payload = event.payload
            what = payload.get("summary") or "; ".join(
                str(q.get("question")) for q in payload.get("questions") or []
            )
            asks = "a question" if event.kind == "question" else "allow?"
            self.feed.tell(
                Notice(
                    namespace=record.namespace,
                    title=f"{record.title}: {asks}",
                    body=str(what)[:200],
                    link=f"/console/loops/{record.id}",
                )
            )
            self.webhooks.emit(
                "choice.pending",
                {
                    "loop_id": record.id,
                    "loop_title": record.title,
                    "namespace": record.namespace,
                    "choice_id": event.choice_id,
                    "kind": event.kind,
                    "tool": payload.get("tool"),
                    "summary": payload.get("summary"),
                    "questions": [q.get("question") for q in payload.get("questions") or []]
                    or None,
                },
            )

    async def _failures(self) -> None:
        """Tell the webhooks of every request that ended in an error (from the live feed)."""
        while not self.draining:
            watch = self.feed.watch()
            try:
                while True:
                    entry = await watch.next(60)
                    if isinstance(entry, Entry) and entry.status not in QUIET_ENDS:
                        self.webhooks.emit(
                            "turn.failed",
                            {
                                "request": entry.id,
                                "key": entry.key_name,
                                "namespace": entry.namespace,
                                "door": entry.door,
                                "endpoint": entry.endpoint,
                                "model": entry.model,
                                "status": entry.status,
                            },
                        )
            except StopAsyncIteration:
                continue  # fell behind (a flood): watch again from now
            finally:
                watch.close()

    async def _sweep(self, counters: SqlCounterStore) -> None:
        """Expire idle sessions, old quota windows and old idempotency records, now and then."""
        ttl = self.settings.session_ttl
        interval = min(60.0, max(1.0, ttl / 10))
        while True:
            try:
                removed = await self.sessions.expire(ttl)
                if removed:
                    log.info("sessions_expired count=%d", removed)
                minute, day, month = windows_at(time.time())
                await counters.sweep("minute", minute.start - 3600)
                await counters.sweep("day", day.start - 2 * 86_400)
                await counters.sweep("month", month.start - 40 * 86_400)
                await self.loops.expire()
            except Exception:  # noqa: BLE001 - a failed sweep is retried next interval
                log.warning("sweep_failed", exc_info=True)
            await asyncio.sleep(interval)

    async def _recorded(self) -> None:
        """Wait, bounded, for every admitted request to be recorded (at shutdown)."""
        left = await self.accounting.drain(SHUTDOWN_RECORD_WAIT)
        if left:
            log.warning("shutdown_unrecorded count=%d", left)


async def _follow_cli_models(runner: AccountRouter, catalogue: Catalogue) -> None:
    """Adopt the models the CLI offers into the catalogue (once, in the background)."""
    try:
        models, seen_at = await runner.cli_models()
    except Exception as exc:  # noqa: BLE001 - the packaged list stays in use
        log.warning("cli_models_unavailable error=%s", type(exc).__name__)
        return
    catalogue.adopt(models, seen_at=seen_at)
    log.info("cli_models models=%s", ",".join(f"{m.value}={m.resolved}" for m in models))


def _journal(hurried: Database, path: Path, counters: RedisCounterStore | None = None) -> Journal:
    """Return the journal of what finished turns record, applied by stores in a hurry."""
    admissions = SqlAdmissionStore(hurried, counters=counters)
    sessions = SqlSessionStore(hurried)
    loops = SqlLoopStore(hurried)

    async def settle(payload: dict[str, Any]) -> None:
        await admissions.settle(Settlement.from_json(payload))

    def call(method: Callable[..., Awaitable[object]]) -> Apply:
        return lambda payload: method(**payload)

    async def settle_many(payloads: list[dict[str, Any]]) -> None:
        await admissions.settle_many([Settlement.from_json(p) for p in payloads])

    return Journal(
        path,
        {
            "settle": settle,
            "session_turn": call(sessions.record_turn),
            "loop_turn": call(loops.record_turn),
            "loop_finish": call(loops.finish),
        },
        batches={"settle": settle_many},
    )


async def _catch_up(journal: Journal, accounting: Accounting) -> None:
    """Apply what the journal holds, then reconcile the admissions of dead processes."""
    await journal.replay()
    interrupted = await accounting.reconcile(skip=journal.refs())
    if interrupted:
        log.warning("admissions_reconciled count=%d", len(interrupted))


async def _keep_books(journal: Journal, accounting: Accounting, accounts: Accounts) -> None:
    """Replay the journal, checkpoint running requests and reconcile, now and then; adopt
    the accounts another process changed."""
    while True:
        await asyncio.sleep(BOOKKEEPING_EVERY)
        try:
            await accounting.checkpoint()
            await _catch_up(journal, accounting)
            await accounts.refresh()
        except Exception:  # noqa: BLE001 - tried again next interval
            log.info("bookkeeping_deferred", exc_info=True)


async def _keep_places(quotas: Quotas) -> None:
    """Renew this replica's places among each key's running requests (``max_concurrent``)."""
    while True:
        await asyncio.sleep(BOOKKEEPING_EVERY)
        try:
            await quotas.renew()
        except Exception:  # noqa: BLE001 - tried again next interval
            log.warning("running_places_not_renewed", exc_info=True)


def settings_credential(
    key: str | None, upstream: str | None, environ: Mapping[str, str]
) -> SettingsCredential:
    """Return the credential of the settings (the ``default`` account): as the CLI would
    find it before accounts existed."""
    if key:
        return SettingsCredential("api_key", key, upstream)
    if environ.get("ANTHROPIC_API_KEY"):
        return SettingsCredential("api_key", environ["ANTHROPIC_API_KEY"], upstream)
    if environ.get("CLAUDE_CODE_OAUTH_TOKEN"):
        return SettingsCredential("oauth_token", environ["CLAUDE_CODE_OAUTH_TOKEN"], upstream)
    return SettingsCredential("login", None, upstream)
