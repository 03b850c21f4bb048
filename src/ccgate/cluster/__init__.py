"""What several ccgate replicas share through one Redis (``redis_url``).

Postgres keeps what must last (keys, the ledger, sessions and their
transcripts, loops); Redis carries what must be shared fast and may be lost
with it:

- ``redis``: the connection, its key prefix and what an outage means
  (``redis_outage``);
- ``replicas``: each replica's address, where each live turn runs, and the
  leases by which one replica at a time runs a loop;
- ``bus``: messages every replica hears (a revoked key, say);
- ``blobs``: the shared response cache and singleflight.

The quota counters in Redis are a store (``store.redis_counters``): they
keep the store's contract, and take a :class:`~ccgate.cluster.redis.Shared`.

Without ``redis_url`` none of this is built: one replica keeps it all in
its own process, as before.
"""
