"""Bad input over a real server, from the official SDKs (or httpx, as a JavaScript client sends).

None of it costs a turn: the scripted model never hears of the refused requests.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import pytest

from ccgate.demo import ScriptedModel
from tests.gateway_testing import Gateway

pytestmark = pytest.mark.cli


def _nothing_ran(gateway: Gateway, model: ScriptedModel) -> None:
    assert model.conversation_requests() == []
    usage = httpx.get(gateway.url + "/v1/usage", timeout=10).json()
    assert usage["totals"]["requests"] == 0


def test_a_session_id_that_cannot_be_echoed_is_a_400_before_any_turn(
    gateway: Gateway, oai: openai.OpenAI, ant: anthropic.Anthropic, model: ScriptedModel
) -> None:
    hi: list[Any] = [{"role": "user", "content": "hi"}]  # for either SDK, and raw JSON
    with pytest.raises(openai.BadRequestError) as refused:
        oai.chat.completions.create(model="sonnet", messages=hi, extra_body={"session_id": "日本"})
    assert refused.value.code == "invalid_session_key"
    assert "A-Z a-z 0-9" in refused.value.message and "256" in refused.value.message
    with pytest.raises(anthropic.BadRequestError) as also:
        ant.messages.create(
            model="sonnet",
            max_tokens=20,
            messages=hi,
            extra_headers={"X-Session-Id": "my chat"},
        )
    assert "session key" in str(also.value)
    # Bytes no header may echo, as a client that does not check them sends them.
    raw = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"messages": hi},
        headers={b"x-opencode-session": "😀".encode()},
        timeout=30,
    )
    assert raw.status_code == 400 and raw.json()["error"]["param"] == "x-opencode-session"
    _nothing_ran(gateway, model)


def test_ids_real_clients_use_are_echoed(oai: openai.OpenAI, model: ScriptedModel) -> None:
    ulid = "01HZX3JQ5V8K2M4N6P7R9S0T1V"
    reply = oai.chat.completions.with_raw_response.create(
        model="sonnet",
        messages=[{"role": "user", "content": "hello"}],
        extra_headers={"X-Session-Id": ulid},
    )
    assert reply.headers["x-session-id"] == ulid
    assert reply.parse().choices[0].message.content == "You said: hello"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi \ud800"}]}),
        (
            "/v1/messages",
            {"max_tokens": 9, "system": "\udfff", "messages": [{"role": "user", "content": "x"}]},
        ),  # noqa: E501
        ("/v1/loops", {"title": "t", "metadata": {"k": "\udc00"}}),
    ],
)
def test_a_lone_surrogate_is_a_400_in_the_protocols_shape(
    gateway: Gateway, model: ScriptedModel, path: str, body: dict[str, object]
) -> None:
    # json.dumps escapes a lone surrogate as \ud800, as JavaScript's JSON.stringify does.
    response = httpx.post(
        gateway.url + path,
        content=json.dumps(body),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "lone UTF-16 surrogate" in error["message"]
    assert error["type"] == "invalid_request_error"
    _nothing_ran(gateway, model)


def test_a_coerced_type_is_refused(oai: openai.OpenAI, model: ScriptedModel) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        oai.chat.completions.create(
            model="sonnet",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"stream": 0},
        )
    assert refused.value.param == "stream"
    assert model.conversation_requests() == []


def test_a_wrong_base_url_is_not_reported_as_a_missing_model(gateway: Gateway) -> None:
    # What pydantic-ai and others do when the base URL lacks /v1.
    hi = [{"role": "user", "content": "hi"}]
    no_v1 = openai.OpenAI(base_url=gateway.url, api_key="x", max_retries=0)
    with no_v1, pytest.raises(openai.NotFoundError) as route:
        no_v1.chat.completions.create(model="sonnet", messages=hi)  # type: ignore[arg-type]
    assert route.value.code == "route_not_found"
    assert "base URL" in route.value.message
    right = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    with right, pytest.raises(openai.NotFoundError) as model:
        right.chat.completions.create(model="gpt-9", messages=hi)  # type: ignore[arg-type]
    assert model.value.code == "model_not_found"
    extra = anthropic.Anthropic(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    with extra, pytest.raises(anthropic.NotFoundError) as ant_route:
        extra.messages.create(model="sonnet", max_tokens=9, messages=hi)  # type: ignore[arg-type]
    assert "Invalid URL (POST /v1/v1/messages)" in str(ant_route.value)


def test_a_wrong_method_names_the_allowed_ones(gateway: Gateway) -> None:
    response = httpx.put(gateway.url + "/v1/chat/completions", timeout=10)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"
