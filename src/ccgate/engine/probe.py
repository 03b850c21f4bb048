"""The cached real upstream probe behind ``/health/auth``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ccgate.engine.events import TurnError
from ccgate.engine.models import ModelInfo
from ccgate.engine.runner import Runner
from ccgate.engine.turn import Message, TextPart, TurnRequest
from ccgate.errors import for_turn

__all__ = ["AuthProbe", "probe_turn"]


def probe_turn(model: ModelInfo) -> TurnRequest:
    """Return the one-line turn that tells whether the upstream takes the credentials."""
    return TurnRequest(
        model=model.cli,
        requested_model=model.id,
        messages=(Message("user", (TextPart("Reply with the word OK."),)),),
        max_tokens=16,
    )


@dataclass
class AuthProbe:
    """A cached real upstream probe; unhealthy only after two failed probes in a row."""

    ttl: float
    checked_at: float = 0.0
    ok: bool | None = None
    failures: int = 0
    latency_ms: float | None = None
    error: str | None = None
    #: Called with :meth:`as_dict` when the status turns unhealthy.
    on_unhealthy: Callable[[dict[str, Any]], None] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def fresh(self) -> bool:
        """Tell whether the cached result may be reused."""
        return self.ok is not None and time.time() - self.checked_at < self.ttl

    def status(self) -> str:
        """Return healthy, degraded (one failure), unhealthy (two or more) or unknown."""
        if self.ok is None:
            return "unknown"
        if self.failures >= 2:
            return "unhealthy"
        return "degraded" if self.failures else "healthy"

    async def check(self, runner: Runner, model: ModelInfo) -> None:
        """Probe the upstream through a real turn of ``model`` unless the cache is fresh."""
        async with self._lock:
            if self.fresh():
                return
            started = time.monotonic()
            failure: TurnError | None = None
            run = runner.run(probe_turn(model))
            try:
                async for event in run:
                    if isinstance(event, TurnError):
                        failure = event
            finally:
                await run.aclose()
            before = self.status()
            self.latency_ms = round((time.monotonic() - started) * 1000, 1)
            self.checked_at = time.time()
            self.ok = failure is None
            self.failures = 0 if failure is None else self.failures + 1
            self.error = (
                None
                if failure is None
                else for_turn(
                    failure.kind, failure.message, retry_after=failure.retry_after
                ).message
            )
            if self.status() == "unhealthy" and before != "unhealthy" and self.on_unhealthy:
                self.on_unhealthy(self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        """Return the probe's public view."""
        return {
            "status": self.status(),
            "checked_at": self.checked_at or None,
            "latency_ms": self.latency_ms,
            "consecutive_failures": self.failures,
            "error": self.error,
        }
