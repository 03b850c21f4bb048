"""Turns on several upstream accounts: one Claude Code runner per account, and the router.

:class:`AccountRouter` is the :class:`~ccgate.engine.runner.Runner` of the
compatible APIs when ccgate runs Claude Code. It keeps one
:class:`~ccgate.claude.runner.ClaudeRunner` per enabled account, each with its
own credential, base URL, config dirs and warm processes (nothing of one
account's credential reaches another's process), and decides where each turn
runs (``accounts.routing``):

- a new conversation goes to the account with the most headroom for its model
  (or the operator's priority order); its process and session are made there;
- a conversation's next turns stay on that account while it can serve them;
- a turn refused before anything reached the client — a plan window used up
  (reported by Claude Code's rate-limit event, or a refusal inside a streamed
  answer that Claude Code retried and lost), an API key's 429, a billing or
  credentials failure — cools its account down (``accounts.meter``) and runs
  again on another account, resumed from the conversation's transcript as it
  was before the refused turn (transcripts are shared by every account's CLIs);
- when no account can take it, the turn fails with ``plan_limit``, naming each
  account's reason and when the first frees up; a turn is never retried onto an
  account that would bill it as extra usage unless the operator allowed that.

Every plan report of an account's CLIs goes to the meter, attributed to that
account (each CLI runs on exactly one credential).

With ``RunnerConfig.transcripts`` the accounts' runners share transcripts with
the other replicas through one :class:`~ccgate.claude.shared.SharedTranscripts`
(they share the local files too): a transcript rewound after a refusal is
shared again, and a session fetched from the store ends any account's warm
process of it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from ccgate.accounts.manager import Upstream
from ccgate.accounts.meter import PlanMeter
from ccgate.accounts.plan import family_of
from ccgate.accounts.routing import SOFT_LIMITS, Candidate, Choice, Order, choose
from ccgate.claude.environment import Credential
from ccgate.claude.launch import Launch
from ccgate.claude.plan import reading_of
from ccgate.claude.process import RunnerConfig
from ccgate.claude.runner import ClaudeRunner
from ccgate.claude.shared import Found, SharedTranscripts
from ccgate.claude.transcript import (
    ACCOUNT_REFUSALS,
    rewind_transcript,
    transcript_path,
    write_transcript,
)
from ccgate.claude.workdirs import WorkerDirs
from ccgate.engine.events import AgentEvent, TurnError, TurnStarted, Usage
from ccgate.engine.models import CliModel, ModelInfo
from ccgate.engine.probe import probe_turn
from ccgate.engine.runner import IdleProcess
from ccgate.engine.toolbox import ToolResultBox
from ccgate.engine.turn import Message, TurnRequest
from ccgate.errors import PlanLimited

__all__ = ["AccountRouter", "AccountSource", "Routed"]

log = logging.getLogger("ccgate.accounts")

#: Cooldowns of refusals that name no reset time (seconds), by the turn error's kind.
_COOLDOWNS = {"rate_limit": 60.0, "billing": 3600.0, "authentication": 300.0}
_EXTRA_USAGE = re.compile(r"extra usage|usage credits|out of credits|credits_required", re.I)


class AccountSource(Protocol):
    """Where the router finds the enabled accounts (``accounts.manager.Accounts``)."""

    def upstreams(self) -> list[Upstream]:
        """Return the enabled accounts with their secrets."""
        ...


@dataclass
class Routed:
    """What the router did, for ``/health`` and ``/metrics``."""

    #: Turns started per account id.
    turns: dict[str, int] = field(default_factory=dict)
    #: Conversations that left their account for another.
    moved: int = 0
    #: Turns refused by an account and run again on another.
    failovers: int = 0
    #: Turns no account could take.
    refused: int = 0
    #: When a turn last started on each account (unix time).
    last_turn: dict[str, float] = field(default_factory=dict)
    #: Probes made to read an idle account's plan.
    probes: int = 0


@dataclass
class _Account:
    upstream: Upstream
    runner: ClaudeRunner
    launch: Launch


class AccountRouter:
    """The runner over every account's Claude Code runner; see the module docstring."""

    def __init__(
        self,
        config: RunnerConfig,
        accounts: AccountSource,
        meter: PlanMeter,
        *,
        order: Order = "headroom",
        elsewhere: Callable[[], list[IdleProcess]] | None = None,
    ) -> None:
        self._config = config
        self._source = accounts
        self._meter = meter
        self._order: Order = order
        self._elsewhere = elsewhere
        self._accounts: dict[str, _Account] = {}
        self._retired: set[asyncio.Task[None]] = set()
        #: Each conversation's (Claude Code session's) account.
        self._sticky: dict[str, str] = {}
        self._neutral_cwd = WorkerDirs(config.data_dir).neutral_cwd
        self._shared = SharedTranscripts(config.transcripts)
        self._stopping: str | None = None
        self.routed = Routed()

    # -- accounts ---------------------------------------------------------------------

    def sync(self) -> None:
        """Adopt the enabled accounts: a runner for each new one, none for the gone."""
        wanted = {u.id: u for u in self._source.upstreams()}
        for account_id, held in list(self._accounts.items()):
            if wanted.get(account_id) != held.upstream:
                del self._accounts[account_id]
                task = asyncio.get_running_loop().create_task(held.runner.aclose())
                self._retired.add(task)
                task.add_done_callback(self._retired.discard)
        for account_id, upstream in wanted.items():
            if account_id not in self._accounts and self._stopping is None:
                self._accounts[account_id] = self._make(upstream)

    def _make(self, upstream: Upstream) -> _Account:
        credential: Credential | None = None
        if upstream.kind == "api_key" and upstream.secret:
            credential = Credential(upstream.secret, "CLAUDE_CODE_API_KEY_FILE_DESCRIPTOR")
        elif upstream.kind == "oauth_token" and upstream.secret:
            credential = Credential(upstream.secret, "CLAUDE_CODE_OAUTH_TOKEN_FILE_DESCRIPTOR")
        account_id = upstream.id
        meter = self._meter

        def on_plan(raw: dict[str, Any]) -> None:
            meter.observe(account_id, reading_of(raw))

        config = replace(
            self._config,
            account=account_id,
            credential=credential,
            upstream_url=upstream.base_url or self._config.upstream_url,
            on_plan=on_plan,
        )
        # The settings' account keeps the config dirs of before accounts.
        dirs = WorkerDirs(
            config.data_dir,
            account="" if upstream.source == "settings" else account_id,
            login=upstream.kind == "login",
        )

        def elsewhere() -> list[IdleProcess]:
            # Loops' idle processes and the other accounts' share one memory budget.
            others = [
                idle
                for other_id, other in self._accounts.items()
                if other_id != account_id
                for idle in other.runner.pool.idle_elsewhere()
            ]
            return (self._elsewhere() if self._elsewhere else []) + others

        runner = ClaudeRunner(config, dirs=dirs, elsewhere=elsewhere, shared=self._shared)
        runner.pool.start()
        return _Account(upstream, runner, Launch(config, dirs))

    def _candidates(self) -> list[Candidate]:
        return [
            Candidate(a.upstream.id, a.upstream.name, a.upstream.priority)
            for a in self._accounts.values()
        ]

    def availability(self, model: str, *, exclude: frozenset[str] = frozenset()) -> Choice:
        """Return the account a new conversation of ``model`` would go to now, or why none."""
        return choose(
            self._candidates(), self._meter, family_of(model), exclude=exclude, order=self._order
        )

    def agent_launch(self, model: str) -> Launch:
        """Return how to start a loop's agent: on the account a new conversation would take."""
        choice = self.availability(model)
        if choice.account is None:
            raise PlanLimited(
                f"no upstream account can run the loop now: {choice.reason}",
                limit=choice.limit,
                retry_after=_seconds_until(choice.until),
            )
        return self._accounts[choice.account.id].launch

    async def probe(self, account: str, model: ModelInfo) -> TurnError | None:
        """Read ``account``'s plan with the smallest request there is (a one-line turn of
        at most 16 tokens, outside any conversation); return its error, if it failed.

        Claude Code reports the plan of a fresh process's first answer, so the meter
        has a reading afterwards (for subscription accounts; API keys have no plan).
        """
        held = self._accounts.get(account)
        if held is None:
            return TurnError("unavailable", "the account is disabled or gone")
        self.routed.probes += 1
        self.routed.last_turn[account] = time.time()
        failed: TurnError | None = None
        events = held.runner.run(probe_turn(model))
        try:
            async for event in events:
                if isinstance(event, TurnError):
                    failed = event
        finally:
            await events.aclose()
        if failed is None:
            self._meter.succeeded(account)
        else:
            self._refused(account, failed)
        return failed

    def account_of(self, cli_session_id: str) -> str | None:
        """Return the account a conversation is on."""
        return self._sticky.get(cli_session_id)

    # -- SessionStates ----------------------------------------------------------------

    def new_session(self, turn: TurnRequest) -> str:
        """Choose the new conversation's account; take a spare of it when one is ready."""
        if self._stopping is None:
            choice = self.availability(turn.model, exclude=_barred(turn, self._accounts))
            if choice.account is not None:
                session = self._accounts[choice.account.id].runner.new_session(turn)
                self._sticky[session] = choice.account.id
                return session
        return str(uuid.uuid4())

    async def has_session(self, cli_session_id: str) -> bool:
        """Tell whether the conversation's transcript is here, or was fetched from the shared
        store (every account reads it)."""
        found = await self._shared.ready(cli_session_id, self._transcript(cli_session_id))
        if found is Found.FETCHED:
            for held in self._accounts.values():  # a warm process holds an older state
                held.runner.release_process(cli_session_id)
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
            self._neutral_cwd,
            cli_session_id,
            history,
            model,
            results=results,
        )
        self._shared.upload_soon(cli_session_id, path)

    def release(self, cli_session_id: str) -> None:
        """Forget a conversation: its warm process (on whichever account) and transcript go."""
        for held in self._accounts.values():
            held.runner.release_process(cli_session_id)
        self._transcript(cli_session_id).unlink(missing_ok=True)
        self._shared.forget(cli_session_id)
        self._sticky.pop(cli_session_id, None)

    def _transcript(self, cli_session_id: str) -> Path:
        return transcript_path(self._config.data_dir, self._neutral_cwd, cli_session_id)

    # -- Runner -----------------------------------------------------------------------

    async def run(
        self, turn: TurnRequest, box: ToolResultBox | None = None
    ) -> AsyncGenerator[AgentEvent, None]:
        """Run ``turn`` on its conversation's account, or move it; see the module docstring."""
        family = family_of(turn.model)
        plan = turn.session
        session = plan.cli_session_id if plan is not None else None
        current = self._sticky.get(session) if session is not None else None
        origin = current
        # A turn that re-runs a client tool call at start has taken its result: it runs once.
        movable = plan is None or plan.deferred_call is None
        path = self._transcript(session) if session is not None else None
        mark = path.stat().st_size if path is not None and path.exists() else None
        barred = _barred(turn, self._accounts)
        tried: set[str] = set(barred)
        #: The last refusal not of a plan (an API key's 429, credentials, billing), and the
        #: events before it: what the client gets when no other account can serve.
        soft_refusal: list[AgentEvent] = []
        while True:
            choice = choose(
                self._candidates(),
                self._meter,
                family,
                current=current,
                exclude=tried,
                order=self._order,
            )
            if choice.account is None:
                if soft_refusal:
                    for held_back in soft_refusal:
                        yield held_back
                    return
                if tried != barred:
                    # Say why of every account, not only of those left untried.
                    everyone = choose(self._candidates(), self._meter, family, exclude=barred)
                    if everyone.account is None:
                        choice = everyone
                self.routed.refused += 1
                log.warning("plan_limit model=%s reason=%s", turn.model, choice.reason)
                yield TurnError(
                    "plan_limit",
                    f"{choice.limit}: no upstream account can take this request now: "
                    f"{choice.reason}",
                    retry_after=_seconds_until(choice.until),
                )
                return
            account = choice.account.id
            if origin is not None and account != origin:
                self.routed.moved += 1
                log.info("conversation_moved from=%s to=%s", origin, choice.account.name)
                origin = account
            if session is not None:
                self._sticky[session] = account
            held = self._accounts[account]
            self.routed.turns[account] = self.routed.turns.get(account, 0) + 1
            self.routed.last_turn[account] = time.time()
            refused = False
            events = held.runner.run(turn, box)
            waiting: list[AgentEvent] = []
            started = False
            last: AgentEvent | None = None
            try:
                async for event in events:
                    last = event
                    if started:
                        yield event
                        continue
                    if isinstance(event, TurnStarted | Usage):
                        waiting.append(event)
                        continue
                    if (
                        isinstance(event, TurnError)
                        and self._refused(account, event)
                        and movable
                        and not choice.last_resort
                    ):
                        refused = True
                        break
                    started = True
                    for early in waiting:
                        yield early
                    yield event
            finally:
                await events.aclose()
            if not refused:
                if started and not isinstance(last, TurnError):
                    self._meter.succeeded(account)
                elif not started:
                    for early in waiting:
                        yield early
                return
            # Refused before anything reached the client: try the next account, on the
            # conversation as it was before this turn.
            cooldown = self._meter.state(account).cooldown
            if cooldown is not None and cooldown.limit in SOFT_LIMITS and last is not None:
                soft_refusal = [*waiting, last]
            else:
                soft_refusal = []
            self.routed.failovers += 1
            tried.add(account)
            current = None
            if session is not None and path is not None:
                held.runner.release_process(session)
                rewind_transcript(path, mark)
                await self._shared.upload(session, path)
            kind = last.kind if isinstance(last, TurnError) else "?"
            log.info("account_refused account=%s kind=%s; trying another", held.upstream.name, kind)

    def _refused(self, account: str, error: TurnError) -> bool:
        """Tell whether ``error`` is the account's refusal (noting it in the meter)."""
        if error.kind not in ACCOUNT_REFUSALS:
            return False
        state = self._meter.state(account)
        extra = bool(_EXTRA_USAGE.search(error.message))
        if state.cooldown is None or extra:
            until = time.time() + error.retry_after if error.retry_after else None
            if until is None:
                until = time.time() + _COOLDOWNS[error.kind]
            limit = (
                "extra_usage"
                if extra
                else {
                    "rate_limit": "rate_limit",
                    "billing": "billing",
                    "authentication": "credentials",
                }[error.kind]
            )
            what = {
                "extra_usage": "the upstream asked for extra usage",
                "rate_limit": "the upstream's rate limit (HTTP 429)",
                "billing": "the upstream account cannot pay",
                "credentials": "the upstream rejected its credentials",
            }[limit]
            self._meter.refused(account, until=until, reason=what, limit=limit)
        return True

    def live_processes(self) -> int:
        """Return how many CLI processes every account has alive."""
        return sum(a.runner.live_processes() for a in self._accounts.values())

    def pool_status(self) -> dict[str, object]:
        """Return what the accounts' pools hold and did, added up."""
        total: dict[str, Any] = {}
        for held in self._accounts.values():
            _add_into(total, held.runner.pool_status())
        return total

    def start(self) -> None:
        """Start a runner for every enabled account."""
        self.sync()

    async def cli_models(self) -> tuple[list[CliModel], int]:
        """Return the models the CLI offers (asked of the first account's runner)."""
        for held in self._accounts.values():
            return await held.runner.cli_models()
        return [], 0

    def stop_all(self, reason: str) -> None:
        """End every live turn of every account now."""
        self._stopping = reason
        for held in self._accounts.values():
            held.runner.stop_all(reason)

    async def aclose(self) -> None:
        """End every turn and process of every account."""
        self._stopping = self._stopping or "ccgate is shutting down"
        runners = [a.runner for a in self._accounts.values()]
        self._accounts.clear()
        await asyncio.gather(*(r.aclose() for r in runners), return_exceptions=True)
        if self._retired:
            await asyncio.gather(*self._retired, return_exceptions=True)
        await self._shared.aclose()


def _barred(turn: TurnRequest, accounts: dict[str, _Account]) -> frozenset[str]:
    """Return the accounts ``turn`` may not run on (its key's fair share)."""
    if turn.accounts is None:
        return frozenset()
    return frozenset(a for a in accounts if a not in turn.accounts)


def _seconds_until(until: float | None) -> float | None:
    return max(1.0, until - time.time()) if until is not None else None


#: Pool figures that are limits, the same for every account (not added up).
_LIMITS = frozenset({"max_processes", "memory_budget_mb", "keepalive_s"})


def _add_into(total: dict[str, Any], part: dict[str, object]) -> None:
    for name, value in part.items():
        if isinstance(value, bool) or name in _LIMITS:
            total.setdefault(name, value)
        elif isinstance(value, int | float):
            total[name] = total.get(name, 0) + value
        elif isinstance(value, dict):
            _add_into(total.setdefault(name, {}), value)
        else:
            total.setdefault(name, value)
