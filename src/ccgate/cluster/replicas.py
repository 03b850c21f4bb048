"""The replicas: who is alive and where, which one runs a live turn, which one owns a loop.

Contract, all in Redis under the prefix:

- ``replica:<id>`` holds a live replica's URL (``replica_url``) and expires
  ``ttl`` seconds after its last heartbeat (every ``ttl / 3`` s). A replica
  whose key is gone is dead: what it held is free.
- ``where:<kind>:<name>`` names the replica that runs something a request may
  have to reach — a turn parked for the client's tool results (``call``), a
  conversation's warm process (``session``). :meth:`Replicas.place` sets it
  for a while, :meth:`Replicas.find` returns the other replica that holds it
  (``None``: here, nowhere, or a dead replica), in one round trip.
- ``lease:<kind>:<name>`` makes one replica the owner of something only one
  may run at a time (a loop). :meth:`Replicas.claim` takes it when it is free,
  already ours, or held by a dead replica, else returns the owner; the
  heartbeat renews every lease held here, so a replica that dies loses its
  leases within ``ttl`` seconds and another takes them over.

A replica forwards a request to the :class:`Peer` these return (see
``api/forward.py``); when that peer cannot be reached it :meth:`steals
<Replicas.steal>` the lease and serves the request itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass

from ccgate.cluster.redis import DELETE_IF_HOLDS, Shared

__all__ = ["HEARTBEAT_TTL", "Peer", "Replicas", "replica_id"]

log = logging.getLogger("ccgate.cluster")

#: Seconds a replica (and each lease it holds) lives after its last heartbeat.
HEARTBEAT_TTL = 10.0

# KEYS[1] where:..., ARGV[1] replica key prefix: the holder's id and URL if it is alive.
_FIND = """
local holder = redis.call('GET', KEYS[1])
if not holder then return false end
local url = redis.call('GET', ARGV[1] .. holder)
if not url then return false end
return {holder, url}
"""

# KEYS[1] lease:..., ARGV[1] our id, ARGV[2] ttl ms, ARGV[3] replica key prefix.
# Take the lease when free, ours or held by a dead replica; else return the owner.
_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  local url = redis.call('GET', ARGV[3] .. holder)
  if url then return {holder, url} end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""

# KEYS lease keys, ARGV[1] our id, ARGV[2] ttl ms: renew those still ours; return the lost.
_RENEW = """
local lost = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
  else
    table.insert(lost, key)
  end
end
return lost
"""


def replica_id() -> str:
    """Return a name for this replica: its host, process id and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


@dataclass(frozen=True, slots=True)
class Peer:
    """Another live replica: its id and the URL it is reached at."""

    id: str
    url: str


class Replicas:
    """This replica's entry among the replicas, and what it places, finds and leases."""

    def __init__(self, shared: Shared, *, id: str, url: str, ttl: float = HEARTBEAT_TTL) -> None:
        self._shared = shared
        self.id = id
        self.url = url.rstrip("/")
        self._ttl_ms = int(ttl * 1000)
        self._every = ttl / 3
        self._held: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        client = shared.client
        self._find = client.register_script(_FIND)
        self._claim = client.register_script(_CLAIM)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(DELETE_IF_HOLDS)

    @property
    def _replica_prefix(self) -> str:
        return self._shared.key("replica", "")

    # -- this replica -----------------------------------------------------------------

    async def start(self) -> None:
        """Announce this replica and keep announcing it (and renewing its leases).

        A Redis out of reach now is logged; the heartbeat announces it once it is back.
        """
        try:
            await self._announce()
        except Exception as exc:  # noqa: BLE001 - the replica serves what needs no Redis
            log.warning("replica_announce_failed error=%s", type(exc).__name__)
        self._task = asyncio.get_running_loop().create_task(
            self._heartbeat(), name="ccgate-replica-heartbeat"
        )
        log.info("replica_started replica=%s url=%s", self.id, self.url)

    async def _announce(self) -> None:
        await self._shared.run(
            self._shared.client.set(self._shared.key("replica", self.id), self.url, px=self._ttl_ms)
        )

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            try:
                await self._announce()
                if self._held:
                    held = sorted(self._held)
                    lost = await self._shared.run(
                        self._renew(keys=held, args=[self.id, self._ttl_ms])
                    )
                    for key in lost or ():
                        name = _text(key)
                        self._held.discard(name)
                        log.warning("lease_lost lease=%s", name)
            except Exception:  # noqa: BLE001 - the next beat tries again
                log.warning("replica_heartbeat_failed", exc_info=True)

    async def aclose(self) -> None:
        """Stop the heartbeat; give up every lease and this replica's entry."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            for key in list(self._held):
                await self._release(keys=[key], args=[self.id])
            await self._release(keys=[self._shared.key("replica", self.id)], args=[self.url])
        self._held.clear()

    async def alive(self) -> list[Peer]:
        """Return every live replica, this one included."""
        client = self._shared.client
        prefix = self._replica_prefix
        peers = []
        async for raw in client.scan_iter(match=prefix + "*", count=100):
            key = _text(raw)
            url = await client.get(key)
            if url is not None:
                peers.append(Peer(key[len(prefix) :], _text(url)))
        return sorted(peers, key=lambda p: p.id)

    # -- where live work runs ---------------------------------------------------------

    async def place(self, kind: str, name: str, ttl: float) -> None:
        """Note that ``kind``/``name`` runs here for the next ``ttl`` seconds."""
        key = self._shared.key("where", kind, name)
        await self._shared.run(self._shared.client.set(key, self.id, px=max(1, int(ttl * 1000))))

    async def unplace(self, kind: str, name: str) -> None:
        """Forget that ``kind``/``name`` runs here (when it still says so)."""
        key = self._shared.key("where", kind, name)
        await self._shared.run(self._release(keys=[key], args=[self.id]))

    async def find(self, kind: str, name: str) -> Peer | None:
        """Return the other live replica that runs ``kind``/``name``, if one does."""
        key = self._shared.key("where", kind, name)
        found = await self._shared.run(self._find(keys=[key], args=[self._replica_prefix]))
        return self._peer(found)

    # -- leases -----------------------------------------------------------------------

    async def claim(self, kind: str, name: str) -> Peer | None:
        """Own ``kind``/``name`` (``None``), unless another live replica does (returned)."""
        key = self._shared.key("lease", kind, name)
        found = await self._shared.run(
            self._claim(keys=[key], args=[self.id, self._ttl_ms, self._replica_prefix])
        )
        peer = self._peer(found)
        if peer is None:
            self._held.add(key)
        return peer

    async def steal(self, kind: str, name: str) -> None:
        """Own ``kind``/``name`` whoever held it (its holder could not be reached)."""
        key = self._shared.key("lease", kind, name)
        await self._shared.run(self._shared.client.set(key, self.id, px=self._ttl_ms))
        self._held.add(key)
        log.warning("lease_taken_over lease=%s", key)

    async def release(self, kind: str, name: str) -> None:
        """Give up ``kind``/``name`` (nothing when another replica holds it)."""
        key = self._shared.key("lease", kind, name)
        self._held.discard(key)
        await self._shared.run(self._release(keys=[key], args=[self.id]))

    def holds(self, kind: str, name: str) -> bool:
        """Tell whether this replica holds the lease of ``kind``/``name``."""
        return self._shared.key("lease", kind, name) in self._held

    def _peer(self, found: object) -> Peer | None:
        if not found or not isinstance(found, list) or len(found) != 2:
            return None
        holder, url = (_text(v) for v in found)
        if holder == self.id:
            return None
        return Peer(holder, url)


def _text(value: object) -> str:
    """Return a Redis reply (bytes) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
