"""The demo server over HTTP, driven by the official ``anthropic`` SDK."""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic
import httpx
import httpx2
import pytest

from ccgate.demo import DemoServer, Reply, ScriptedModel, ToolUse

pytestmark = pytest.mark.server

USER: list[anthropic.types.MessageParam] = [{"role": "user", "content": "hello there"}]


def _text(message: anthropic.types.Message) -> str:
    """Return the text of ``message``'s first block, which must be text."""
    block = message.content[0]
    assert isinstance(block, anthropic.types.TextBlock)
    return block.text


async def collect(client: anthropic.AsyncAnthropic, **kwargs: Any) -> list[Any]:
    """Stream a request and return its raw events."""
    params: dict[str, Any] = {"model": "demo", "max_tokens": 1000, "messages": USER}
    params.update(kwargs)
    events = []
    async with client.messages.stream(**params) as stream:
        async for event in stream:
            events.append(event)
    return events


@pytest.mark.asyncio
async def test_echo_non_streamed(client: anthropic.AsyncAnthropic, model: ScriptedModel) -> None:
    message = await client.messages.create(model="demo-1", max_tokens=100, messages=USER)
    assert message.content[0].type == "text"
    assert _text(message) == "You said: hello there"
    assert (message.model, message.stop_reason) == ("demo-1", "end_turn")
    assert message.usage.input_tokens == 2 and message.usage.output_tokens == 5
    [recorded] = model.model_requests()
    assert recorded.body["messages"] == USER
    headers = recorded.headers
    assert headers.get("x-api-key") == "demo" or headers.get("authorization") == "Bearer demo"


@pytest.mark.asyncio
async def test_stream_in_chunks_with_delay(
    client: anthropic.AsyncAnthropic, model: ScriptedModel
) -> None:
    model.script(Reply(text="one two three four", chunks=4, delay=0.05))
    started = time.monotonic()
    events = await collect(client)
    elapsed = time.monotonic() - started
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    texts = [e.delta.text for e in events if e.type == "content_block_delta"]
    assert len(texts) == 4 and "".join(texts) == "one two three four"
    assert elapsed >= 0.15


@pytest.mark.asyncio
async def test_raw_wire_order_includes_ping(server: DemoServer) -> None:
    payload = {"model": "m", "max_tokens": 50, "stream": True, "messages": USER}
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{server.url}/v1/messages", json=payload)
    names = [line[7:] for line in response.text.splitlines() if line.startswith("event: ")]
    assert names == [
        "message_start", "ping", "content_block_start", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop",
    ]  # fmt: skip


@pytest.mark.asyncio
async def test_thinking_streamed_and_not(client: anthropic.AsyncAnthropic) -> None:
    text = 'think [[demo: thinking="let me think" chunks=3]]'
    events = await collect(client, messages=[{"role": "user", "content": text}])
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    assert [d.type for d in deltas] == ["thinking_delta"] * 3 + ["signature_delta"] + [
        "text_delta"
    ] * 3
    message = await client.messages.create(
        model="m", max_tokens=100, messages=[{"role": "user", "content": text}]
    )
    thinking, answer = message.content
    assert thinking.type == "thinking" and thinking.thinking == "let me think"
    assert thinking.signature
    assert answer.type == "text" and answer.text == "You said: think"


@pytest.mark.asyncio
async def test_omitted_thinking_display_keeps_only_the_signature(
    client: anthropic.AsyncAnthropic,
) -> None:
    text = 'think [[demo: thinking="let me think" chunks=3]]'
    omitted: Any = {"type": "adaptive", "display": "omitted"}
    messages: Any = [{"role": "user", "content": text}]
    events = await collect(client, messages=messages, thinking=omitted)
    deltas = [e.delta.type for e in events if e.type == "content_block_delta"]
    assert deltas == ["signature_delta"] + ["text_delta"] * 3
    message = await client.messages.create(
        model="m", max_tokens=100, messages=messages, thinking=omitted
    )
    thinking, answer = message.content
    assert thinking.type == "thinking" and thinking.thinking == "" and thinking.signature
    assert answer.type == "text" and answer.text == "You said: think"


@pytest.mark.asyncio
async def test_parallel_tool_uses_from_directives(client: anthropic.AsyncAnthropic) -> None:
    text = 'go [[demo: tool=get_weather input={"city": "Paris"} tool=get_time]]'
    async with client.messages.stream(
        model="m", max_tokens=100, messages=[{"role": "user", "content": text}]
    ) as stream:
        partials = [e async for e in stream if e.type == "content_block_delta"]
        message = await stream.get_final_message()
    assert message.stop_reason == "tool_use"
    uses = [(b.name, b.input) for b in message.content if b.type == "tool_use"]
    assert uses == [("get_weather", {"city": "Paris"}), ("get_time", {})]
    assert sum(d.delta.type == "input_json_delta" for d in partials) >= 3
    assert all(b.id.startswith("toolu_") for b in message.content if b.type == "tool_use")


@pytest.mark.asyncio
async def test_scripted_tool_use_keeps_given_id(
    client: anthropic.AsyncAnthropic, model: ScriptedModel
) -> None:
    model.script(Reply(text="calling", tool_uses=[ToolUse("t", {"q": 1}, id="toolu_x")]))
    message = await client.messages.create(model="m", max_tokens=100, messages=USER)
    assert [b.type for b in message.content] == ["text", "tool_use"]
    call = message.content[1]
    assert isinstance(call, anthropic.types.ToolUseBlock) and call.id == "toolu_x"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("status", "error_class", "error_type"),
    [
        (401, anthropic.AuthenticationError, "authentication_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
async def test_errors_raise_the_sdk_exception(
    client: anthropic.AsyncAnthropic,
    model: ScriptedModel,
    status: int,
    error_class: type[anthropic.APIStatusError],
    error_type: str,
) -> None:
    model.script(Reply(error_status=status), Reply(error_status=status))
    with pytest.raises(error_class) as caught:
        await client.messages.create(model="m", max_tokens=10, messages=USER)
    assert caught.value.status_code == status
    assert caught.value.body == {"type": "error", "error": {"type": error_type, "message": (
        f"demo: scripted {status} {error_type}")}}  # fmt: skip
    if status == 429:
        assert caught.value.response.headers["retry-after"] == "1"
    with pytest.raises(error_class):
        await collect(client)


@pytest.mark.asyncio
async def test_directive_error_then_success_with_sdk_retries(server: DemoServer) -> None:
    text = "retry me [[demo: error=529 times=1]]"
    async with anthropic.AsyncAnthropic(base_url=server.url, api_key="k", max_retries=2) as sdk:
        message = await sdk.messages.create(
            model="m", max_tokens=100, messages=[{"role": "user", "content": text}]
        )
    assert _text(message) == "You said: retry me"
    assert len(server.model.model_requests()) == 2


@pytest.mark.asyncio
async def test_cut_stream_ends_without_message_stop(
    client: anthropic.AsyncAnthropic, model: ScriptedModel
) -> None:
    model.script(Reply(text="abcdefgh", chunks=8, cut_after_chunks=3))
    seen: list[str] = []
    # The SDK surfaces a mid-stream close as its transport's protocol error.
    with pytest.raises((anthropic.APIConnectionError, httpx.HTTPError, httpx2.HTTPError)):
        async with client.messages.stream(model="m", max_tokens=100, messages=USER) as stream:
            async for event in stream:
                seen.append(event.type)
    assert seen.count("content_block_delta") <= 3
    assert "message_stop" not in seen


@pytest.mark.asyncio
async def test_stall_delays_the_answer(
    client: anthropic.AsyncAnthropic, model: ScriptedModel
) -> None:
    model.script(Reply(stall=0.3), Reply(stall=0.3))
    started = time.monotonic()
    await client.messages.create(model="m", max_tokens=100, messages=USER)
    assert time.monotonic() - started >= 0.3
    with pytest.raises(anthropic.APITimeoutError):
        await client.messages.create(model="m", max_tokens=100, messages=USER, timeout=0.1)


@pytest.mark.asyncio
async def test_stop_sequences(client: anthropic.AsyncAnthropic, model: ScriptedModel) -> None:
    model.script(Reply(text="alpha STOP beta END"), Reply(text="alpha STOP beta END"))
    message = await client.messages.create(
        model="m", max_tokens=100, messages=USER, stop_sequences=["END", "STOP"]
    )
    assert _text(message) == "alpha "
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "STOP")
    events = await collect(client, stop_sequences=["END"])
    final = [e for e in events if e.type == "message_delta"][0]
    assert (final.delta.stop_reason, final.delta.stop_sequence) == ("stop_sequence", "END")


@pytest.mark.asyncio
async def test_max_tokens_truncates(client: anthropic.AsyncAnthropic, model: ScriptedModel) -> None:
    model.script(Reply(text="x" * 40))
    message = await client.messages.create(model="m", max_tokens=2, messages=USER)
    assert _text(message) == "x" * 8
    assert message.stop_reason == "max_tokens"


@pytest.mark.asyncio
async def test_count_tokens_and_other_paths_are_recorded(
    client: anthropic.AsyncAnthropic, server: DemoServer, model: ScriptedModel
) -> None:
    counted = await client.messages.count_tokens(model="m", messages=USER)
    assert counted.input_tokens == 2
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.head("/api/hello")).status_code == 200
        missing = await http.get("/v1/nope")
    assert missing.status_code == 404 and missing.json()["type"] == "error"
    assert [(r.method, r.path) for r in model.requests] == [
        ("POST", "/v1/messages/count_tokens"), ("HEAD", "/api/hello"), ("GET", "/v1/nope"),
    ]  # fmt: skip
    assert model.model_requests() == []


def test_thread_server_serves_sync_clients(thread_server: DemoServer, model: ScriptedModel) -> None:
    model.script(Reply(text="from a thread", usage={"output_tokens": 42}))
    with anthropic.Anthropic(base_url=thread_server.url, api_key="k", max_retries=0) as sdk:
        message = sdk.messages.create(model="m", max_tokens=100, messages=USER)
    assert _text(message) == "from a thread"
    assert message.usage.output_tokens == 42


def test_bad_body_is_a_400(thread_server: DemoServer) -> None:
    response = httpx.post(f"{thread_server.url}/v1/messages", content=b"{not json")
    assert response.status_code == 400
    assert json.loads(response.text)["error"]["type"] == "invalid_request_error"
