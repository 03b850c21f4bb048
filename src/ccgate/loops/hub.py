"""Fan a loop's events out to its watchers, none of whom can hold the others up.

Every watcher gets a buffer of ``limit`` events. Publishing never waits: a
watcher whose buffer is full is dropped, and the last thing it reads is a
``Failed("watcher_too_slow")`` telling it so (it may watch again).
"""

from __future__ import annotations

import asyncio
from collections import deque

from ccgate.loops.events import Failed, LoopEvent

__all__ = ["Hub", "Watch"]


class Watch:
    """One watcher's events, in order."""

    def __init__(self, hub: Hub, limit: int) -> None:
        self._hub = hub
        self._limit = limit
        self._events: deque[LoopEvent] = deque()
        self._ready = asyncio.Event()
        self.closed = False

    def _offer(self, event: LoopEvent) -> None:
        if self.closed:
            return
        if len(self._events) >= self._limit:
            self._events.clear()
            self._events.append(
                Failed(
                    "watcher_too_slow",
                    f"this watch fell more than {self._limit} events behind and was dropped; "
                    "watch again (a running turn starts with a snapshot)",
                )
            )
            self.close()
        else:
            self._events.append(event)
        self._ready.set()

    async def next(self, timeout: float) -> LoopEvent | None:
        """Return the next event, or ``None`` when ``timeout`` passes first.

        Raises ``StopAsyncIteration`` once the watch is closed and read out.
        """
        if not self._events:
            if self.closed:
                raise StopAsyncIteration
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return None
            if not self._events:
                raise StopAsyncIteration
        return self._events.popleft()

    def close(self) -> None:
        """Stop the watch (the buffered events can still be read)."""
        self.closed = True
        self._hub.forget(self)
        self._ready.set()


class Hub:
    """The watchers of one loop."""

    def __init__(self, limit: int = 1000) -> None:
        self._limit = limit
        self._watches: set[Watch] = set()

    def __len__(self) -> int:
        return len(self._watches)

    def watch(self) -> Watch:
        """Start watching."""
        watch = Watch(self, self._limit)
        self._watches.add(watch)
        return watch

    def forget(self, watch: Watch) -> None:
        """Stop sending to ``watch``."""
        self._watches.discard(watch)

    def publish(self, event: LoopEvent) -> None:
        """Send ``event`` to every watcher, now."""
        for watch in list(self._watches):
            watch._offer(event)  # noqa: SLF001 - the hub and its watches are one mechanism

    def close(self) -> None:
        """End every watch."""
        for watch in list(self._watches):
            watch.close()
