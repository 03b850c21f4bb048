"""A cluster at all: three replicas started at once on a fresh database, behind HAProxy.

The replicas share Postgres and Redis; a key made through the balancer works on every
replica, requests are spread over them, and the ledger has one row per request.
"""

from __future__ import annotations

import httpx
import pytest

from ccgate.demo import ScriptedModel
from tests.gateway_testing import wait_until
from tests.replicas.conftest import REPLICAS, Cluster

pytestmark = [pytest.mark.cli, pytest.mark.postgres]

ASKED = 6


def test_replicas_started_at_once_are_all_up_behind_the_balancer(cluster: Cluster) -> None:
    # Concurrent starts on a fresh database: every replica migrated (or waited) and serves.
    assert len(cluster.replicas) == REPLICAS
    for replica in cluster.replicas:
        assert replica.alive(), cluster.logs()
        health = replica.health()
        assert health["status"] == "ok", health
        assert health["auth_mode"] == "multi"
    # The schema was made once, by one replica; the others found it current.
    versions = cluster.query("SELECT version_num FROM alembic_version")
    assert len(versions) == 1, versions
    first = "Running upgrade  -> 0001"
    migrated = [r.index for r in cluster.replicas if first in r.log.read_text()]
    assert len(migrated) == 1, f"replicas that ran the first migration: {migrated}"
    # HAProxy sees every replica up, and answers /health from one of them.
    assert cluster.balancer.server_states() == {r.name: "UP" for r in cluster.replicas}
    response = httpx.get(cluster.url + "/health", timeout=10)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    print(f"fixture start: all replicas answered /health after {cluster.start_seconds:.1f} s")


def test_requests_are_spread_over_replicas_and_recorded_once(
    cluster: Cluster, model: ScriptedModel
) -> None:
    key = cluster.create_key("smoke", tokens_per_day=10_000_000)
    key_id = cluster.keys["smoke"]["id"]
    # Each replica's /health counts the requests it admitted.
    before = [replica.health()["requests"] for replica in cluster.replicas]
    with cluster.openai(key) as oai:
        for n in range(ASKED):
            reply = oai.chat.completions.create(
                model="sonnet", messages=[{"role": "user", "content": f"hello {n}"}]
            )
            assert reply.choices[0].message.content == f"You said: hello {n}"
    served = [
        replica.health()["requests"] - was
        for replica, was in zip(cluster.replicas, before, strict=True)
    ]
    print(f"requests served per replica: {served}")
    assert sum(served) == ASKED, served
    assert sum(1 for count in served if count > 0) >= 2, served
    # One ledger row per request, whichever replica served it, all ok.
    ledger = "SELECT status FROM usage_records WHERE namespace = :key ORDER BY id"
    assert wait_until(lambda: len(cluster.query(ledger, key=key_id)) >= ASKED, within=30)
    rows = cluster.query(ledger, key=key_id)
    assert [row["status"] for row in rows] == ["ok"] * ASKED
    # The admin API (through the balancer, any replica) and the key's own view agree.
    usage = cluster.admin("GET", "/admin/usage", params={"key_id": key_id})
    assert usage.status_code == 200, usage.text
    assert usage.json()["totals"]["requests"] == ASKED
    own = httpx.get(
        cluster.url + "/v1/usage", headers={"authorization": f"Bearer {key}"}, timeout=30
    )
    assert own.status_code == 200, own.text
    assert own.json()["totals"]["requests"] == ASKED
    assert len(model.conversation_requests()) == ASKED
    print(f"redis keys under {cluster.prefix}: {cluster.redis_keys()}")
