"""A concurrency gate: ``max_concurrent`` slots and a bounded FIFO queue of waiters."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from ccgate.errors import QueueFull

__all__ = ["Gate"]


class Gate:
    """Admit at most ``slots`` holders; queue at most ``queue`` more; refuse the rest.

    A waiter that is cancelled (its client went away) leaves the queue; a slot
    is released on every exit path of :meth:`slot`. ``make_room`` is called
    whenever a request finds no free slot; it returns True when a holder gives
    its slot up for it (a turn waiting for tool results), and that request may
    then wait for the slot even when the queue is full.

    A loop's turn waits without the queue's bound (:meth:`acquire` with
    ``bounded=False``): its client is already streaming, and each loop has at
    most one turn waiting, so the number of loops bounds those waiters.
    """

    def __init__(
        self,
        slots: int,
        queue: int,
        *,
        make_room: Callable[[], bool] = lambda: False,
        retry_after: float = 2.0,
    ) -> None:
        self._slots = slots
        self._queue_limit = queue
        self._make_room = make_room
        self._retry_after = retry_after
        self._active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def active(self) -> int:
        """Return how many slots are held."""
        return self._active

    @property
    def queued(self) -> int:
        """Return how many requests wait for a slot."""
        return sum(1 for w in self._waiters if not w.done())

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the duration of the block, waiting in line if needed."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    async def acquire(self, *, bounded: bool = True) -> None:
        """Take a slot, waiting in line; a bounded wait raises ``QueueFull`` when the line is full.

        Every successful ``acquire`` is matched by one :meth:`release`.
        """
        if self._active < self._slots and not self.queued:
            self._active += 1
            return
        # A holder giving its slot up makes room for one more waiter, even past the limit.
        freeing = self._make_room()
        if bounded and self.queued >= self._queue_limit + int(freeing):
            raise QueueFull(
                f"ccgate is busy: {self._active} turns running and {self.queued} waiting "
                f"(max_concurrent={self._slots}, max_queue={self._queue_limit}); "
                "retry shortly",
                retry_after=self._retry_after,
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed to us just as we were cancelled: pass it on.
                self.release()
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def release(self) -> None:
        """Give a slot back: to the first waiter in line, or free."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot moves to the waiter; _active unchanged
                return
        self._active -= 1
