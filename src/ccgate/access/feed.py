"""The live feed: every admitted request as it starts and as it ends, for whoever watches.

:class:`Feed` keeps the last :data:`KEPT` requests (a running one is updated in
place when it ends) and hands each watcher the changes as they happen. A
watcher gets a bounded queue: one that falls :data:`BACKLOG` changes behind is
dropped (its iterator ends) rather than holding memory or slowing the
requests; it comes back with :meth:`Feed.recent` and watches again. Publishing
never waits and never fails a request.

Notices (:class:`Notice`: a loop waits for a person) go to the watchers of their
namespace as they happen and are not kept. Entries carry what the console shows and
nothing secret: the key's name and namespace (so a client sees only its own), front
door, model, status, time to first token, tokens, estimated cost and whether the
cache answered.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass, replace

__all__ = ["BACKLOG", "KEPT", "Entry", "Feed", "Notice", "Watch", "front_door"]

#: Requests kept for a watcher that arrives (the newest).
KEPT = 200
#: Changes a watcher may fall behind before it is dropped.
BACKLOG = 1000


def front_door(endpoint: str) -> str:
    """Return which API a request came through: ``openai``, ``anthropic`` or ``loop``."""
    if endpoint.startswith("/v1/loops"):
        return "loop"
    if endpoint.startswith("/v1/messages"):
        return "anthropic"
    return "openai"


@dataclass(frozen=True, slots=True)
class Entry:
    """One request as the feed shows it."""

    id: str
    namespace: str
    key_name: str
    endpoint: str
    model: str
    started_at: float
    #: ``running`` until it ends, then the ledger's status (``ok``, ``tool_use``, an error kind).
    status: str = "running"
    ttft_ms: float | None = None
    duration_ms: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_tokens: int = 0
    cost_usd: float = 0.0
    cached: bool = False

    @property
    def door(self) -> str:
        """The front door: ``openai``, ``anthropic`` or ``loop``."""
        return front_door(self.endpoint)

    @property
    def running(self) -> bool:
        """Tell whether the request has not ended."""
        return self.status == "running"


@dataclass(frozen=True, slots=True)
class Notice:
    """Something a person should act on (a loop waits for a choice): told, not kept."""

    namespace: str
    title: str
    body: str
    link: str


class Feed:
    """Requests as they start and end (see the module docstring)."""

    def __init__(self, *, kept: int = KEPT, backlog: int = BACKLOG) -> None:
        self._kept = kept
        self._backlog = backlog
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._watchers: set[asyncio.Queue[Entry | Notice | None]] = set()
        self._ids = itertools.count(1)
        #: Watchers dropped for falling behind.
        self.dropped = 0

    def start(
        self, *, namespace: str, key_name: str, endpoint: str, model: str, cached: bool = False
    ) -> str:
        """Note a request that was admitted; return its feed id."""
        entry = Entry(
            id=f"r{next(self._ids)}",
            namespace=namespace,
            key_name=key_name,
            endpoint=endpoint,
            model=model,
            started_at=time.time(),
            cached=cached,
        )
        self._put(entry)
        return entry.id

    def end(
        self,
        feed_id: str,
        *,
        status: str,
        ttft_ms: float | None,
        duration_ms: float,
        input_tokens: int,
        output_tokens: int,
        cache_tokens: int,
        cost_usd: float,
        cached: bool,
    ) -> None:
        """Note how a request ended (one no longer kept is not shown again)."""
        entry = self._entries.get(feed_id)
        if entry is None:
            return
        self._put(
            replace(
                entry,
                status=status,
                ttft_ms=ttft_ms,
                duration_ms=duration_ms,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cache_tokens=cache_tokens,
                cost_usd=cost_usd,
                cached=cached,
            )
        )

    def recent(self, namespace: str | None = None, limit: int = 50) -> list[Entry]:
        """Return the newest requests first (of one namespace, or of all)."""
        found: list[Entry] = []
        for entry in reversed(self._entries.values()):
            if namespace is None or entry.namespace == namespace:
                found.append(entry)
                if len(found) >= limit:
                    break
        return found

    @property
    def watchers(self) -> int:
        """How many watch now."""
        return len(self._watchers)

    def watch(self, namespace: str | None = None) -> Watch:
        """Start watching every change from now on (of one namespace, or of all)."""
        queue: asyncio.Queue[Entry | Notice | None] = asyncio.Queue(self._backlog)
        self._watchers.add(queue)
        return Watch(self, queue, namespace)

    def tell(self, notice: Notice) -> None:
        """Pass ``notice`` to every watcher (of its namespace) now; it is not kept."""
        self._send(notice)

    def close(self) -> None:
        """End every watch."""
        for queue in list(self._watchers):
            self._drop(queue)

    def _put(self, entry: Entry) -> None:
        self._entries[entry.id] = entry
        self._entries.move_to_end(entry.id)
        while len(self._entries) > self._kept:
            self._entries.popitem(last=False)
        self._send(entry)

    def _send(self, item: Entry | Notice) -> None:
        for queue in list(self._watchers):
            if queue.qsize() >= self._backlog - 1:
                self.dropped += 1
                self._drop(queue)
            else:
                queue.put_nowait(item)

    def _forget(self, queue: asyncio.Queue[Entry | Notice | None]) -> None:
        self._watchers.discard(queue)

    def _drop(self, queue: asyncio.Queue[Entry | Notice | None]) -> None:
        self._watchers.discard(queue)
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(None)


class Watch:
    """One watcher's changes: :meth:`next` each, :meth:`close` when done."""

    def __init__(
        self, feed: Feed, queue: asyncio.Queue[Entry | Notice | None], namespace: str | None
    ) -> None:
        self._feed = feed
        self._queue = queue
        self._namespace = namespace
        self.ended = False

    async def next(self, timeout: float) -> Entry | Notice | None:
        """Return the next change, or None when ``timeout`` seconds passed without one.

        Raise :class:`StopAsyncIteration` once the watch ended (it fell behind, or
        the feed closed).
        """
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.ended:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return None
            try:
                entry = await asyncio.wait_for(self._queue.get(), left)
            except TimeoutError:
                return None
            if entry is None:
                self.ended = True
                break
            if self._namespace is None or entry.namespace == self._namespace:
                return entry
        raise StopAsyncIteration

    def close(self) -> None:
        """Stop watching."""
        self.ended = True
        self._feed._forget(self._queue)
