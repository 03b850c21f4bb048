"""A replica whose Redis is out of reach answers at once: refused (closed) or uncounted (open)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ccgate import checks
from ccgate.config import Settings, load_settings
from ccgate.testing import ScriptedRunner
from tests.cluster.conftest import REDIS_URL
from tests.gateway_testing import Gateway, start_gateway

pytestmark = pytest.mark.server

#: Nothing listens there: every Redis call fails at once.
NOWHERE = "redis://127.0.0.1:1/0"


@pytest.fixture(params=["closed", "open"])
def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Gateway]:
    settings = load_settings(
        {
            "data_dir": str(tmp_path / "data"),
            "auth_mode": "multi",
            "admin_key": secrets.token_urlsafe(32),
            "redis_url": NOWHERE,
            "redis_outage": request.param,
            "cache_ttl": 60,
        },
        {},
    )
    served = start_gateway(settings, runner=ScriptedRunner())
    try:
        yield served
    finally:
        served.stop()


def test_requests_are_refused_or_served_uncounted_and_health_says_why(gateway: Gateway) -> None:
    settings = gateway.settings
    assert settings.admin_key is not None
    admin = {"authorization": f"Bearer {settings.admin_key.get_secret_value()}"}
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        made = client.post("/admin/keys", json={"name": "k"}, headers=admin)
        assert made.status_code == 201, made.text
        key = {"authorization": f"Bearer {made.json()['key']}"}
        health = client.get("/health").json()
        assert health["status"] == "degraded"
        assert health["replica"]["redis"] == "unreachable"
        started = time.monotonic()
        answer = client.post(
            "/v1/chat/completions",
            json={"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]},
            headers=key,
        )
        took = time.monotonic() - started
        if settings.redis_outage == "closed":
            assert answer.status_code == 503, answer.text
            error = answer.json()["error"]
            assert error["code"] == "shared_state_unavailable"
            assert "Redis" in error["message"]
            assert answer.headers.get("retry-after")
        else:
            assert answer.status_code == 200, answer.text
            assert answer.json()["choices"][0]["message"]["content"]
        assert took < 5  # never hangs on the missing Redis
        # A revoked key is refused at once here, though no other replica could be told.
        key_id = made.json()["id"]
        assert client.delete(f"/admin/keys/{key_id}", headers=admin).status_code == 200
        refused = client.get("/v1/models", headers=key)
        assert refused.status_code == 401


async def test_the_doctor_checks_the_redis_of_the_replicas(tmp_path: Path) -> None:
    def settings(**more: str) -> Settings:
        return load_settings({"data_dir": str(tmp_path), **more}, {})

    assert await checks.redis(settings()) is None  # one replica: nothing to check
    missing = await checks.redis(settings(redis_url=NOWHERE))
    assert missing is not None and not missing.ok and "does not answer" in missing.detail
    found = await checks.redis(settings(redis_url=REDIS_URL, redis_prefix="doctor:"))
    assert found is not None
    if not found.ok:
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    assert "doctor:" in found.detail
