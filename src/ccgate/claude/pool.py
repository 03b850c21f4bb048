"""Which idle Claude Code processes ccgate keeps, for whom, and when it ends them.

Two kinds of idle process are kept:

- **warm conversations** -- after a turn, a conversation's process waits
  ``keepalive`` seconds for that conversation's next turn, which then needs no
  start-up; found by the conversation's Claude Code session id.
- **spares** -- processes started ahead of demand for the configurations in use
  (:class:`~ccgate.claude.warm.ProcessConfig`). A configuration is *hot*
  once ``HOT_AFTER`` new conversations used it within ``HOT_WINDOW``; each hot
  one gets a spare (two when it is busy), within ``max_spares`` and the memory
  budget. A new conversation that finds a spare of its configuration takes it
  (:meth:`ProcessPool.claim`): the spare is bound to that conversation for good
  and a replacement starts in the background, one start at a time. Spares of a
  configuration that went cold are ended.

Idle processes count against memory, never against the turn slots: when their
memory exceeds ``memory_mb``, or the machine's available memory falls below
``LOW_MEMORY_SHARE`` of its total, the oldest idle ones are ended first. A
process that exits on its own, or fails to start, is discarded; a configuration
whose spares keep failing is retried with a growing back-off. Nothing here
talks to the CLI: the runner starts processes and owns them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from ccgate.claude.memory import SystemMemory, process_memory_mb
from ccgate.claude.warm import CliProcess, Job, ProcessConfig, ProcessState
from ccgate.engine.runner import IdleProcess

__all__ = ["PoolStats", "ProcessPool"]

log = logging.getLogger("ccgate.engine")

#: A configuration is hot after this many new conversations within ``HOT_WINDOW`` seconds.
HOT_AFTER = 2
HOT_WINDOW = 600.0
#: A hot configuration with this many new conversations in the last minute gets two spares.
BUSY_AFTER = 3
SPARES_PER_CONFIG = 2
#: Idle processes are ended while available memory is below this share of the total.
LOW_MEMORY_SHARE = 0.10
#: How often the pool looks at memory, dead processes and cold configurations.
TICK = 5.0
#: What a process is assumed to hold before its memory was read (MB).
_DEFAULT_PROCESS_MB = 120.0
#: How long a warm process's previous turn may take to finish reading before it is skipped.
_FINISH_WAIT = 5.0


class _Idle(NamedTuple):
    since: float
    memory_mb: float
    end: Callable[[], None]
    spare: bool


@dataclass
class PoolStats:
    """What the pool did since start."""

    #: Turns that ran on a process already running: their conversation's, or a spare.
    hits_conversation: int = 0
    hits_pool: int = 0
    #: Turns that had to start a process.
    misses: int = 0
    #: Idle processes ccgate ended, by reason (keepalive, memory, cold, exited, released...).
    evictions: dict[str, int] = field(default_factory=lambda: collections.defaultdict(int))
    #: Spares that failed to start.
    start_failures: int = 0


class ProcessPool:
    """Keep warm conversation processes and spares; end idle ones by age and memory."""

    def __init__(
        self,
        *,
        keepalive: float,
        max_spares: int,
        memory_mb: float,
        start_spare: Callable[[ProcessConfig], CliProcess],
        memory: SystemMemory | None = None,
        elsewhere: Callable[[], list[IdleProcess]] | None = None,
    ) -> None:
        self._keepalive = keepalive
        #: Other idle processes (loops') that share the memory budget and its pressure.
        self._elsewhere = elsewhere or (lambda: [])
        self._max_spares = max_spares
        self._memory_mb = memory_mb
        self._start_spare = start_spare
        self._memory = memory or SystemMemory()
        self.stats = PoolStats()
        #: Processes bound to a conversation, by Claude Code session id.
        self._warm: dict[str, CliProcess] = {}
        #: Spares by configuration key, oldest first.
        self._spares: dict[str, list[CliProcess]] = {}
        self._configs: dict[str, ProcessConfig] = {}
        self._demand: dict[str, collections.deque[float]] = {}
        self._backoff: dict[str, tuple[int, float]] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    # -- what the runner asks -------------------------------------------------

    def claim(self, config: ProcessConfig) -> str | None:
        """Bind a ready spare of ``config`` to a new conversation; return its session id.

        Notes the demand either way (that is how configurations become hot).
        """
        self._note_demand(config)
        spares = self._spares.get(config.key, [])
        for proc in list(spares):
            if proc.state is ProcessState.IDLE and proc.alive():
                spares.remove(proc)
                proc.spare = False
                self._warm[proc.session_id] = proc
                self._wake.set()  # a replacement starts in the background
                return proc.session_id
            if not proc.alive():
                self._discard(proc, "exited")
        self._wake.set()
        return None

    async def take(self, session_id: str, config: ProcessConfig) -> CliProcess | None:
        """Return the conversation's idle process when it can run a turn of ``config``."""
        proc = self._warm.get(session_id)
        if proc is None:
            return None
        if proc.state is ProcessState.BUSY and proc.finishing:
            # Its previous turn ended for the client; the CLI is finishing that answer.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.settled.wait(), _FINISH_WAIT)
        if proc.state is not ProcessState.IDLE:
            return None
        if not proc.alive():
            self._discard(proc, "exited")
            return None
        if proc.config.key != config.key:
            # Same conversation, other model, prompt or tools: start one that fits.
            self._discard(proc, "replaced")
            return None
        proc.state = ProcessState.BUSY
        proc.settled.clear()
        return proc

    def bind(self, proc: CliProcess) -> None:
        """Keep track of a process started for a conversation."""
        old = self._warm.get(proc.session_id)
        if old is not None and old is not proc:
            self._discard(old, "replaced")
        self._warm[proc.session_id] = proc

    def count_turn(self, proc: CliProcess, *, cold: bool) -> None:
        """Count a turn as a hit (warm conversation or spare) or a miss (a start)."""
        if cold:
            self.stats.misses += 1
        elif proc.served == 0:
            self.stats.hits_pool += 1
        else:
            self.stats.hits_conversation += 1

    async def next_job(self, proc: CliProcess) -> Job | None:
        """Park ``proc`` idle until its next turn; None when it is to end instead."""
        proc.finishing = False
        if self._closing or proc.doomed or proc.state is ProcessState.CLOSED:
            return None
        if not proc.spare and self._keepalive <= 0:
            return None
        proc.state = ProcessState.IDLE
        proc.idle_since = time.monotonic()
        proc.memory_mb = process_memory_mb(proc.pid) if proc.pid else None
        proc.settled.set()
        self._enforce_memory()
        try:
            if proc.spare:
                job = await proc.inbox.get()
            else:
                job = await asyncio.wait_for(proc.inbox.get(), self._keepalive)
        except TimeoutError:
            if proc.state is ProcessState.IDLE:
                self._discard(proc, "keepalive")
            return None
        return job

    def closed(self, proc: CliProcess) -> None:
        """Forget a process whose owner ended it."""
        proc.state = ProcessState.CLOSED
        proc.settled.set()
        if self._warm.get(proc.session_id) is proc:
            del self._warm[proc.session_id]
        spares = self._spares.get(proc.config.key)
        if spares and proc in spares:
            spares.remove(proc)
            if proc.served == 0 and proc.closed_because is None and not self._closing:
                self._start_failed(proc.config)
            self._wake.set()

    def release(self, session_id: str) -> None:
        """The conversation's Claude Code state was discarded: end its process."""
        proc = self._warm.get(session_id)
        if proc is None:
            return
        if proc.state is ProcessState.IDLE:
            self._discard(proc, "released")
        else:
            proc.doomed = True

    # -- spares ---------------------------------------------------------------

    def start(self) -> None:
        """Start the pool's background work (refilling spares, the periodic check)."""
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._refill(), name="ccgate-pool-refill"),
                loop.create_task(self._tick(), name="ccgate-pool-tick"),
            ]

    def _note_demand(self, config: ProcessConfig) -> None:
        if self._max_spares <= 0:
            return
        now = time.monotonic()
        seen = self._demand.setdefault(config.key, collections.deque())
        seen.append(now)
        self._configs[config.key] = config
        self._prune(config.key, now)

    def _prune(self, key: str, now: float) -> None:
        seen = self._demand.get(key)
        while seen and seen[0] < now - HOT_WINDOW:
            seen.popleft()
        if seen is not None and not seen and not self._spares.get(key):
            del self._demand[key]
            self._configs.pop(key, None)
            self._spares.pop(key, None)

    def _target(self, key: str, now: float) -> int:
        seen = self._demand.get(key) or ()
        if len(seen) < HOT_AFTER:
            return 0
        recent = sum(1 for t in seen if t >= now - 60.0)
        return min(SPARES_PER_CONFIG, 1 + (recent >= BUSY_AFTER))

    def _wanted(self) -> ProcessConfig | None:
        """Return the configuration that most needs a spare now, if one may start."""
        if self._closing or self._max_spares <= 0:
            return None
        now = time.monotonic()
        if sum(len(s) for s in self._spares.values()) >= self._max_spares:
            return None
        need = self._typical_mb()
        if need > self._memory_mb or self._memory_short():
            return None
        by_demand = sorted(self._demand, key=lambda k: len(self._demand[k]), reverse=True)
        for key in by_demand:
            _, until = self._backoff.get(key, (0, 0.0))
            if until > now or len(self._spares.get(key, [])) >= self._target(key, now):
                continue
            if self._make_room(need):
                return self._configs[key]
            return None
        return None

    def _make_room(self, need: float) -> bool:
        """Fit a new spare in the budget: the new one is the newest idle process, so the
        oldest idle conversations go first (spares are not ended to make another)."""
        idle = self._all_idle()
        total = sum(i.memory_mb for i in idle)
        conversations = [i for i in idle if not i.spare]
        while total + need > self._memory_mb and conversations:
            oldest = conversations.pop(0)
            total -= oldest.memory_mb
            oldest.end()
        return total + need <= self._memory_mb

    async def _refill(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while (config := self._wanted()) is not None:
                proc = self._start_spare(config)
                self._spares.setdefault(config.key, []).append(proc)
                await proc.settled.wait()
                if proc.state is ProcessState.IDLE:
                    self._backoff.pop(config.key, None)
                    log.info("pool_spare_ready config=%s pid=%s", config.key[:8], proc.pid)

    def _start_failed(self, config: ProcessConfig) -> None:
        self.stats.start_failures += 1
        failures, _ = self._backoff.get(config.key, (0, 0.0))
        delay = min(300.0, 5.0 * 2**failures)
        self._backoff[config.key] = (failures + 1, time.monotonic() + delay)
        log.warning("pool_spare_failed config=%s retry_in_s=%.0f", config.key[:8], delay)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the next tick tries again
                log.warning("pool_check_failed", exc_info=True)

    def check(self) -> None:
        """Drop dead and cold processes, respect memory, and start missing spares."""
        now = time.monotonic()
        for proc in self.idle():
            if not proc.alive():
                self._discard(proc, "exited")
            elif proc.pid:
                proc.memory_mb = process_memory_mb(proc.pid)
        for key in list(self._spares):
            self._prune(key, now)
            if self._target(key, now) == 0:
                for proc in list(self._spares.get(key, [])):
                    self._discard(proc, "cold")
        self._enforce_memory()
        self._wake.set()

    # -- memory -----------------------------------------------------------------

    def idle_elsewhere(self) -> list[IdleProcess]:
        """Return this pool's idle processes for another pool's memory pressure (another
        upstream account's: all accounts share one memory budget)."""
        return [
            IdleProcess(p.idle_since, p.pid, self._ender(p), kind="account") for p in self.idle()
        ]

    def idle(self) -> list[CliProcess]:
        """Return the idle processes, oldest idle first."""
        procs = [p for p in self._warm.values() if p.state is ProcessState.IDLE]
        procs += [p for s in self._spares.values() for p in s if p.state is ProcessState.IDLE]
        return sorted(procs, key=lambda p: p.idle_since)

    def _typical_mb(self) -> float:
        known = [p.memory_mb for p in self.idle() if p.memory_mb]
        return sum(known) / len(known) if known else _DEFAULT_PROCESS_MB

    def _memory_short(self) -> bool:
        machine = self._memory.read()
        return machine is not None and machine.available < machine.total * LOW_MEMORY_SHARE

    def _enforce_memory(self) -> None:
        idle = self._all_idle()
        total = sum(i.memory_mb for i in idle)
        machine = self._memory.read()
        # Memory an ended process gives back shows only once it has exited, so what is
        # released here counts against the shortage right away.
        short = machine.total * LOW_MEMORY_SHARE - machine.available if machine else 0.0
        while idle and (total > self._memory_mb or short > 0):
            oldest = idle.pop(0)
            total -= oldest.memory_mb
            short -= oldest.memory_mb
            oldest.end()

    def _all_idle(self) -> list[_Idle]:
        """Return every idle process, the pool's and others', oldest first."""
        mine = [
            _Idle(p.idle_since, p.memory_mb or _DEFAULT_PROCESS_MB, self._ender(p), p.spare)
            for p in self.idle()
        ]
        others = [
            _Idle(
                o.idle_since,
                (process_memory_mb(o.pid) if o.pid else None) or _DEFAULT_PROCESS_MB,
                self._other_ender(o),
                spare=False,
            )
            for o in self._elsewhere()
        ]
        return sorted(mine + others, key=lambda i: i.since)

    def _ender(self, proc: CliProcess) -> Callable[[], None]:
        return lambda: self._discard(proc, "memory")

    def _other_ender(self, other: IdleProcess) -> Callable[[], None]:
        def end() -> None:
            self.stats.evictions[f"memory_{other.kind}"] += 1
            log.info("process_released pid=%s reason=memory kind=%s", other.pid, other.kind)
            other.release()

        return end

    def _discard(self, proc: CliProcess, reason: str) -> None:
        if proc.state is ProcessState.IDLE:
            self.stats.evictions[reason] += 1
            log.info(
                "process_released pid=%s reason=%s idle_s=%.0f",
                proc.pid,
                reason,
                time.monotonic() - proc.idle_since,
            )
            proc.end(reason)
        else:
            # Busy (or starting): once untracked nothing could find it, so it ends after
            # its turn instead of idling unseen.
            proc.doomed = True
        if self._warm.get(proc.session_id) is proc:
            del self._warm[proc.session_id]
        spares = self._spares.get(proc.config.key)
        if spares and proc in spares:
            spares.remove(proc)

    # -- reporting and shutdown ---------------------------------------------------

    def status(self) -> dict[str, object]:
        """Return what the pool holds and did (for ``/health`` and ``/metrics``)."""
        spares = [p for s in self._spares.values() for p in s]
        idle = self.idle()
        return {
            "spares": sum(1 for p in spares if p.state is ProcessState.IDLE),
            "spares_starting": sum(1 for p in spares if p.state is ProcessState.STARTING),
            "warm_idle": sum(1 for p in self._warm.values() if p.state is ProcessState.IDLE),
            "hot_configurations": sum(1 for k in self._demand if self._target(k, time.monotonic())),
            "idle_memory_mb": round(sum(p.memory_mb or 0.0 for p in idle), 1),
            "hits": self.stats.hits_conversation + self.stats.hits_pool,
            "hits_conversation": self.stats.hits_conversation,
            "hits_pool": self.stats.hits_pool,
            "misses": self.stats.misses,
            "evictions": dict(self.stats.evictions),
            "start_failures": self.stats.start_failures,
            "max_processes": self._max_spares,
            "memory_budget_mb": self._memory_mb,
            "keepalive_s": self._keepalive,
        }

    def close_idle(self) -> None:
        """Stop keeping anything: end every idle process now, start no more spares."""
        self._closing = True
        for proc in self.idle():
            self._discard(proc, "shutdown")
        for spares in self._spares.values():
            for proc in spares:
                proc.doomed = True

    async def aclose(self) -> None:
        """End idle processes and the background work."""
        self.close_idle()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
