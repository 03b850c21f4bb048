"""The pool's policy (claude.pool) with processes that are records only: no CLI runs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ccgate.claude.memory import MachineMemory, SystemMemory
from ccgate.claude.pool import HOT_AFTER, ProcessPool
from ccgate.claude.warm import CliProcess, Job, ProcessConfig, ProcessState
from ccgate.engine.turn import Message, TextPart, Thinking, ToolSpec, TurnRequest

pytestmark = [pytest.mark.unit, pytest.mark.asyncio]


class _Handle:
    """Stands in for the SDK's process handle."""

    returncode: int | None = None


class _Memory(SystemMemory):
    def __init__(self, total: float = 10_000.0, available: float = 8_000.0) -> None:
        self.machine = MachineMemory(total=total, available=available)

    def read(self) -> MachineMemory | None:
        return self.machine


class _Starts:
    """The pool's ``start_spare``: records each start; the test decides how it ends."""

    def __init__(self) -> None:
        self.started: list[CliProcess] = []
        self.n = 0

    def __call__(self, config: ProcessConfig) -> CliProcess:
        self.n += 1
        proc = CliProcess(config, f"spare-{self.n}", spare=True)
        self.started.append(proc)
        return proc


def _config(system: str = "be terse", model: str = "sonnet") -> ProcessConfig:
    return ProcessConfig(model=model, system=system)


def _ready(pool: ProcessPool, proc: CliProcess, memory_mb: float = 100.0) -> asyncio.Task[Any]:
    """Make ``proc`` a started process parked in ``pool.next_job`` (as its owner would)."""
    proc.pid = None
    proc.handle = _Handle()
    proc.memory_mb = memory_mb

    async def park() -> Any:
        job = await pool.next_job(proc)
        if job is None:
            pool.closed(proc)
        return job

    return asyncio.get_running_loop().create_task(park())


async def _idle_conversations(
    pool: ProcessPool, count: int, system: str = "be terse"
) -> tuple[list[CliProcess], list[asyncio.Task[Any]]]:
    """Park ``count`` conversation processes of 100 MB idle, oldest first."""
    procs = [CliProcess(_config(system), f"s{n}", spare=False) for n in range(count)]
    parked = []
    for proc in procs:
        pool.bind(proc)
        parked.append(_ready(pool, proc, memory_mb=100.0))
        await _settle()
    return procs, parked


def _pool(**kw: Any) -> tuple[ProcessPool, _Starts]:
    starts = _Starts()
    options: dict[str, Any] = {
        "keepalive": 60.0,
        "max_spares": 2,
        "memory_mb": 1000.0,
        "memory": _Memory(),
    }
    options.update(kw)
    return ProcessPool(start_spare=starts, **options), starts


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_configuration_gets_a_spare_once_it_is_hot() -> None:
    pool, starts = _pool()
    pool.start()
    try:
        for n in range(HOT_AFTER):
            assert pool.claim(_config()) is None  # nothing ready yet: a miss
            await _settle()
            assert len(starts.started) == (1 if n == HOT_AFTER - 1 else 0)
        spare = starts.started[0]
        parked = _ready(pool, spare)
        await _settle()
        assert pool.status()["spares"] == 1
        # A new conversation of that configuration takes it, bound to it for good.
        session = pool.claim(_config())
        assert session == spare.session_id and not spare.spare
        taken = await pool.take(session, _config())
        assert taken is spare and spare.state is ProcessState.BUSY
        # ...and a replacement starts in the background.
        await _settle()
        assert len(starts.started) == 2 and starts.started[1] is not spare
        spare.submit(
            Job(
                TurnRequest("sonnet", "sonnet", (Message("user", (TextPart("x"),)),)),
                None,
                asyncio.Queue(),
                cold=False,
            )
        )
        assert await parked is not None
    finally:
        await pool.aclose()


async def test_another_configuration_never_gets_that_spare() -> None:
    pool, starts = _pool()
    pool.start()
    try:
        for _ in range(HOT_AFTER):
            pool.claim(_config("prompt A"))
        await _settle()
        parked = _ready(pool, starts.started[0])
        await _settle()
        assert pool.claim(_config("prompt B")) is None
        assert pool.claim(_config("prompt A", model="opus")) is None
        tools = ProcessConfig("sonnet", "prompt A", (ToolSpec("t", "", {"type": "object"}),))
        assert pool.claim(tools) is None
        assert pool.status()["spares"] == 1
        parked.cancel()
    finally:
        await pool.aclose()


async def test_a_warm_conversation_is_found_by_its_session_and_configuration() -> None:
    pool, _ = _pool(max_spares=0)
    proc = CliProcess(_config(), "session-1", spare=False)
    proc.state = ProcessState.BUSY
    pool.bind(proc)
    parked = _ready(pool, proc)
    await _settle()
    assert await pool.take("session-2", _config()) is None
    # Same conversation, other model: the old process is ended, a new one will start.
    assert await pool.take("session-1", _config(model="opus")) is None
    assert await parked is None
    assert proc.closed_because == "replaced"
    assert pool.status()["evictions"] == {"replaced": 1}


async def test_an_idle_conversation_process_ends_after_keepalive() -> None:
    pool, _ = _pool(keepalive=0.05, max_spares=0)
    proc = CliProcess(_config(), "s", spare=False)
    pool.bind(proc)
    assert await _ready(pool, proc) is None
    assert pool.status()["evictions"] == {"keepalive": 1}
    assert await pool.take("s", _config()) is None


async def test_keepalive_zero_keeps_nothing() -> None:
    pool, _ = _pool(keepalive=0.0, max_spares=0)
    proc = CliProcess(_config(), "s", spare=False)
    pool.bind(proc)
    assert await _ready(pool, proc) is None


async def test_a_released_session_ends_its_process_now_or_after_its_turn() -> None:
    pool, _ = _pool(max_spares=0)
    idle = CliProcess(_config(), "idle", spare=False)
    pool.bind(idle)
    parked = _ready(pool, idle)
    await _settle()
    pool.release("idle")
    assert await parked is None and idle.closed_because == "released"
    busy = CliProcess(_config(), "busy", spare=False, state=ProcessState.BUSY)
    pool.bind(busy)
    pool.release("busy")
    assert await _ready(pool, busy) is None  # its turn ended: it is not kept


async def test_idle_processes_over_the_memory_budget_end_oldest_first() -> None:
    pool, _ = _pool(memory_mb=250.0, max_spares=0)
    procs, parked = await _idle_conversations(pool, 3)
    # 300 MB idle against a budget of 250: the oldest goes.
    assert await parked[0] is None
    assert procs[0].closed_because == "memory"
    assert [p.state for p in procs[1:]] == [ProcessState.IDLE, ProcessState.IDLE]
    for task in parked[1:]:
        task.cancel()


async def test_short_machine_memory_ends_idle_processes_until_enough_is_freed() -> None:
    memory = _Memory(total=10_000.0, available=8_000.0)
    pool, _ = _pool(max_spares=0, memory=memory)
    procs, parked = await _idle_conversations(pool, 3)
    assert all(p.state is ProcessState.IDLE for p in procs)
    # Available memory drops 150 MB below 10 % of the total: two processes must go.
    memory.machine = MachineMemory(total=10_000.0, available=850.0)
    pool.check()
    await _settle()
    assert [p.closed_because for p in procs] == ["memory", "memory", None]
    parked[2].cancel()


async def test_no_spare_starts_when_memory_is_short_or_the_pool_is_off() -> None:
    memory = _Memory(total=10_000.0, available=500.0)
    pool, starts = _pool(memory=memory)
    pool.start()
    try:
        for _ in range(HOT_AFTER + 2):
            pool.claim(_config())
        await _settle()
        assert starts.started == []
    finally:
        await pool.aclose()
    off, off_starts = _pool(max_spares=0)
    off.start()
    try:
        for _ in range(HOT_AFTER + 2):
            off.claim(_config())
        await _settle()
        assert off_starts.started == []
    finally:
        await off.aclose()


async def test_a_spare_that_fails_to_start_is_retried_after_a_back_off() -> None:
    pool, starts = _pool()
    pool.start()
    try:
        for _ in range(HOT_AFTER):
            pool.claim(_config())
        await _settle()
        failed = starts.started[0]
        pool.closed(failed)  # its owner gave up: the CLI did not start
        await _settle()
        assert pool.stats.start_failures == 1
        pool.claim(_config())
        await _settle()
        assert len(starts.started) == 1  # backing off: no second attempt right away
    finally:
        await pool.aclose()


async def test_a_spare_that_exited_is_discarded_not_handed_out() -> None:
    pool, starts = _pool()
    pool.start()
    try:
        for _ in range(HOT_AFTER):
            pool.claim(_config())
        await _settle()
        spare = starts.started[0]
        parked = _ready(pool, spare)
        await _settle()
        spare.handle.returncode = 1
        assert pool.claim(_config()) is None
        assert await parked is None
        assert spare.closed_because == "exited"
    finally:
        await pool.aclose()


async def test_shutdown_ends_every_idle_process() -> None:
    pool, starts = _pool()
    pool.start()
    for _ in range(HOT_AFTER):
        pool.claim(_config())
    await _settle()
    spare = _ready(pool, starts.started[0])
    warm = CliProcess(_config("other"), "s", spare=False)
    pool.bind(warm)
    parked = _ready(pool, warm)
    await _settle()
    await pool.aclose()
    assert await spare is None and await parked is None
    assert pool.status()["evictions"] == {"shutdown": 2}


async def test_configuration_key_names_the_configuration_without_its_text() -> None:
    a = ProcessConfig("sonnet", "a secret system prompt")
    assert a.key == ProcessConfig("sonnet", "a secret system prompt").key
    assert a.key != ProcessConfig("sonnet", "a secret system prompt", max_tokens=10).key
    assert a.key != ProcessConfig("sonnet", "a secret system prompt", thinking=Thinking(1024)).key
    assert a.key != ProcessConfig("sonnet", "a secret system prompt", thinking=Thinking()).key
    omitted = Thinking(display="omitted")
    assert (
        ProcessConfig("sonnet", "a secret system prompt", thinking=omitted).key
        != ProcessConfig("sonnet", "a secret system prompt", thinking=Thinking()).key
    )
    assert a.key != ProcessConfig("sonnet", "a secret system prompt", effort="low").key
    assert "secret" not in a.key


async def test_a_spare_for_a_hot_configuration_ends_the_oldest_idle_conversation() -> None:
    pool, starts = _pool(memory_mb=250.0)
    procs, parked = await _idle_conversations(pool, 2, system="other")
    pool.start()
    try:
        for _ in range(HOT_AFTER):
            pool.claim(_config())
        await _settle()
        # 200 MB idle + a ~100 MB spare > 250: the older conversation makes room.
        assert len(starts.started) == 1
        assert await parked[0] is None and procs[0].closed_because == "memory"
        assert procs[1].state is ProcessState.IDLE
        parked[1].cancel()
    finally:
        await pool.aclose()
