"""What every route needs, held in the app's lifespan state."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from ccgate.access.accounting import Accounting
from ccgate.access.keys import KeyManager
from ccgate.config import Settings
from ccgate.engine.cache import Flights, ResponseCache
from ccgate.engine.gate import Gate
from ccgate.engine.live import TurnManager
from ccgate.engine.models import Catalogue
from ccgate.engine.probe import AuthProbe
from ccgate.engine.runner import Runner
from ccgate.engine.sessions import ConversationSessions
from ccgate.loops.manager import LoopManager
from ccgate.metrics import Metrics
from ccgate.store.usage import UsageStore

__all__ = ["AppState", "Counters", "State"]


@dataclass
class Counters:
    """Request counters shown by /health and /metrics."""

    requests: int = 0
    errors: int = 0
    turns_finished: int = 0
    turns_failed: int = 0


@dataclass
class AppState:
    """The gateway's long-lived parts, created in the lifespan."""

    settings: Settings
    runner: Runner
    gate: Gate
    catalogue: Catalogue
    sessions: ConversationSessions
    turns: TurnManager
    loops: LoopManager
    keys: KeyManager
    accounting: Accounting
    ledger: UsageStore
    metrics: Metrics
    cache: ResponseCache
    upstream: str
    started_at: float = field(default_factory=time.time)
    counters: Counters = field(default_factory=Counters)
    draining: bool = False
    flights: Flights = field(default_factory=Flights)
    probe: AuthProbe = field(default_factory=lambda: AuthProbe(ttl=60.0))


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.ccgate
    return state


State = Annotated[AppState, Depends(_state)]
