"""Several upstream accounts against the scripted model, through the real Claude Code CLI.

Each account is an OAuth token the scripted model keeps a plan for (``demo.plan``):
the CLI reports the plan in its rate-limit events, the meter reads them, and the
router keeps conversations on their account, moves them when it refuses, and
refuses (429 ``plan_limit``) what only extra usage could pay for.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from ccgate.accounts.manager import Accounts
from ccgate.accounts.meter import PlanMeter
from ccgate.accounts.secrets import SecretBox
from ccgate.config import load_settings
from ccgate.demo import DemoServer, ScriptedModel
from ccgate.gateway import settings_credential
from ccgate.store.accounts import SqlAccountStore
from ccgate.store.database import Database
from tests.gateway_testing import Gateway, wait_until
from tests.receiver import Receiver

pytestmark = pytest.mark.cli

HOOK_SECRET = "hook-secret-of-the-accounts-tests-0123456789"
TOKENS = {"a": "sk-ant-oat01-account-a-0123456789", "b": "sk-ant-oat01-account-b-9876543210"}


def seed(data_dir: Path, accounts: dict[str, str], **extra: Any) -> dict[str, str]:
    """Store OAuth-token accounts (and disable the settings' one) before the gateway starts;
    return each name's id."""

    async def run() -> dict[str, str]:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        settings = load_settings({"data_dir": data_dir}, {})
        database = Database(settings.effective_database_url)
        await database.migrate()
        try:
            store = Accounts(
                SqlAccountStore(database),
                SecretBox.from_data_dir(data_dir),
                PlanMeter(),
                settings_credential("demo-upstream-key", None, {}),
            )
            await store.load()
            await store.update("default", enabled=False)
            ids = {}
            for name, token in accounts.items():
                made = await store.add(name, "oauth_token", secret=token, **extra)
                ids[name] = made.id
            return ids
        finally:
            await database.close()

    return asyncio.run(run())


def plans(demo: DemoServer, **given: dict[str, Any]) -> None:
    """Set the scripted model's plans, by account name."""
    body = {TOKENS.get(name, name): fields for name, fields in given.items()}
    httpx.post(demo.url + "/demo/plans", json=body).raise_for_status()


def token_of(request: Any) -> str:
    return str(request.headers.get("authorization", "")).removeprefix("Bearer ")


def chat(client: openai.OpenAI, history: list[dict[str, str]], text: str) -> str:
    """Send one turn of a conversation (the whole history, as chat clients do)."""
    history.append({"role": "user", "content": text})
    answer = client.chat.completions.create(model="sonnet", messages=history)  # type: ignore[arg-type]
    content = answer.choices[0].message.content or ""
    history.append({"role": "assistant", "content": content})
    return content


@pytest.fixture
def two(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, demo: DemoServer, data_dir: Path
) -> tuple[Gateway, dict[str, str]]:
    ids = seed(data_dir, TOKENS)
    return make_gateway(pool_max_processes=0), ids


def test_meter_routing_stickiness_failover_and_rollover(
    two: tuple[Gateway, dict[str, str]], model: ScriptedModel, demo: DemoServer
) -> None:
    gateway, ids = two
    state = gateway.state
    meter = state.accounts.meter
    plans(demo, a={"five_hour": {"utilization": 0.5}}, b={"five_hour": {"utilization": 0.1}})
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)

    # No reading yet: the first conversation takes the first account; the second one the
    # account that has not reported yet (full headroom as far as anyone knows).
    chat(client, [], "first conversation")
    chat(client, [], "second conversation")
    assert [token_of(r) for r in model.conversation_requests()] == [TOKENS["a"], TOKENS["b"]]
    # The meter shows each account's plan after one request each.
    for name, used in (("a", 0.5), ("b", 0.1)):
        reading = meter.state(ids[name]).reading
        assert reading is not None, name
        five = reading.window("five_hour")
        assert five is not None and five.utilization == pytest.approx(used, abs=0.01)
        assert five.resets_at is not None and five.resets_at > time.time() + 4 * 3600

    # A new conversation goes to the account with most headroom (b); it stays there for
    # ten turns while b fills up past a.
    plans(demo, b={"step": 0.06})
    history: list[dict[str, str]] = []
    model.requests.clear()
    for turn in range(10):
        assert "You said:" in chat(client, history, f"turn {turn} of the sticky one")
    tokens = [token_of(r) for r in model.conversation_requests()]
    assert tokens == [TOKENS["b"]] * 10
    b_now = meter.state(ids["b"]).reading.window("five_hour").utilization
    assert b_now > 0.5, "b is fuller than a now, and the conversation stayed"
    assert state.router.routed.moved == 0

    # b's window is used up (it resets in 6 s): the refused turn moves to a, resumed from
    # the conversation's transcript, and the model sees the earlier turns.
    plans(demo, b={"five_hour": {"utilization": 1.0, "reset_in": 6}, "step": 0.0})
    model.requests.clear()
    answer = chat(client, history, "the turn that moves")
    assert "the turn that moves" in answer
    served = model.conversation_requests()
    assert [token_of(r) for r in served] == [TOKENS["b"], TOKENS["a"]]
    seen = str(served[-1].body["messages"])
    assert "turn 0 of the sticky one" in seen and "turn 9 of the sticky one" in seen
    assert seen.count("the turn that moves") == 1, "the refused attempt left no trace"
    b_state = meter.state(ids["b"])
    assert b_state.cooldown is not None and "5-hour window is used up" in b_state.cooldown.reason
    assert not meter.verdict(ids["b"]).usable
    assert state.router.routed.moved == 1 and state.router.routed.failovers == 1

    # The conversation now lives on a: its next turn stays there.
    model.requests.clear()
    chat(client, history, "after the move")
    assert [token_of(r) for r in model.conversation_requests()] == [TOKENS["a"]]

    # b's window rolls over: it serves again by itself, never a stale "rejected".
    assert wait_until(lambda: meter.verdict(ids["b"]).usable, within=10)
    assert meter.state(ids["b"]).reading.status == "allowed"

    # A refusal inside a 200 stream (Claude Code retries without streaming and gets the
    # 429) cools a down too, and the conversation moves back to b.
    plans(demo, a={"five_hour": {"utilization": 1.0, "reset_in": 120}, "refuse_in_stream": True})
    model.requests.clear()
    assert "stream refusal" in chat(client, history, "stream refusal")
    assert token_of(model.conversation_requests()[-1]) == TOKENS["b"]
    a_state = meter.state(ids["a"])
    assert a_state.cooldown is not None and a_state.cooldown.until > time.time() + 100
    seen = str(model.conversation_requests()[-1].body["messages"])
    assert "after the move" in seen and "turn 0 of the sticky one" in seen


def test_no_account_left_answers_429_plan_limit_with_the_reset_time(
    two: tuple[Gateway, dict[str, str]], model: ScriptedModel, demo: DemoServer
) -> None:
    gateway, ids = two
    plans(
        demo,
        a={"five_hour": {"utilization": 1.0, "reset_in": 900}},
        b={"five_hour": {"utilization": 1.0, "reset_in": 120}},
    )
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        chat(client, [], "nobody can take this")
    error = caught.value
    body = error.body
    assert isinstance(body, dict) and body["code"] == "plan_limit"
    assert body["param"] == "plan_window"
    assert "'a'" in body["message"] and "'b'" in body["message"]
    retry = int(error.response.headers["retry-after"])
    assert 100 <= retry <= 120, "Retry-After is the first reset (b's, in 2 minutes)"
    assert error.response.headers["x-should-retry"] == "true"
    # Both tried once each, nothing more; the next request is refused before any upstream call.
    assert len(model.conversation_requests()) == 2
    with pytest.raises(openai.RateLimitError) as again:
        chat(client, [], "still nobody")
    assert again.value.response.headers["retry-after"]
    assert len(model.conversation_requests()) == 2
    # Anthropic's shape says the same.
    plain = httpx.post(
        gateway.url + "/v1/messages",
        json={"model": "sonnet", "max_tokens": 50, "messages": [{"role": "user", "content": "x"}]},
    )
    assert plain.status_code == 429
    assert plain.json()["error"]["type"] == "rate_limit_error"
    assert "plan" in plain.json()["error"]["message"]


def test_overage_guard_refuses_what_extra_usage_would_pay(
    make_gateway: Callable[..., Gateway],
    model: ScriptedModel,
    demo: DemoServer,
    data_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ids = seed(data_dir, {"a": TOKENS["a"]})
    receiver = Receiver()
    gateway = make_gateway(
        pool_max_processes=0, webhook_urls=receiver.url, webhook_secret=HOOK_SECRET
    )
    # a's plan is nearly used up; beyond it the upstream would bill extra usage.
    plans(
        demo,
        a={
            "five_hour": {"utilization": 0.95, "reset_in": 3000},
            "overage_allowed": True,
            "step": 0.1,
        },
    )
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    chat(client, [], "the last one the plan pays")
    # That answer's report says the plan is used up and extra usage pays from now on.
    meter = gateway.state.accounts.meter
    assert wait_until(lambda: not meter.verdict(ids["a"]).usable, within=5)
    assert meter.verdict(ids["a"]).limit == "extra_usage"
    upstream_before = len(model.conversation_requests())
    with pytest.raises(openai.RateLimitError) as caught:
        chat(client, [], "this would be billed as extra usage")
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "plan_limit"
    assert body["param"] == "extra_usage"
    assert "allow_extra_usage" in body["message"]
    assert caught.value.response.headers["retry-after"]
    assert len(model.conversation_requests()) == upstream_before, "nothing retried into billing"
    # The account is named in the log and in a webhook.
    assert "plan_extra_usage account=a" in caplog.text
    assert wait_until(
        lambda: any(b"plan.extra_usage" in got.body for got in list(receiver.received)), within=10
    )
    hook = next(got for got in receiver.received if b"plan.extra_usage" in got.body)
    body = json.loads(hook.body)
    assert body["data"]["account"] == "a" and "extra usage" in body["data"]["message"]
    assert TOKENS["a"].encode() not in hook.body
    receiver.close()


def test_the_extra_usage_refusal_moves_the_conversation(
    two: tuple[Gateway, dict[str, str]], model: ScriptedModel, demo: DemoServer
) -> None:
    gateway, ids = two
    plans(demo, a={"extra_usage_only": True}, b={"five_hour": {"utilization": 0.2}})
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    assert "moved on" in chat(client, [], "moved on")
    assert [token_of(r) for r in model.conversation_requests()] == [TOKENS["a"], TOKENS["b"]]
    cooldown = gateway.state.accounts.meter.state(ids["a"]).cooldown
    assert cooldown is not None and cooldown.limit == "extra_usage"


def test_no_secret_leaks_into_the_database_logs_answers_or_another_account(
    two: tuple[Gateway, dict[str, str]],
    model: ScriptedModel,
    demo: DemoServer,
    data_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway, ids = two
    caplog.set_level(logging.DEBUG)
    plans(demo, a={"five_hour": {"utilization": 0.1}}, b={"five_hour": {"utilization": 0.1}})
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    chat(client, [], "one")
    chat(client, [], "two")
    health = httpx.get(gateway.url + "/health").text
    raw = (data_dir / "ccgate.db").read_bytes()
    for token in TOKENS.values():
        assert token.encode() not in raw
        assert token not in caplog.text
        assert token not in health
    # Each account's CLI sent only its own credential, and no config dir of a token
    # account sees the operator's login.
    for request in model.model_requests():
        assert token_of(request) in TOKENS.values()
    workers = data_dir / "workers"
    for account in ids.values():
        for slot in (workers / account).glob("w*"):
            assert not (slot / ".credentials.json").exists()


ADMIN_KEY = "admin-key-of-the-accounts-tests-0123456789abcdef"


def _key(gateway: Gateway, name: str, quota: dict[str, Any]) -> str:
    response = httpx.post(
        gateway.url + "/admin/keys",
        json={"name": name, "quota": quota},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


def test_a_fair_share_key_is_held_back_when_the_window_runs_low(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, demo: DemoServer, data_dir: Path
) -> None:
    ids = seed(data_dir, {"a": TOKENS["a"]})
    gateway = make_gateway(
        pool_max_processes=0,
        auth_mode="multi",
        admin_key=ADMIN_KEY,
        plan_share_at=0.8,
        usage_shows_plan=True,
    )
    alice = _key(gateway, "alice", {"plan_share": 0.3})
    bob = _key(gateway, "bob", {})
    plans(demo, a={"five_hour": {"utilization": 0.5, "reset_in": 3600}, "step": 0.1})
    heavy = openai.OpenAI(base_url=gateway.url + "/v1", api_key=alice, max_retries=0)
    light = openai.OpenAI(base_url=gateway.url + "/v1", api_key=bob, max_retries=0)
    # Plenty left: alice uses far more than her share, and nobody stops her.
    for n in range(3):
        chat(heavy, [], f"alice {n}")
    meter = gateway.state.accounts.meter
    used = meter.state(ids["a"]).reading.window("five_hour").utilization
    assert used >= 0.8, used
    # Now the window runs low: alice is over her share and is held back; bob is not.
    with pytest.raises(openai.RateLimitError) as caught:
        chat(heavy, [], "alice once more")
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "plan_limit"
    assert body["param"] == "plan_share"
    assert "share of 30%" in body["message"]
    headers = caught.value.response.headers
    assert headers["x-ccgate-limit"] == "plan_share"
    assert int(headers["retry-after"]) == 300 and headers["x-should-retry"] == "false"
    assert "You said: bob" in chat(light, [], "bob")
    # Each key sees the shared headroom and its own share, nobody else's.
    seen = httpx.get(
        gateway.url + "/v1/usage", headers={"authorization": f"Bearer {alice}"}, timeout=10
    ).json()["plan"]
    assert len(seen) == 1 and seen[0]["your_share_of_five_hour"] >= 0.3
    assert "a" not in str(seen).replace("available", "").replace("account", "").split("'")
    windows = {w["window"]: w for w in seen[0]["windows"]}
    assert windows["five_hour"]["utilization"] >= 0.8


def test_a_probe_reads_an_idle_accounts_plan(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, demo: DemoServer, data_dir: Path
) -> None:
    seed(data_dir, TOKENS)
    gateway = make_gateway(pool_max_processes=0, auth_mode="multi", admin_key=ADMIN_KEY)
    plans(demo, b={"five_hour": {"utilization": 0.42}, "seven_day": {"utilization": 0.1}})
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    before = httpx.get(gateway.url + "/admin/accounts/b", headers=admin, timeout=10).json()
    assert before["plan"]["reading"] is None
    probed = httpx.post(gateway.url + "/admin/accounts/b/probe", headers=admin, timeout=60)
    assert probed.status_code == 200, probed.text
    view = probed.json()
    assert view["probe"] == {"ok": True, "error": None}
    windows = {w["name"]: w for w in view["plan"]["reading"]["windows"]}
    assert windows["five_hour"]["utilization"] == pytest.approx(0.42, abs=0.01)
    assert windows["seven_day"]["utilization"] == pytest.approx(0.1, abs=0.01)
    assert "secret" not in probed.text.replace("secret_hint", "")
    assert TOKENS["b"] not in probed.text
    # The probe asked for next to nothing, outside any conversation.
    (request,) = model.conversation_requests()
    assert token_of(request) == TOKENS["b"] and request.body["max_tokens"] <= 16
    missing = httpx.post(gateway.url + "/admin/accounts/nope/probe", headers=admin, timeout=10)
    assert missing.status_code == 404


def test_a_loop_refused_by_its_account_goes_on_another(
    two: tuple[Gateway, dict[str, str]], model: ScriptedModel, demo: DemoServer
) -> None:
    from tests.loops.test_end_to_end import _client, _create, _send

    gateway, ids = two
    plans(demo, a={"five_hour": {"utilization": 0.1}}, b={"five_hour": {"utilization": 0.5}})
    with _client(gateway) as client:
        loop = _create(client, title="on accounts")
        first = _send(client, loop["id"], "first message")
        assert first.events[-1].name == "done", first.events
        assert token_of(model.conversation_requests()[-1]) == TOKENS["a"]
        # a's window is used up: the loop's turn is refused there before the model answers.
        plans(demo, a={"five_hour": {"utilization": 1.0, "reset_in": 600}})
        refused = _send(client, loop["id"], "refused message")
        assert refused.events[-1].name == "error"
        assert refused.events[-1].data["code"] == "rate_limit"
        # The next message starts on b, from the loop's session as it was before the refusal.
        model.requests.clear()
        after = _send(client, loop["id"], "after the refusal")
        assert after.events[-1].name == "done", after.events
        (served,) = model.conversation_requests()
        assert token_of(served) == TOKENS["b"]
        seen = str(served.body["messages"])
        assert "first message" in seen and "refused message" not in seen
        assert client.delete(f"/v1/loops/{loop['id']}").status_code == 204
        # With every account used up, a loop's turn says so with the loop error code.
        plans(demo, b={"five_hour": {"utilization": 1.0, "reset_in": 600}})
        loop2 = _create(client, title="nowhere to run")
        _send(client, loop2["id"], "first")  # b refuses it: b cools down
        nowhere = client.post(f"/v1/loops/{loop2['id']}/messages", json={"content": "second"})
        assert nowhere.status_code == 429
        error = nowhere.json()["error"]
        assert error["code"] == "plan_limit" and "Plan limit" in error["message"]
        assert nowhere.headers["x-ccgate-limit"] == "plan_window"
        assert int(nowhere.headers["retry-after"]) > 200
        assert client.delete(f"/v1/loops/{loop2['id']}").status_code == 204
