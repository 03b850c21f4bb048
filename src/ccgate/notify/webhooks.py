"""Webhooks: events POSTed as signed JSON to the operator's URLs, never in a request's way.

Events: ``choice.pending`` (a loop waits for a person), ``turn.failed`` (a request or a
loop's turn ended in an error), ``quota.exceeded`` (a key reached a limit) and
``upstream.unhealthy`` (two upstream probes in a row failed). Each is one POST per URL of
``{"id", "type", "created_at", "data"}`` with the headers

- ``X-Ccgate-Event``: the type; ``X-Ccgate-Delivery``: the event's id (the same on retries);
- ``X-Ccgate-Timestamp``: Unix seconds when it was signed;
- ``X-Ccgate-Signature``: ``sha256=`` and the hex HMAC-SHA256, keyed by the webhook secret,
  of ``<timestamp>.<body>`` (check it in constant time, and refuse old timestamps).

:meth:`Webhooks.emit` only queues (a full queue drops the event, counted): a turn never waits
for a receiver. A delivery that fails (a network error, a timeout, any status but 2xx) is
tried again after 1, 2, 4 and 8 seconds, five tries in all; the last :data:`KEPT` deliveries
and how they went are kept for the console.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["EVENTS", "KEPT", "Delivery", "Webhooks", "sign"]

log = logging.getLogger("ccgate.notify")

#: The event types.
EVENTS = ("choice.pending", "turn.failed", "quota.exceeded", "upstream.unhealthy")
#: Deliveries kept for the console.
KEPT = 50
#: Events waiting to be sent, at most.
QUEUE = 1000


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Return the ``X-Ccgate-Signature`` of ``body`` signed at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


@dataclass
class Delivery:
    """One event sent to one URL, and how it went."""

    id: str
    type: str
    url: str
    created_at: float
    attempts: int = 0
    status: str = "pending"  # pending, delivered, failed
    detail: str = ""


class Webhooks:
    """Queue events and deliver them (see the module docstring).

    ``client`` makes the HTTP client (a test's transport); ``delays`` are the waits
    between tries.
    """

    def __init__(
        self,
        urls: Sequence[str],
        secret: str | None,
        *,
        client: Callable[[], httpx.AsyncClient] | None = None,
        delays: Sequence[float] = (1.0, 2.0, 4.0, 8.0),
        timeout: float = 5.0,
    ) -> None:
        self._urls = tuple(urls)
        self._secret = secret or ""
        self._client_factory = client or (lambda: httpx.AsyncClient(timeout=timeout))
        self._delays = tuple(delays)
        self._queue: asyncio.Queue[tuple[str, str, float, bytes]] = asyncio.Queue(QUEUE)
        self._worker: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self.deliveries: deque[Delivery] = deque(maxlen=KEPT)
        self.dropped = 0
        self.failed = 0

    @property
    def on(self) -> bool:
        """Tell whether any URL is set."""
        return bool(self._urls)

    def emit(self, event: str, data: dict[str, Any]) -> None:
        """Queue ``event`` for every URL; never waits, never raises."""
        if not self._urls:
            return
        event_id = "evt_" + secrets.token_hex(12)
        now = time.time()
        body = json.dumps(
            {"id": event_id, "type": event, "created_at": int(now), "data": data},
            separators=(",", ":"),
            ensure_ascii=False,
            default=str,
        ).encode()
        try:
            self._queue.put_nowait((event_id, event, now, body))
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("webhook_dropped event=%s queue_full=%d", event, QUEUE)

    async def start(self) -> None:
        """Start delivering."""
        if self._urls and self._worker is None:
            self._client = self._client_factory()
            self._worker = asyncio.create_task(self._work(), name="ccgate-webhooks")

    async def aclose(self, grace: float = 2.0) -> None:
        """Stop: deliveries under way get ``grace`` seconds, then are given up."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._sending:
            await asyncio.wait(list(self._sending), timeout=grace)
            for task in list(self._sending):
                task.cancel()
            await asyncio.gather(*self._sending, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def _work(self) -> None:
        while True:
            event_id, event, created, body = await self._queue.get()
            for url in self._urls:
                delivery = Delivery(event_id, event, url, created)
                self.deliveries.append(delivery)
                task = asyncio.create_task(self._deliver(delivery, body))
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)

    async def _deliver(self, delivery: Delivery, body: bytes) -> None:
        assert self._client is not None
        for attempt in range(len(self._delays) + 1):
            delivery.attempts = attempt + 1
            stamp = int(time.time())
            headers = {
                "content-type": "application/json",
                "user-agent": "ccgate-webhooks",
                "x-ccgate-event": delivery.type,
                "x-ccgate-delivery": delivery.id,
                "x-ccgate-timestamp": str(stamp),
                "x-ccgate-signature": sign(self._secret, stamp, body),
            }
            try:
                response = await self._client.post(delivery.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                delivery.detail = type(exc).__name__
            else:
                if 200 <= response.status_code < 300:
                    delivery.status, delivery.detail = "delivered", str(response.status_code)
                    return
                delivery.detail = f"HTTP {response.status_code}"
            if attempt < len(self._delays):
                await asyncio.sleep(self._delays[attempt])
        delivery.status = "failed"
        self.failed += 1
        log.warning(
            "webhook_failed event=%s delivery=%s attempts=%d detail=%s",
            delivery.type,
            delivery.id,
            delivery.attempts,
            delivery.detail,
        )
