"""A Claude Code login shared by three replicas on "machines" of their own, renewed once.

Only the first replica's machine has the login (``claude /login``), and its access token
expires in ten minutes. An account on the login is added; the replicas must then renew it
exactly once (the fake token endpoint's refresh tokens work once: a second use would sign
every other machine out), write the renewed login into every machine's credentials file,
and the real Claude Code CLI on each replica must answer with the renewed access token.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccgate.demo import DemoServer
from tests.gateway_testing import wait_until
from tests.oauth_fake import FakeTokenEndpoint
from tests.replicas.conftest import Cluster

pytestmark = [pytest.mark.cli, pytest.mark.postgres]


@pytest.fixture(scope="module")
def oauth() -> Iterator[FakeTokenEndpoint]:
    # Slow answers: the other replicas check while the first one is renewing.
    with FakeTokenEndpoint(delay=0.5) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def cluster_settings(oauth: FakeTokenEndpoint) -> dict[str, str]:
    return {"CCGATE_LOGIN_TOKEN_URL": oauth.url}


def _login_file(cluster: Cluster, i: int) -> Path:
    return Path(cluster.replicas[i].env["CLAUDE_CONFIG_DIR"]) / ".credentials.json"


def _access_token(path: Path) -> str | None:
    try:
        oauth: dict[str, Any] = json.loads(path.read_text())["claudeAiOauth"]
    except (FileNotFoundError, ValueError, KeyError):
        return None
    token: str = oauth["accessToken"]
    return token


def test_one_replica_renews_the_login_for_all_and_every_cli_uses_it(
    cluster: Cluster, demo: DemoServer, oauth: FakeTokenEndpoint
) -> None:
    old = oauth.issue(expires_in=600)
    first = _login_file(cluster, 0)
    first.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    first.write_text(json.dumps({"claudeAiOauth": old}))
    first.chmod(0o600)
    assert not _login_file(cluster, 1).exists() and not _login_file(cluster, 2).exists()

    made = cluster.admin(
        "POST", "/admin/accounts", json={"name": "team", "kind": "login", "base_url": demo.url}
    )
    assert made.status_code == 201, made.text
    disabled = cluster.admin("PATCH", "/admin/accounts/default", json={"enabled": False})
    assert disabled.status_code == 200, disabled.text

    def renewed_everywhere() -> bool:
        tokens = {_access_token(_login_file(cluster, i)) for i in range(3)}
        return len(tokens) == 1 and None not in tokens and old["accessToken"] not in tokens

    # Woken by the account change (each replica sees it within 5 s) and by the bus.
    assert wait_until(renewed_everywhere, within=30), "the renewed login is not on every replica"
    assert (oauth.refreshes, oauth.reused) == (1, 0)
    new = _access_token(first)
    assert new is not None
    stored = cluster.query("SELECT expires_at, updated_by FROM login_credentials")
    assert len(stored) == 1
    assert json.loads(first.read_text())["claudeAiOauth"]["expiresAt"] == stored[0]["expires_at"]
    logs = cluster.logs()
    assert new not in logs and old["refreshToken"] not in logs
    assert logs.count("login_refreshed") == 1

    # The real CLI on each replica answers with the renewed token (the scripted model
    # keeps a plan per bearer token: one step per answered request).
    plans = httpx.post(demo.url + "/demo/plans", json={new: {"step": 0.01}}, timeout=10)
    assert plans.status_code == 200
    key = cluster.create_key("login-user")
    for i in range(3):
        reply = cluster.replica_openai(i, key).chat.completions.create(
            model="sonnet", messages=[{"role": "user", "content": f"hello from replica {i}"}]
        )
        assert reply.choices[0].message.content
    used = httpx.get(demo.url + "/demo/plans", timeout=10).json()[new]
    assert used["five_hour"]["utilization"] == pytest.approx(0.03)
    assert oauth.refreshes == 1


def _conversation_hits(cluster: Cluster, i: int) -> int:
    pool: dict[str, Any] = cluster.replicas[i].health()["pool"]
    hits: int = pool["hits_conversation"]
    return hits


def test_a_new_login_reaches_a_warm_process_on_another_machine(
    cluster: Cluster, demo: DemoServer, oauth: FakeTokenEndpoint
) -> None:
    # After the test above: every machine holds the renewed login, the login account serves.
    current = _access_token(_login_file(cluster, 1))
    assert current is not None
    httpx.post(demo.url + "/demo/plans", json={current: {"step": 0.01}}, timeout=10)
    key = cluster.create_key("warm-user")
    client = cluster.replica_openai(1, key)
    history: list[Any] = [{"role": "user", "content": "first turn"}]
    reply = client.chat.completions.create(model="sonnet", messages=history)
    history += [{"role": "assistant", "content": reply.choices[0].message.content}]
    before = httpx.get(demo.url + "/demo/plans", timeout=10).json()[current]
    # `claude /login` on the third machine: a newer login, which reaches every machine.
    newer = oauth.issue(expires_in=9 * 3600)
    third = _login_file(cluster, 2)
    third.write_text(json.dumps({"claudeAiOauth": newer}))
    httpx.post(demo.url + "/demo/plans", json={newer["accessToken"]: {"step": 0.01}}, timeout=10)

    def everywhere() -> bool:
        return all(_access_token(_login_file(cluster, i)) == newer["accessToken"] for i in range(3))

    assert wait_until(everywhere, within=45), "the new login is not on every machine"
    hits = _conversation_hits(cluster, 1)
    history += [{"role": "user", "content": "second turn"}]
    client.chat.completions.create(model="sonnet", messages=history)
    assert _conversation_hits(cluster, 1) == hits + 1  # the conversation's warm process
    plans = httpx.get(demo.url + "/demo/plans", timeout=10).json()
    assert plans[newer["accessToken"]]["five_hour"]["utilization"] == pytest.approx(0.01)
    assert plans[current]["five_hour"]["utilization"] == before["five_hour"]["utilization"]
    assert oauth.refreshes == 1  # a login was shared, none renewed
