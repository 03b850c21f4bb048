"""Many users on one subscription: keys, quotas, the usage ledger, the response cache, metrics.

Every test runs a real ccgate with ``auth_mode=multi`` in front of the real Claude Code CLI
and the scripted model. Keys are made and managed through the admin API (httpx); clients are
the official ``openai`` and ``anthropic`` SDKs, their async clients where requests run in
parallel. Waits are on the gateway's state, never on the clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from ccgate.config import load_settings
from ccgate.demo import ScriptedModel
from ccgate.demo.answer import estimate_input_tokens
from ccgate.errors import ConfigError
from ccgate.store.usage import UsageRecord, utc_day
from tests.gateway_testing import Gateway, wait_for_no_processes, wait_until

pytestmark = pytest.mark.cli

ADMIN_KEY = "admin-key-of-the-multi-user-tests-0123456789"
RAW_KEY = re.compile(r"ccg_[A-Za-z0-9_-]{32,}")
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up.",
            "parameters": {"type": "object", "properties": {"word": {"type": "string"}}},
        },
    }
]


# --- gateway, admin API and clients ---------------------------------------------------------


def _multi(make_gateway: Callable[..., Gateway], **settings: Any) -> Gateway:
    """Start a gateway with a key per client and the admin API on."""
    return make_gateway(auth_mode="multi", admin_key=ADMIN_KEY, **settings)


def _admin(
    gateway: Gateway, method: str, path: str, *, key: str | None = ADMIN_KEY, **kwargs: Any
) -> httpx.Response:
    """Call the admin API (with the admin key unless told otherwise)."""
    headers = {"authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.request(method, gateway.url + path, headers=headers, timeout=30, **kwargs)


def _make_key(gateway: Gateway, name: str = "alice", **fields: Any) -> dict[str, Any]:
    """Make a client key through the admin API; return the 201 body (with the raw key)."""
    response = _admin(gateway, "POST", "/admin/keys", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()
    return made


def _get(gateway: Gateway, path: str, key: str, **params: Any) -> httpx.Response:
    """GET a client route with a client key."""
    headers = {"authorization": f"Bearer {key}"}
    return httpx.get(gateway.url + path, headers=headers, params=params, timeout=30)


def _oai(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=60)


def _ant(gateway: Gateway, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0, timeout=60)


def _user(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


@dataclass
class Answer:
    """One answered chat completion: its text, headers and reported usage."""

    text: str
    headers: Mapping[str, str]
    output_tokens: int


def _chat(
    gateway: Gateway, key: str, text: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> Answer:
    """Ask one non-streamed chat completion (OpenAI SDK); errors raise the SDK's exceptions."""
    with _oai(gateway, key) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="sonnet", messages=_user(text), extra_headers=headers or {}, **extra
        )
        completion = raw.parse()
    assert completion.usage is not None
    content = completion.choices[0].message.content or ""
    return Answer(content, raw.headers, completion.usage.completion_tokens)


def _chat_streamed(gateway: Gateway, key: str, text: str) -> Answer:
    """Ask one streamed chat completion; return the joined text and the headers."""
    with _oai(gateway, key) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="sonnet",
            messages=_user(text),
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(raw.parse())
    joined = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = next(c.usage for c in chunks if c.usage is not None)
    return Answer(joined, raw.headers, usage.completion_tokens)


async def _chat_in_parallel(
    gateway: Gateway, key: str, texts: list[str]
) -> list[Answer | openai.APIStatusError]:
    """Send one chat completion per text, all at once; return answers and refusals in order."""
    async with openai.AsyncOpenAI(
        base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=120
    ) as client:

        async def one(text: str) -> Answer | openai.APIStatusError:
            try:
                raw = await client.chat.completions.with_raw_response.create(
                    model="sonnet", messages=_user(text)
                )
            except openai.APIStatusError as exc:
                return exc
            completion = raw.parse()
            assert completion.usage is not None
            content = completion.choices[0].message.content or ""
            return Answer(content, raw.headers, completion.usage.completion_tokens)

        return list(await asyncio.gather(*(one(text) for text in texts)))


async def _eventually(predicate: Callable[[], bool], within: float = 30.0) -> bool:
    """Poll ``predicate`` without blocking the event loop (the async twin of wait_until)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


# --- what the gateway recorded --------------------------------------------------------------


def _ledger(gateway: Gateway, namespace: str) -> list[UsageRecord]:
    """Return a namespace's usage records, newest first (``state.ledger.recent`` on its loop)."""
    loop = gateway.server.servers[0].get_loop()
    future = asyncio.run_coroutine_threadsafe(gateway.state.ledger.recent(namespace), loop)
    records: list[UsageRecord] = future.result(timeout=30)
    return records


def _samples(gateway: Gateway, key: str = ADMIN_KEY) -> list[Sample]:
    response = _get(gateway, "/metrics", key)
    assert response.status_code == 200, response.text
    return [s for f in text_string_to_metric_families(response.text) for s in f.samples]


def _metric(samples: list[Sample], name: str, **labels: str) -> float:
    """Sum the samples of ``name`` whose labels include ``labels``."""
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def _model_output_tokens(text: str) -> int:
    """Return the output tokens the scripted model reports for an answer (``demo/answer.py``)."""
    return max(1, len(text) // 4)


def _model_saw(model: ScriptedModel) -> list[tuple[str, str]]:
    """Return the last conversation request's messages as (role, text) pairs."""
    out = []
    for message in model.conversation_requests()[-1].body["messages"]:
        if message["role"] == "system":
            continue
        content = message["content"]
        if isinstance(content, str):
            text = content
        else:
            text = "".join(
                b.get("text", "")
                for b in content
                if b.get("type") == "text" and not b.get("text", "").startswith("<system-reminder>")
            )
        out.append((message["role"], text))
    return out


def _assert_quota_error(
    error: openai.APIStatusError | anthropic.APIStatusError,
    limit: str,
    *,
    retry: bool,
    says: str | None = None,
) -> None:
    """Check a 429 of a key's quota: its type, the limit it names, and the retry headers.

    A window's limit is named in the message with when it resets; ``says`` replaces that
    check for a limit that does not reset at a time (``max_concurrent``).
    """
    assert error.status_code == 429
    inner = error.response.json()["error"]
    assert inner["type"] == "rate_limit_error"
    if "param" in inner:  # the OpenAI shape names the limit in fields too
        assert (inner["param"], inner["code"]) == (limit, "quota_exceeded")
    if says is None:
        assert f"({limit})" in inner["message"]
        assert "resets at" in inner["message"]
    else:
        assert says in inner["message"]
    headers = error.response.headers
    assert headers["x-should-retry"] == ("true" if retry else "false")
    if retry:
        assert 1 <= int(headers["retry-after"]) <= 60
    else:
        assert "retry-after" not in headers


def _clear_of_a_minute_edge(margin: float = 8.0) -> None:
    """Start past a near minute boundary, so one per-minute window holds the whole test."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.2)


# --- 1. key lifecycle -----------------------------------------------------------------------


def test_a_new_key_is_shown_once_and_listed_only_as_a_preview(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = _multi(make_gateway)
    before = int(time.time())
    made = _make_key(
        gateway,
        "alice",
        quota={"requests_per_minute": 20, "tokens_per_day": 5000},
        models=["sonnet", "claude-haiku-4-5-20251001"],
        expires_at="2999-01-01",
    )
    assert {"id", "key", "name", "quota", "models", "created_at", "expires_at"} <= made.keys()
    assert RAW_KEY.fullmatch(made["key"]), made["key"]
    assert made["name"] == "alice"
    assert made["quota"] == {"requests_per_minute": 20, "tokens_per_day": 5000}
    assert made["models"] == [
        "claude-sonnet-5-5",
        "claude-haiku-4-5",
    ]  # an alias is stored as the model
    assert made["expires_at"] == int(datetime(2999, 1, 1, tzinfo=UTC).timestamp())
    assert before <= made["created_at"] <= int(time.time())
    other = _make_key(gateway, "bob")
    assert RAW_KEY.fullmatch(other["key"]) and other["key"] != made["key"]

    listing = _admin(gateway, "GET", "/admin/keys")
    assert listing.status_code == 200
    entries = listing.json()["data"]
    assert [e["id"] for e in entries] == [made["id"], other["id"]]
    assert all("key" not in e for e in entries)
    assert entries[0]["preview"] == made["key"][:8] + "…"
    one = _admin(gateway, "GET", f"/admin/keys/{made['id']}")
    assert one.json() == entries[0]
    for response in (listing, one):
        assert made["key"] not in response.text and other["key"] not in response.text
    missing = _admin(gateway, "GET", "/admin/keys/key_0000000000000000")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "key_not_found")

    assert _chat(gateway, made["key"], "hello").text == "You said: hello"


def test_patch_changes_a_key_and_disabling_locks_it_out_until_re_enabled(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = _multi(make_gateway)
    made = _make_key(gateway, "alice")
    path = f"/admin/keys/{made['id']}"
    changed = _admin(
        gateway,
        "PATCH",
        path,
        json={"name": "alice-2", "quota": {"requests_per_day": 100}, "models": ["haiku"]},
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["name"], body["quota"], body["models"], body["disabled"]) == (
        "alice-2",
        {"requests_per_day": 100},
        ["claude-haiku-5-5"],
        False,
    )
    assert "key" not in body
    refused = _admin(gateway, "PATCH", path, json={"quota": {"requests_per_day": -5}})
    assert (refused.status_code, refused.json()["error"]["param"]) == (
        400,
        "quota.requests_per_day",
    )
    assert _admin(gateway, "GET", path).json()["quota"] == {"requests_per_day": 100}

    with _oai(gateway, made["key"]) as client:
        assert {m.id for m in client.models.list()} >= {"haiku"}
        assert _admin(gateway, "PATCH", path, json={"disabled": True}).json()["disabled"] is True
        with pytest.raises(openai.AuthenticationError) as caught:
            client.models.list()
        assert "disabled" in caught.value.message
        assert _admin(gateway, "PATCH", path, json={"disabled": False}).json()["disabled"] is False
        assert {m.id for m in client.models.list()} >= {"haiku"}

    cleared = _admin(gateway, "PATCH", path, json={"quota": None, "models": None}).json()
    assert (cleared["name"], cleared["quota"], cleared["models"]) == ("alice-2", {}, None)


def test_a_revoked_key_stops_working_at_once(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = _multi(make_gateway)
    made = _make_key(gateway, "leaver")
    assert _chat(gateway, made["key"], "before").text == "You said: before"

    revoked = _admin(gateway, "DELETE", f"/admin/keys/{made['id']}")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None

    with pytest.raises(openai.AuthenticationError) as by_openai:
        _chat(gateway, made["key"], "after")
    assert "revoked" in by_openai.value.message
    with _ant(gateway, made["key"]) as client, pytest.raises(anthropic.AuthenticationError):
        client.messages.create(model="sonnet", max_tokens=50, messages=_user("after"))  # type: ignore[arg-type]
    assert len(model.conversation_requests()) == 1

    assert _admin(gateway, "GET", "/admin/keys").json()["data"] == []
    everything = _admin(gateway, "GET", "/admin/keys", params={"include_revoked": "true"})
    assert [k["id"] for k in everything.json()["data"]] == [made["id"]]
    assert made["key"] not in everything.text
    again = _admin(gateway, "PATCH", f"/admin/keys/{made['id']}", json={"disabled": False})
    assert again.status_code == 400


def test_an_expired_key_is_refused(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = _multi(make_gateway)
    soon = _make_key(gateway, "old", expires_at=time.time() + 1)
    current = _make_key(gateway, "new", expires_at="2999-12-31T00:00:00Z")

    def refused(key: str) -> bool:
        return _get(gateway, "/v1/models", key).status_code == 401

    assert wait_until(lambda: refused(soon["key"]), within=15)
    with _oai(gateway, soon["key"]) as client, pytest.raises(openai.AuthenticationError) as e:
        client.models.list()
    assert "expired" in e.value.message
    with _oai(gateway, current["key"]) as client:
        assert len(client.models.list().data) > 0
        path = f"/admin/keys/{current['id']}"
        # A time already passed would make a dead key: refused, and the key goes on working.
        past = _admin(gateway, "PATCH", path, json={"expires_at": 1_000_000})
        assert past.status_code == 400 and past.json()["error"]["code"] == "expiry_in_past"
        assert len(client.models.list().data) > 0
        moved = _admin(gateway, "PATCH", path, json={"expires_at": time.time() + 1})
        assert moved.status_code == 200
        assert wait_until(lambda: refused(current["key"]), within=15)
        with pytest.raises(openai.AuthenticationError):
            client.models.list()


@pytest.mark.parametrize("presented", [None, "ccg_" + "A" * 43, "sk-not-a-ccgate-key"])
def test_a_missing_or_unknown_key_is_401_in_each_protocols_shape(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, presented: str | None
) -> None:
    gateway = _multi(make_gateway)
    _make_key(gateway, "someone")
    headers = {"authorization": f"Bearer {presented}"} if presented else {}
    chat = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "sonnet", "messages": _user("hi")},
        headers=headers,
        timeout=30,
    )
    assert chat.status_code == 401
    error = chat.json()["error"]
    assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")
    messages = httpx.post(
        gateway.url + "/v1/messages",
        json={"model": "sonnet", "max_tokens": 50, "messages": _user("hi")},
        headers=headers,
        timeout=30,
    )
    assert messages.status_code == 401
    assert messages.json()["type"] == "error"
    assert messages.json()["error"]["type"] == "authentication_error"
    if presented:
        assert presented not in chat.text and presented not in messages.text
        with _oai(gateway, presented) as client, pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="sonnet", messages=_user("hi"))
        with _ant(gateway, presented) as ant, pytest.raises(anthropic.AuthenticationError):
            ant.messages.create(model="sonnet", max_tokens=50, messages=_user("hi"))  # type: ignore[arg-type]
    assert model.conversation_requests() == []


def test_the_admin_api_needs_the_admin_key(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, tmp_path: Path
) -> None:
    gateway = _multi(make_gateway)
    made = _make_key(gateway, "alice")
    routes = [
        ("GET", "/admin/keys", None),
        ("POST", "/admin/keys", {"name": "intruder"}),
        ("GET", f"/admin/keys/{made['id']}", None),
        ("PATCH", f"/admin/keys/{made['id']}", {"disabled": True}),
        ("DELETE", f"/admin/keys/{made['id']}", None),
        ("GET", "/admin/usage", None),
    ]
    wrong = [None, ADMIN_KEY[:16], ADMIN_KEY[:-1] + "X", made["key"]]
    for key in wrong:
        for method, path, body in routes:
            response = _admin(gateway, method, path, key=key, json=body)
            assert response.status_code == 401, (key, method, path, response.text)
            assert response.json()["error"]["type"] == "authentication_error"
    # Nothing happened: one key, neither disabled nor revoked.
    [still] = _admin(gateway, "GET", "/admin/keys").json()["data"]
    assert (still["id"], still["disabled"], still["revoked_at"]) == (made["id"], False, None)

    gateway.stop()
    without = make_gateway(auth_mode="multi")
    off = _admin(without, "GET", "/admin/keys")
    assert off.status_code == 401
    assert "admin API is off" in off.json()["error"]["message"]
    with pytest.raises(ConfigError, match="admin_key is refused"):
        load_settings({"data_dir": tmp_path / "other", "admin_key": "k" * 31}, {})


@pytest.mark.parametrize(
    ("body", "status", "param", "named"),
    [
        ({"quota": {"requests_per_hour": 5}}, 400, "quota.requests_per_hour", "requests_per_hour"),
        ({"quota": {"requests_per_minute": -1}}, 400, "quota.requests_per_minute", "minute"),
        ({"quota": {"budget_usd_per_month": -0.5}}, 400, "quota.budget_usd_per_month", "budget"),
        ({"quota": {"tokens_per_day": 1.5}}, 400, "quota.tokens_per_day", "tokens_per_day"),
        ({"models": ["sonnet", "gpt-4o"]}, 404, "model", "gpt-4o"),
        ({"expires_at": "next tuesday"}, 400, "expires_at", "expires_at"),
        ({"name": ""}, 400, "name", "name"),
        ({"owner": "mallory"}, 400, "owner", "owner"),
        pytest.param(
            {"quota": {"max_concurrent": False}},
            400,
            "quota.max_concurrent",
            "max_concurrent",
        ),
    ],
)
def test_a_bad_key_body_is_refused_naming_the_field(
    make_gateway: Callable[..., Gateway],
    model: ScriptedModel,
    body: dict[str, Any],
    status: int,
    param: str,
    named: str,
) -> None:
    gateway = _multi(make_gateway)
    response = _admin(gateway, "POST", "/admin/keys", json={"name": "alice", **body})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert named in error["message"]
    assert _admin(gateway, "GET", "/admin/keys").json()["data"] == []


# --- 2. quotas at their boundary ------------------------------------------------------------


async def test_requests_per_minute_admits_exactly_the_limit_under_concurrency(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = _multi(make_gateway)
    made = _make_key(gateway, "burst", quota={"requests_per_minute": 5})
    _clear_of_a_minute_edge()
    results = await _chat_in_parallel(gateway, made["key"], [f"burst {n}" for n in range(10)])
    answered = [r for r in results if isinstance(r, Answer)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert (len(answered), len(refused)) == (5, 5), results
    for error in refused:
        _assert_quota_error(error, "requests_per_minute", retry=True)
    assert len(model.conversation_requests()) == 5
    assert len(_ledger(gateway, made["id"])) == 5


async def test_requests_per_day_is_exact_and_says_not_to_retry(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = _multi(make_gateway)
    made = _make_key(gateway, "daily", quota={"requests_per_day": 2})
    async with anthropic.AsyncAnthropic(
        base_url=gateway.url, api_key=made["key"], max_retries=0, timeout=120
    ) as client:

        async def one(n: int) -> object:
            try:
                return await client.messages.create(
                    model="sonnet",
                    max_tokens=100,
                    messages=_user(f"daily {n}"),  # type: ignore[arg-type]
                )
            except anthropic.APIStatusError as exc:
                return exc

        results = await asyncio.gather(*(one(n) for n in range(4)))
        later = await one(99)
    answered = [r for r in results if isinstance(r, anthropic.types.Message)]
    refused = [r for r in results if isinstance(r, anthropic.RateLimitError)]
    assert (len(answered), len(refused)) == (2, 2), results
    assert isinstance(later, anthropic.RateLimitError)
    for error in [*refused, later]:
        _assert_quota_error(error, "requests_per_day", retry=False)
    assert len(model.conversation_requests()) == 2


def test_tokens_per_day_refuses_once_a_requests_tokens_are_charged(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = _multi(make_gateway)
    made = _make_key(gateway, "wordy", quota={"tokens_per_day": 20})
    assert _chat(gateway, made["key"], "spend").text == "You said: spend"
    [record] = _ledger(gateway, made["id"])
    assert record.input_tokens + record.output_tokens > 20
    with pytest.raises(openai.RateLimitError) as caught:
        _chat(gateway, made["key"], "more")
    _assert_quota_error(caught.value, "tokens_per_day", retry=False)
    assert len(model.conversation_requests()) == 1


def test_a_tiny_monthly_budget_is_spent_by_one_request(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = _multi(make_gateway)
    made = _make_key(gateway, "thrifty", quota={"budget_usd_per_month": 0.00005})
    with _ant(gateway, made["key"]) as client:
        first = client.messages.create(model="sonnet", max_tokens=100, messages=_user("pay"))  # type: ignore[arg-type]
        assert first.content[0].text == "You said: pay"  # type: ignore[union-attr]
        [record] = _ledger(gateway, made["id"])
        assert record.cost_usd > 0.00005
        with pytest.raises(anthropic.RateLimitError) as caught:
            client.messages.create(model="sonnet", max_tokens=100, messages=_user("again"))  # type: ignore[arg-type]
    _assert_quota_error(caught.value, "budget_usd_per_month", retry=False)
    assert len(model.conversation_requests()) == 1


async def test_max_concurrent_refuses_a_third_request_while_two_run(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, data_dir: Path
) -> None:
    # Nothing kept warm, so the process check below sees only what the turns left.
    gateway = _multi(make_gateway, session_keepalive=0, pool_max_processes=0)
    made = _make_key(gateway, "parallel", quota={"max_concurrent": 2})
    async with openai.AsyncOpenAI(
        base_url=gateway.url + "/v1", api_key=made["key"], max_retries=0, timeout=120
    ) as client:

        async def stalled(n: int) -> None:
            stream = await client.chat.completions.create(
                model="sonnet", messages=_user(f"slow {n} [[demo: stall=120]]"), stream=True
            )
            async with stream:
                async for _ in stream:
                    pass

        running = [asyncio.create_task(stalled(n)) for n in range(2)]
        try:
            assert await _eventually(lambda: len(model.conversation_requests()) == 2)
            assert gateway.state.gate.active == 2
            with pytest.raises(openai.RateLimitError) as caught:
                await client.chat.completions.create(model="sonnet", messages=_user("third"))
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        _assert_quota_error(caught.value, "max_concurrent", retry=True, says="2 request(s) at once")
        assert len(model.conversation_requests()) == 2

        # The two leave (their turns are cut and recorded); the key may run again.
        assert await _eventually(lambda: gateway.state.gate.active == 0)
        assert await _eventually(lambda: len(_ledger(gateway, made["id"])) == 2)
        after = await client.chat.completions.create(model="sonnet", messages=_user("after"))
        assert after.choices[0].message.content == "You said: after"
    assert {r.status for r in _ledger(gateway, made["id"])} == {"ok", "cancelled"}
    assert wait_for_no_processes(data_dir) == []


def test_a_model_outside_the_keys_list_is_403(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = _multi(make_gateway)
    made = _make_key(gateway, "haiku-only", models=["haiku"])
    with pytest.raises(openai.PermissionDeniedError) as by_openai:
        _chat(gateway, made["key"], "may I?")
    error = by_openai.value.response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == (
        "permission_error",
        "model",
        "model_not_allowed",
    )
    assert "'claude-sonnet-5-5'" in error["message"] and "claude-haiku-5-5" in error["message"]
    with _ant(gateway, made["key"]) as client:
        with pytest.raises(anthropic.PermissionDeniedError) as by_anthropic:
            client.messages.create(model="opus", max_tokens=50, messages=_user("may I?"))  # type: ignore[arg-type]
        assert by_anthropic.value.response.json()["error"]["type"] == "permission_error"
        with pytest.raises(anthropic.PermissionDeniedError):
            client.messages.count_tokens(model="opus", messages=_user("how long?"))  # type: ignore[arg-type]
        assert model.conversation_requests() == []
        allowed = client.messages.create(model="haiku", max_tokens=50, messages=_user("ok"))  # type: ignore[arg-type]
    assert allowed.content[0].text == "You said: ok"  # type: ignore[union-attr]
    assert [r.model for r in _ledger(gateway, made["id"])] == ["claude-haiku-5-5"]


# --- 4. the usage ledger --------------------------------------------------------------------


def test_the_ledger_sums_every_turn_with_the_models_tokens(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = _multi(make_gateway)
    made = _make_key(gateway, "alice")
    key, key_id = made["key"], made["id"]
    before = time.time()
    answers = [_chat(gateway, key, "one"), _chat_streamed(gateway, key, "two")]
    with _ant(gateway, key) as client:
        message = client.messages.create(model="haiku", max_tokens=100, messages=_user("three"))  # type: ignore[arg-type]
    texts = [a.text for a in answers] + [message.content[0].text]  # type: ignore[union-attr]
    assert texts == ["You said: one", "You said: two", "You said: three"]

    requests = model.conversation_requests()
    assert len(requests) == 3
    want_input = sum(estimate_input_tokens(r.body) for r in requests)
    want_output = sum(_model_output_tokens(t) for t in texts)
    assert [a.output_tokens for a in answers] == [_model_output_tokens(t) for t in texts[:2]]

    own = _get(gateway, "/v1/usage", key).json()
    totals = own["totals"]
    assert (totals["requests"], totals["cached_requests"], totals["failed_requests"]) == (3, 0, 0)
    assert (totals["input_tokens"], totals["output_tokens"]) == (want_input, want_output)
    assert totals["cost_usd"] > 0

    records = _ledger(gateway, key_id)
    assert [(r.endpoint, r.model, r.status) for r in records] == [
        ("/v1/messages", "claude-haiku-5-5", "ok"),
        ("/v1/chat/completions", "claude-sonnet-5-5", "ok"),
        ("/v1/chat/completions", "claude-sonnet-5-5", "ok"),
    ]
    assert [r.input_tokens for r in reversed(records)] == [
        estimate_input_tokens(r.body) for r in requests
    ]
    assert all(r.ttft_ms is not None and r.session_key for r in records)
    assert totals["cost_usd"] == pytest.approx(sum(r.cost_usd for r in records), abs=1e-6)

    def admin_usage(**params: Any) -> dict[str, Any]:
        response = _admin(gateway, "GET", "/admin/usage", params=params)
        assert response.status_code == 200, response.text
        usage: dict[str, Any] = response.json()
        return usage

    by_model = admin_usage(group_by="model")["data"]
    assert {row["group"]: row["requests"] for row in by_model} == {
        "claude-haiku-5-5": 1,
        "claude-sonnet-5-5": 2,
    }
    [by_day] = admin_usage(group_by="day")["data"]
    assert (by_day["group"], by_day["requests"]) == (utc_day(time.time()), 3)
    [by_key] = admin_usage(group_by="key")["data"]
    assert (by_key["group"], by_key["name"], by_key["requests"]) == (key_id, "alice", 3)
    assert (by_key["input_tokens"], by_key["output_tokens"]) == (want_input, want_output)
    assert admin_usage(key_id=key_id)["totals"] == totals
    assert admin_usage(until=before)["totals"]["requests"] == 0
    assert admin_usage(since=before)["totals"]["requests"] == 3


def test_a_failed_turn_and_a_cut_stream_each_leave_one_record(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, data_dir: Path
) -> None:
    # Nothing kept warm, so the process check below sees only what the turns left.
    gateway = _multi(make_gateway, session_keepalive=0, pool_max_processes=0)
    made = _make_key(gateway, "unlucky")
    with _oai(gateway, made["key"]) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(
                model="sonnet", messages=_user("boom [[demo: error=500]]")
            )
        assert caught.value.status_code == 502
        stream = client.chat.completions.create(
            model="sonnet",
            messages=_user(
                'long [[demo: say="abcdefgh ijklmnop qrstuvwx yz012345" chunks=4 delay=3]]'
            ),
            stream=True,
        )
        with stream:
            first = next(c for c in stream if c.choices and c.choices[0].delta.content)
        assert first.choices[0].delta.content == "abcdefgh "
    assert wait_until(lambda: len(_ledger(gateway, made["id"])) == 2)
    cut, failed = _ledger(gateway, made["id"])
    assert (failed.status, failed.endpoint, failed.cached) == (
        "upstream",
        "/v1/chat/completions",
        False,
    )
    assert (cut.status, cut.cached) == ("cancelled", False)
    assert cut.output_tokens >= 3  # at least what was streamed, estimated at 4 characters a token
    assert cut.input_tokens > 0
    totals = _get(gateway, "/v1/usage", made["key"]).json()["totals"]
    assert (totals["requests"], totals["failed_requests"]) == (2, 2)
    assert wait_for_no_processes(data_dir) == []


def test_a_key_reads_only_its_own_usage(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = _multi(make_gateway)
    alice, bob = _make_key(gateway, "alice"), _make_key(gateway, "bob")
    _chat(gateway, alice["key"], "a1")
    _chat(gateway, alice["key"], "a2")
    _chat(gateway, bob["key"], "b1")
    for who, count in ((alice, 2), (bob, 1)):
        own = _get(gateway, "/v1/usage", who["key"]).json()
        assert own["totals"]["requests"] == count
        # Naming another key changes nothing: a key's usage route reads only its own.
        other = alice if who is bob else bob
        nosy = _get(gateway, "/v1/usage", who["key"], key_id=other["id"]).json()
        assert nosy["totals"] == own["totals"]
    rows = _admin(gateway, "GET", "/admin/usage", params={"group_by": "key"}).json()["data"]
    assert {(r["group"], r["name"], r["requests"]) for r in rows} == {
        (alice["id"], "alice", 2),
        (bob["id"], "bob", 1),
    }


def test_without_the_ledger_quotas_still_count(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = _multi(make_gateway, usage_ledger=False)
    made = _make_key(gateway, "unrecorded", quota={"tokens_per_day": 20})
    assert _chat(gateway, made["key"], "spend").text == "You said: spend"
    with pytest.raises(openai.RateLimitError) as caught:
        _chat(gateway, made["key"], "more")
    _assert_quota_error(caught.value, "tokens_per_day", retry=False)
    assert _ledger(gateway, made["id"]) == []
    assert _get(gateway, "/v1/usage", made["key"]).json()["totals"]["requests"] == 0


# --- 5. the response cache and singleflight ------------------------------------------------


def test_an_identical_request_is_answered_from_the_cache_streamed_or_not(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = _multi(make_gateway, cache_ttl=300)
    made = _make_key(gateway, "alice")
    first = _chat(gateway, made["key"], "cache me")
    second = _chat(gateway, made["key"], "cache me")
    streamed = _chat_streamed(gateway, made["key"], "cache me")
    assert [a.headers["x-ccgate-cache"] for a in (first, second, streamed)] == [
        "miss",
        "hit",
        "hit",
    ]
    assert first.text == second.text == streamed.text == "You said: cache me"
    assert len(model.conversation_requests()) == 1
    records = _ledger(gateway, made["id"])
    assert [(r.cached, r.input_tokens + r.output_tokens > 0) for r in records] == [
        (True, False),
        (True, False),
        (False, True),
    ]


def test_no_cache_bypasses_the_cache_and_refreshes_it(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = _multi(make_gateway, cache_ttl=300)
    key = _make_key(gateway, "alice")["key"]
    assert _chat(gateway, key, "fresh").headers["x-ccgate-cache"] == "miss"
    bypass = _chat(gateway, key, "fresh", headers={"Cache-Control": "no-cache"})
    assert (bypass.headers["x-ccgate-cache"], bypass.text) == ("miss", "You said: fresh")
    assert len(model.conversation_requests()) == 2
    assert _chat(gateway, key, "fresh").headers["x-ccgate-cache"] == "hit"
    assert len(model.conversation_requests()) == 2


def test_requests_with_tools_or_a_session_are_never_cached(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = _multi(make_gateway, cache_ttl=300)
    key = _make_key(gateway, "alice")["key"]
    with_tools = [_chat(gateway, key, "with tools", tools=TOOLS) for _ in range(2)]
    session = {"X-Session-Id": "conv-1"}
    in_session = [_chat(gateway, key, "in a session", headers=session) for _ in range(2)]
    for answer in (*with_tools, *in_session):
        assert answer.headers.get("x-ccgate-cache") != "hit"
    assert [a.text for a in with_tools] == ["You said: with tools"] * 2
    assert [a.text for a in in_session] == ["You said: in a session"] * 2
    assert len(model.conversation_requests()) == 4


def test_the_cache_is_not_shared_between_keys(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = _multi(make_gateway, cache_ttl=300)
    alice, bob = _make_key(gateway, "alice")["key"], _make_key(gateway, "bob")["key"]
    assert _chat(gateway, alice, "same words").headers["x-ccgate-cache"] == "miss"
    assert _chat(gateway, bob, "same words").headers["x-ccgate-cache"] == "miss"
    assert len(model.conversation_requests()) == 2
    assert _chat(gateway, alice, "same words").headers["x-ccgate-cache"] == "hit"
    assert _chat(gateway, bob, "same words").headers["x-ccgate-cache"] == "hit"
    assert len(model.conversation_requests()) == 2


async def test_identical_concurrent_requests_share_one_turn(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = _multi(make_gateway, cache_ttl=300)
    made = _make_key(gateway, "alice")
    results = await _chat_in_parallel(gateway, made["key"], ["together [[demo: stall=3]]"] * 5)
    assert all(isinstance(r, Answer) for r in results), results
    answers = [r for r in results if isinstance(r, Answer)]
    assert [a.text for a in answers] == ["You said: together"] * 5
    assert sorted(a.headers["x-ccgate-cache"] for a in answers) == ["hit"] * 4 + ["miss"]
    assert len(model.conversation_requests()) == 1
    samples = _samples(gateway)
    assert _metric(samples, "ccgate_cache_lookups_total", result="shared") == 4
    records = _ledger(gateway, made["id"])
    assert sorted((r.cached, r.input_tokens + r.output_tokens == 0) for r in records) == [
        (False, False),
        *[(True, True)] * 4,
    ]


def test_cached_answers_count_as_requests_but_cost_no_tokens(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = _multi(make_gateway, cache_ttl=300)
    made = _make_key(gateway, "alice", quota={"requests_per_minute": 3})
    _clear_of_a_minute_edge()
    assert _chat(gateway, made["key"], "counted").headers["x-ccgate-cache"] == "miss"
    [record] = _ledger(gateway, made["id"])
    spent = record.input_tokens + record.output_tokens
    # One token left for the day: a hit that charged tokens would leave none for the next.
    quota = {"requests_per_minute": 3, "tokens_per_day": spent + 1}
    assert _admin(gateway, "PATCH", f"/admin/keys/{made['id']}", json={"quota": quota}).is_success
    for _ in range(2):
        assert _chat(gateway, made["key"], "counted").headers["x-ccgate-cache"] == "hit"
    with pytest.raises(openai.RateLimitError) as caught:
        _chat(gateway, made["key"], "counted")
    _assert_quota_error(caught.value, "requests_per_minute", retry=True)
    records = _ledger(gateway, made["id"])
    assert [(r.cached, r.input_tokens, r.output_tokens) for r in records[:2]] == [(True, 0, 0)] * 2
    assert len(model.conversation_requests()) == 1


# --- 6. isolation ---------------------------------------------------------------------------


def test_a_key_cannot_reach_another_keys_sessions(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = _multi(make_gateway)
    alice, bob = _make_key(gateway, "alice")["key"], _make_key(gateway, "bob")["key"]
    named = _chat(gateway, alice, "alice's secret", headers={"X-Session-Id": "project-x"})
    assert named.headers["x-session-id"] == "project-x"
    generated = _chat(gateway, alice, "another secret").headers["x-session-id"]

    for session in ("project-x", generated):
        assert _get(gateway, f"/v1/sessions/{session}", alice).status_code == 200
        assert _get(gateway, f"/v1/sessions/{session}", bob).status_code == 404
        gone = httpx.delete(
            gateway.url + f"/v1/sessions/{session}",
            headers={"authorization": f"Bearer {bob}"},
            timeout=30,
        )
        assert gone.status_code == 404
    assert _get(gateway, "/v1/sessions", bob).json()["data"] == []
    wiped = httpx.delete(
        gateway.url + "/v1/sessions", headers={"authorization": f"Bearer {bob}"}, timeout=30
    )
    assert wiped.json()["deleted"] == 0
    assert len(_get(gateway, "/v1/sessions", alice).json()["data"]) == 2

    reply = _chat(gateway, bob, "what did alice say?", headers={"X-Session-Id": "project-x"})
    assert reply.text == "You said: what did alice say?"
    # Bob's "project-x" is a new conversation of his own: the model never sees alice's.
    assert _model_saw(model) == [("user", "what did alice say?")]
    assert "alice's secret" not in json.dumps(model.conversation_requests()[-1].body)
    assert _get(gateway, "/v1/sessions/project-x", alice).json()["turns"] == 1
    assert _get(gateway, "/v1/sessions/project-x", bob).json()["turns"] == 1


# --- 7. metrics -----------------------------------------------------------------------------


def test_metrics_count_requests_tokens_cost_latency_and_cache_lookups(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = _multi(make_gateway, cache_ttl=300)
    made = _make_key(gateway, "alice-bot")
    for _ in range(2):
        _chat(gateway, made["key"], "measured")
    [hit, miss] = _ledger(gateway, made["id"])
    assert httpx.get(gateway.url + "/metrics", timeout=30).status_code == 401

    samples = _samples(gateway)
    chat = {"endpoint": "/v1/chat/completions", "model": "claude-sonnet-5-5", "status": "ok"}
    assert _metric(samples, "ccgate_requests_total", **chat, cached="false") == 1
    assert _metric(samples, "ccgate_requests_total", **chat, cached="true") == 1
    assert _metric(samples, "ccgate_tokens_total", model="claude-sonnet-5-5", kind="input") == (
        miss.input_tokens
    )
    assert _metric(samples, "ccgate_tokens_total", model="claude-sonnet-5-5", kind="output") == (
        miss.output_tokens
    )
    assert _metric(samples, "ccgate_cost_usd_total", model="claude-sonnet-5-5") == pytest.approx(
        miss.cost_usd + hit.cost_usd
    )
    where = {"endpoint": "/v1/chat/completions", "model": "claude-sonnet-5-5"}
    assert _metric(samples, "ccgate_time_to_first_token_seconds_count", **where) == 2
    assert _metric(samples, "ccgate_turn_duration_seconds_count", **where) == 2
    assert _metric(samples, "ccgate_turn_duration_seconds_bucket", **where, le="+Inf") == 2
    assert _metric(samples, "ccgate_cache_lookups_total", result="miss") == 1
    assert _metric(samples, "ccgate_cache_lookups_total", result="hit") == 1
    assert _metric(samples, "ccgate_turns_active") == 0
    assert _metric(samples, "ccgate_turns_queued") == 0
    assert not [s for s in samples if "key" in s.labels]
    text = _get(gateway, "/metrics", ADMIN_KEY).text
    assert "alice-bot" not in text and made["key"] not in text


def test_metrics_per_key_label_series_with_the_keys_name(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = _multi(make_gateway, metrics_per_key=True)
    alice, bob = _make_key(gateway, "alice-bot"), _make_key(gateway, "bob-bot")
    _chat(gateway, alice["key"], "labelled")
    samples = _samples(gateway)
    labelled = {"endpoint": "/v1/chat/completions", "model": "claude-sonnet-5-5", "status": "ok"}
    assert _metric(samples, "ccgate_requests_total", **labelled, key="alice-bot") == 1
    assert _metric(samples, "ccgate_requests_total", key="bob-bot") == 0
    assert _metric(samples, "ccgate_tokens_total", key="alice-bot", kind="input") > 0
    assert _metric(samples, "ccgate_cost_usd_total", key="alice-bot") > 0
    keys = {s.labels["key"] for s in samples if "key" in s.labels}
    assert keys == {"alice-bot"}
    text = _get(gateway, "/metrics", ADMIN_KEY).text
    assert alice["key"] not in text and alice["id"] not in text and bob["key"] not in text


# --- 8. secrets -----------------------------------------------------------------------------


def test_keys_are_stored_as_hashes_and_never_logged_or_echoed(
    make_gateway: Callable[..., Gateway],
    model: ScriptedModel,
    data_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    # Start from a data dir and a database file anyone may read: ccgate must tighten both.
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o755)
    (data_dir / "ccgate.db").touch()
    (data_dir / "ccgate.db").chmod(0o644)
    gateway = _multi(make_gateway, cache_ttl=300, metrics_per_key=True)
    made = _make_key(gateway, "alice", models=["sonnet"])
    raw, key_id = made["key"], made["id"]
    auth = {"authorization": f"Bearer {raw}"}
    near_miss = raw[:-1] + ("A" if raw[-1] != "A" else "B")
    received: list[httpx.Response] = []

    def call(method: str, path: str, headers: dict[str, str], body: Any = None) -> None:
        response = httpx.request(method, gateway.url + path, headers=headers, json=body, timeout=60)
        received.append(response)

    chat = {"model": "sonnet", "messages": _user("keep it secret")}
    call("POST", "/v1/chat/completions", auth, chat)
    call("POST", "/v1/chat/completions", auth, chat)  # from the cache
    call("POST", "/v1/chat/completions", auth, {**chat, "stream": True})
    call("POST", "/v1/messages", auth, {**chat, "max_tokens": 50})
    call("POST", "/v1/messages", auth, {**chat, "model": "opus", "max_tokens": 50})  # 403
    call("POST", "/v1/chat/completions", {"authorization": f"Bearer {near_miss}"}, chat)  # 401
    call("POST", "/admin/keys", auth, {"name": "escalate"})  # 401: a client key is no admin key
    for path in ("/v1/usage", "/v1/sessions", "/v1/models"):
        call("GET", path, auth)
    call("GET", "/metrics", auth)  # 403: a client key does not read every key's metrics
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    for path in ("/admin/keys", f"/admin/keys/{key_id}", "/admin/usage?group_by=key", "/metrics"):
        call("GET", path, admin)
    call("GET", "/health", {})
    expected = [200] * 4 + [403, 401, 401] + [200] * 3 + [403] + [200] * 5
    assert [r.status_code for r in received] == expected
    for response in received:
        for secret in (raw, near_miss, ADMIN_KEY):
            assert secret not in response.text, (response.request.url, secret)
            assert secret not in str(response.headers.raw), response.request.url

    assert caplog.records, "the gateway's logs were not captured"
    assert "turn_finished" in caplog.text
    for secret in (raw, near_miss, ADMIN_KEY):
        assert secret not in caplog.text

    gateway.stop()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    database = data_dir / "ccgate.db"
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    stored = b""
    for name in ("ccgate.db", "ccgate.db-wal"):
        file = data_dir / name
        if file.exists():
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, name
            stored += file.read_bytes()
    assert hashlib.sha256(raw.encode()).hexdigest().encode() in stored
    for file in data_dir.rglob("*"):
        if file.is_file():
            content = file.read_bytes()
            assert raw.encode() not in content, file
            assert ADMIN_KEY.encode() not in content, file
