"""The upstream probe: healthy, degraded after one failure, unhealthy after two (told once)."""

from __future__ import annotations

from typing import Any

import pytest

from ccgate.engine.events import AgentEvent, TurnEnd, TurnError, TurnStarted
from ccgate.engine.models import Catalogue
from ccgate.engine.probe import AuthProbe
from ccgate.testing import ScriptedRunner

pytestmark = pytest.mark.unit

FAIL: list[AgentEvent] = [
    TurnStarted("m", cold_start=False),
    TurnError("upstream", "the upstream is down"),
]
OK: list[AgentEvent] = [TurnStarted("m", cold_start=False), TurnEnd()]


async def test_unhealthy_is_told_once_when_it_turns_so() -> None:
    told: list[dict[str, Any]] = []
    probe = AuthProbe(ttl=0, on_unhealthy=told.append)
    model = Catalogue.load().resolve("sonnet")
    runner = ScriptedRunner(FAIL)
    await probe.check(runner, model)
    assert probe.status() == "degraded" and told == []
    await probe.check(runner, model)
    assert probe.status() == "unhealthy" and len(told) == 1
    assert told[0]["status"] == "unhealthy" and told[0]["consecutive_failures"] == 2
    await probe.check(runner, model)  # still unhealthy: not told again
    assert len(told) == 1
    runner.script = OK
    await probe.check(runner, model)
    assert probe.status() == "healthy"
    runner.script = FAIL
    for _ in range(2):
        await probe.check(runner, model)
    assert len(told) == 2  # unhealthy again, after it had recovered
