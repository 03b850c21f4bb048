"""Upstream failures reach clients classified, in each protocol's shape, with actionable text."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from ccgate.demo import ScriptedModel
from tests.gateway_testing import Gateway

pytestmark = pytest.mark.cli


def _ask(ant: anthropic.Anthropic, directive: str, *, stream: bool = False) -> None:
    ant.messages.create(
        model="sonnet",
        max_tokens=100,
        stream=stream,
        messages=[{"role": "user", "content": f"hi [[demo: {directive}]]"}],
    )


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("directive", "status", "error_type", "needle"),
    [
        ("error=401", 401, "authentication_error", "claude /login"),
        ("error=402", 402, "billing_error", "plan or credit"),
        ("error=429", 429, "rate_limit_error", "rate limit"),
        ("error=529", 529, "overloaded_error", "overloaded"),
        ("error=500", 502, "api_error", "upstream failed"),
    ],
)
def test_anthropic_errors_are_classified(
    ant: anthropic.Anthropic,
    model: ScriptedModel,
    directive: str,
    status: int,
    error_type: str,
    needle: str,
    stream: bool,
) -> None:
    with pytest.raises(anthropic.APIStatusError) as caught:
        _ask(ant, directive, stream=stream)
    assert caught.value.status_code == status
    assert caught.value.body["error"]["type"] == error_type  # type: ignore[index]
    assert needle in caught.value.message
    assert "demo-upstream-key" not in caught.value.message


@pytest.mark.parametrize(
    ("directive", "exc", "status", "retry"),
    [
        ("error=401", openai.AuthenticationError, 401, "false"),
        ("error=429", openai.RateLimitError, 429, "true"),
        ("error=529", openai.InternalServerError, 503, "true"),
    ],
)
def test_openai_errors_are_classified(
    oai: openai.OpenAI, directive: str, exc: type[openai.APIStatusError], status: int, retry: str
) -> None:
    with pytest.raises(exc) as caught:
        oai.chat.completions.create(
            model="sonnet", messages=[{"role": "user", "content": f"x [[demo: {directive}]]"}]
        )
    assert caught.value.status_code == status
    assert caught.value.response.headers["x-should-retry"] == retry
    assert isinstance(caught.value.body, dict)
    assert set(caught.value.body) == {"message", "type", "param", "code"}


def test_turn_timeout_is_a_504_and_leaves_no_process(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = make_gateway(request_timeout=2)
    with (
        anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0) as ant,
        pytest.raises(anthropic.APIStatusError) as caught,
    ):
        _ask(ant, "stall=60")
    assert caught.value.status_code == 504
    assert "request_timeout" in caught.value.message


def test_error_after_output_goes_in_band(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = make_gateway(request_timeout=8)
    body = {
        "model": "sonnet",
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": "one two three four [[demo: chunks=4 delay=5]]"}],
    }
    with httpx.stream("POST", gateway.url + "/v1/messages", json=body, timeout=30) as response:
        assert response.status_code == 200
        text = response.read().decode()
    assert "text_delta" in text
    assert "event: error" in text
    assert "message_stop" not in text
    chat = {**body, "max_tokens": None}
    del chat["max_tokens"]
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        json=chat,
        timeout=30,
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    payloads = [json.loads(line[6:]) for line in lines if line != "data: [DONE]"]
    assert any(p.get("choices") and p["choices"][0]["delta"].get("content") for p in payloads)
    assert payloads[-1]["error"]["code"] == "turn_timeout"


def test_cli_crash_names_its_exit_code(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, tmp_path: Path
) -> None:
    fake = tmp_path / "claude"
    # It reads its first input line before dying, so the exit code is seen however busy the
    # machine is (a CLI that dies before the SDK writes to it is reported by its last words).
    fake.write_text("#!/bin/sh\nread line\necho 'boom' >&2\nexit 3\n")
    fake.chmod(0o755)
    gateway = make_gateway(cli_path=fake)
    with (
        openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0) as oai,
        pytest.raises(openai.APIStatusError) as caught,
    ):
        oai.chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "cli_crashed"  # type: ignore[index]
    assert "exited with code 3: boom" in caught.value.message


def test_max_tokens_ends_with_length(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    reply = oai.chat.completions.create(
        model="sonnet",
        max_tokens=3,
        messages=[{"role": "user", "content": "please repeat this rather long sentence back"}],
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content == "You said: pl"
    message = ant.messages.create(
        model="sonnet",
        max_tokens=3,
        messages=[{"role": "user", "content": "please repeat this rather long sentence back"}],
    )
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens > 0


def test_a_broken_stream_never_repeats_text(gateway: Gateway, model: ScriptedModel) -> None:
    full = "alpha beta gamma delta"
    body = {
        "model": "sonnet",
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": f'[[demo: cut=2 chunks=4 say="{full}" times=1]]'}],
    }
    with httpx.stream("POST", gateway.url + "/v1/messages", json=body, timeout=60) as response:
        raw = response.read().decode()
    events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: ")]
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    # Either the whole answer once (the CLI recovered before anything was streamed), or
    # the part that arrived followed by an in-band error; never the text twice.
    if events[-1]["type"] == "message_stop":
        assert text == full
    else:
        assert events[-1]["type"] == "error"
        assert full.startswith(text)
