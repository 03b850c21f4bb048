"""Messages every replica hears: Redis pub/sub under the prefix.

A topic's handler gets each message's data (a JSON object). Pub/sub keeps
nothing: a replica that was cut off from Redis may have missed messages, so
when its subscription comes back every handler is called once with ``None``
("you may have missed something": a cache then forgets what it holds).
Handlers run on the event loop and must not block.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from ccgate.cluster.redis import Shared

__all__ = ["Bus", "Handler"]

log = logging.getLogger("ccgate.cluster")

#: Called with a message's data, or ``None`` after messages may have been missed.
Handler = Callable[[dict[str, Any] | None], None]

_RETRY = 1.0


class Bus:
    """Publish to every replica; hear what they publish."""

    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._handlers: dict[str, list[Handler]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    def _channel(self, topic: str) -> str:
        return self._shared.key("bus", topic)

    def subscribe(self, topic: str, handler: Handler) -> None:
        """Call ``handler`` with every message of ``topic`` (subscribe before :meth:`start`)."""
        self._handlers.setdefault(topic, []).append(handler)

    async def publish(self, topic: str, data: dict[str, Any]) -> None:
        """Send ``data`` to every replica listening to ``topic`` (this one included)."""
        payload = json.dumps(data, separators=(",", ":"))
        await self._shared.run(self._shared.client.publish(self._channel(topic), payload))

    async def start(self, within: float = 5.0) -> None:
        """Start listening; return once subscribed (or after ``within`` seconds)."""
        self._task = asyncio.get_running_loop().create_task(self._listen(), name="ccgate-bus")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), within)

    async def _listen(self) -> None:
        channels = {self._channel(topic): topic for topic in self._handlers}
        if not channels:
            self._ready.set()
            return
        first = True
        while True:
            pubsub = self._shared.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*channels)
                self._ready.set()
                if not first:
                    log.info("bus_resubscribed")
                    self._tell_all(None)
                first = False
                while True:
                    message = await pubsub.get_message(timeout=30.0)
                    if message is None or message.get("type") != "message":
                        continue
                    channel = message["channel"]
                    topic = channels.get(
                        channel.decode() if isinstance(channel, bytes) else channel
                    )
                    if topic is None:
                        continue
                    try:
                        data = json.loads(message["data"])
                    except (TypeError, ValueError):
                        continue
                    if isinstance(data, dict):
                        self._tell(topic, data)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis went away: subscribe again
                log.warning("bus_disconnected error=%s", type(exc).__name__)
                await asyncio.sleep(_RETRY)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _tell(self, topic: str, data: dict[str, Any] | None) -> None:
        for handler in self._handlers.get(topic, ()):
            try:
                handler(data)
            except Exception:  # noqa: BLE001 - one handler's bug must not stop the bus
                log.exception("bus_handler_failed topic=%s", topic)

    def _tell_all(self, data: None) -> None:
        for topic in self._handlers:
            self._tell(topic, data)

    async def aclose(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
