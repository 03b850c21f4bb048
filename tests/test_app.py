"""The app's front doors and error handling with a fake runner (no CLI, loopback ASGI only)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from ccgate.app import create_app
from ccgate.config import load_settings
from ccgate.engine.events import (
    AgentEvent,
    ErrorKind,
    TextDelta,
    ThinkingDelta,
    TurnEnd,
    TurnError,
    TurnStarted,
    Usage,
)
from ccgate.engine.toolbox import ToolResultBox
from ccgate.engine.turn import TurnRequest
from ccgate.testing import ScriptedRunner

pytestmark = pytest.mark.unit

API_KEY = "client-key-SHOULD-NOT-LEAK-0123456789"
UPSTREAM_KEY = "upstream-key-SHOULD-NOT-LEAK-0123456789"
ADMIN_KEY = "admin-key-SHOULD-NOT-LEAK-0123456789"


def ok_script(text: str = "Hello") -> list[AgentEvent]:
    return [
        TurnStarted("sonnet", cold_start=False),
        ThinkingDelta("hmm", signature="sig"),
        *(TextDelta(c) for c in (text[:2], text[2:])),
        Usage(input_tokens=11, output_tokens=2),
        TurnEnd(),
    ]


class FakeRunner(ScriptedRunner):
    """The shipped scripted runner, playing ``ok_script()`` unless a test sets another."""

    def __init__(self) -> None:
        super().__init__(ok_script())


Factory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def runner() -> FakeRunner:
    return FakeRunner()


@pytest.fixture
def make_client(tmp_path: Path, runner: FakeRunner) -> Factory:
    """Return a factory: an httpx client to a fresh app (inside its lifespan) with settings."""

    @asynccontextmanager
    async def make(**flags: Any) -> AsyncIterator[httpx.AsyncClient]:
        settings = load_settings({"data_dir": tmp_path / "data", **flags}, {})
        app = create_app(settings, runner=runner)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://localhost"
            ) as client,
        ):
            yield client
        assert runner.closed

    return make


@pytest.fixture
async def client(make_client: Factory) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client() as c:
        yield c


CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "sonnet", "messages": [{"role": "user", "content": "hi"}], **extra}


def messages_body(**extra: Any) -> dict[str, Any]:
    return {
        "model": "sonnet",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
        **extra,
    }


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in response.text
    error: dict[str, Any] = body["error"]
    return error


def assert_anthropic_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["type"] == "error"
    assert set(body["error"]) >= {"type", "message"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in response.text
    error: dict[str, Any] = body["error"]
    return error


def sse_data(text: str) -> list[Any]:
    out: list[Any] = []
    for block in text.split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                payload = line[len("data: ") :]
                out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if "event" in lines:
            out.append((lines["event"], json.loads(lines["data"])))
    return out


# --- happy paths ----------------------------------------------------------------------------


async def test_chat_completion(client: httpx.AsyncClient, runner: FakeRunner) -> None:
    response = await client.post(CHAT, json=chat_body(stop="END", max_tokens=9))
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "Hello"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 2
    (turn,) = runner.turns
    assert turn.model == "claude-sonnet-5-5"
    assert turn.max_tokens == 9
    assert turn.last.text() == "hi"
    assert runner.closed_runs == 1


async def test_messages(client: httpx.AsyncClient) -> None:
    response = await client.post(MESSAGES, json=messages_body())
    assert response.status_code == 200
    body = response.json()
    assert body["type"] == "message"
    assert [b["type"] for b in body["content"]] == ["thinking", "text"]
    assert body["content"][1]["text"] == "Hello"
    assert body["stop_reason"] == "end_turn"


async def test_default_model_used(client: httpx.AsyncClient, runner: FakeRunner) -> None:
    body = chat_body()
    del body["model"]
    response = await client.post(CHAT, json=body)
    assert response.status_code == 200
    assert response.json()["model"] == "sonnet"


async def test_chat_stream(client: httpx.AsyncClient, runner: FakeRunner) -> None:
    response = await client.post(
        CHAT, json=chat_body(stream=True, stream_options={"include_usage": True})
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = sse_data(response.text)
    assert chunks[-1] == "[DONE]"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1] if c["choices"]
    )
    assert text == "Hello"
    assert chunks[-2]["usage"]["completion_tokens"] == 2
    assert runner.closed_runs == 1


async def test_messages_stream(client: httpx.AsyncClient) -> None:
    response = await client.post(MESSAGES, json=messages_body(stream=True))
    assert response.status_code == 200
    names = [name for name, _ in sse_events(response.text)]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]


async def test_openai_sdk_through_app(tmp_path: Path, runner: FakeRunner) -> None:
    settings = load_settings({"data_dir": tmp_path / "data"}, {})
    app = create_app(settings, runner=runner)
    async with (
        app.router.lifespan_context(app),
        openai.AsyncOpenAI(
            base_url="http://localhost/v1",
            api_key="unused",
            max_retries=0,
            http_client=httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app)),
        ) as sdk,
    ):
        reply = await sdk.chat.completions.create(
            model="sonnet", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content == "Hello"
        stream = await sdk.chat.completions.create(
            model="sonnet", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        assert "".join(parts) == "Hello"
        models = await sdk.models.list()
        assert "claude-sonnet-4-5" in [m.id for m in models.data]


async def test_anthropic_sdk_through_app(tmp_path: Path, runner: FakeRunner) -> None:
    settings = load_settings({"data_dir": tmp_path / "data"}, {})
    app = create_app(settings, runner=runner)
    async with (
        app.router.lifespan_context(app),
        anthropic.AsyncAnthropic(
            base_url="http://localhost",
            api_key="unused",
            max_retries=0,
            http_client=httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app)),
        ) as sdk,
    ):
        message = await sdk.messages.create(
            model="sonnet", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        )
        assert message.content[-1].type == "text"
        async with sdk.messages.stream(
            model="sonnet", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            final = await stream.get_final_message()
        assert [b.type for b in final.content] == ["thinking", "text"]
        runner.script = [TurnStarted("sonnet", False), TurnError("overloaded", "busy")]
        with pytest.raises(anthropic.InternalServerError) as info:
            await sdk.messages.create(
                model="sonnet", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
            )
        assert info.value.status_code == 529


# --- malformed requests ----------------------------------------------------------------------


BAD_BODIES: list[tuple[str, bytes | str]] = [
    ("malformed_json", b'{"model": "sonnet", "messages": ['),
    ("json_array", b"[1, 2, 3]"),
    ("json_string", b'"hello"'),
    ("empty_body", b""),
    ("wrong_types", json.dumps({"model": "sonnet", "messages": "hi", "max_tokens": "many"})),
    ("empty_messages", json.dumps({"model": "sonnet", "messages": [], "max_tokens": 5})),
    (
        "bad_role",
        json.dumps(
            {"model": "sonnet", "messages": [{"role": "x", "content": "c"}], "max_tokens": 5}
        ),
    ),
]


@pytest.mark.parametrize(("name", "content"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
async def test_bad_body_openai(client: httpx.AsyncClient, name: str, content: bytes | str) -> None:
    response = await client.post(
        CHAT, content=content, headers={"content-type": "application/json"}
    )
    error = assert_openai_error(response, 400)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(("name", "content"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
async def test_bad_body_anthropic(
    client: httpx.AsyncClient, name: str, content: bytes | str
) -> None:
    response = await client.post(
        MESSAGES, content=content, headers={"content-type": "application/json"}
    )
    error = assert_anthropic_error(response, 400)
    assert error["type"] == "invalid_request_error"


async def test_malformed_json_message(client: httpx.AsyncClient) -> None:
    response = await client.post(
        CHAT, content=b"{nope", headers={"content-type": "application/json"}
    )
    assert "JSON" in assert_openai_error(response, 400)["message"]


async def test_json_array_message(client: httpx.AsyncClient) -> None:
    response = await client.post(
        MESSAGES, content=b"[]", headers={"content-type": "application/json"}
    )
    assert "object" in assert_anthropic_error(response, 400)["message"]


async def test_missing_max_tokens(client: httpx.AsyncClient) -> None:
    body = messages_body()
    del body["max_tokens"]
    error = assert_anthropic_error(await client.post(MESSAGES, json=body), 400)
    assert "max_tokens" in error["message"]


async def test_wrong_type_names_param(client: httpx.AsyncClient) -> None:
    error = assert_openai_error(await client.post(CHAT, json=chat_body(max_tokens="x")), 400)
    assert error["param"] == "max_tokens"


async def test_meaning_changer_refused(client: httpx.AsyncClient, runner: FakeRunner) -> None:
    error = assert_openai_error(await client.post(CHAT, json=chat_body(n=3)), 400)
    assert error["param"] == "n"
    assert runner.turns == []


async def test_last_message_not_user(client: httpx.AsyncClient) -> None:
    body = messages_body(
        messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    )
    assert_anthropic_error(await client.post(MESSAGES, json=body), 400)


@pytest.mark.parametrize(("path", "shape"), [(CHAT, "openai"), (MESSAGES, "anthropic")])
async def test_oversized_body(
    make_client: Factory, runner: FakeRunner, path: str, shape: str
) -> None:
    big = "x" * 4096
    body = messages_body(messages=[{"role": "user", "content": big}])
    async with make_client(max_body_bytes=1024) as client:
        response = await client.post(path, json=body)
    if shape == "openai":
        assert assert_openai_error(response, 413)["type"] == "invalid_request_error"
    else:
        assert assert_anthropic_error(response, 413)["type"] == "request_too_large"
    assert runner.turns == []


@pytest.mark.parametrize(("path", "shape"), [(CHAT, "openai"), (MESSAGES, "anthropic")])
async def test_oversized_chunked_body(
    make_client: Factory, runner: FakeRunner, path: str, shape: str
) -> None:
    payload = json.dumps(messages_body(messages=[{"role": "user", "content": "x" * 4096}]))

    async def chunks() -> AsyncIterator[bytes]:
        data = payload.encode()
        for i in range(0, len(data), 512):
            yield data[i : i + 512]

    async with make_client(max_body_bytes=1024) as client:
        response = await client.post(
            path, content=chunks(), headers={"content-type": "application/json"}
        )
    if shape == "openai":
        assert_openai_error(response, 413)
    else:
        assert assert_anthropic_error(response, 413)["type"] == "request_too_large"
    assert runner.turns == []


async def test_unknown_route(client: httpx.AsyncClient) -> None:
    assert_openai_error(await client.get("/v1/nothing-here"), 404)
    error = assert_anthropic_error(await client.post("/v1/messages/nothing-here", json={}), 404)
    assert error["type"] == "not_found_error"


async def test_wrong_method(client: httpx.AsyncClient) -> None:
    assert_openai_error(await client.get(CHAT), 405)


async def test_unknown_model(client: httpx.AsyncClient, runner: FakeRunner) -> None:
    error = assert_openai_error(await client.post(CHAT, json=chat_body(model="gpt-4o")), 404)
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    error = assert_anthropic_error(
        await client.post(MESSAGES, json=messages_body(model="gpt-4o")), 404
    )
    assert error["type"] == "not_found_error"
    assert_openai_error(await client.get("/v1/models/gpt-4o"), 404)
    assert runner.turns == []


# --- turn errors -----------------------------------------------------------------------------


TURN_ERRORS: list[tuple[ErrorKind, int, int, str, str]] = [
    # kind, anthropic status, openai status, anthropic type, openai type
    ("authentication", 401, 401, "authentication_error", "authentication_error"),
    ("billing", 402, 402, "billing_error", "insufficient_quota"),
    ("rate_limit", 429, 429, "rate_limit_error", "rate_limit_error"),
    ("overloaded", 529, 503, "overloaded_error", "server_error"),
    ("invalid_request", 400, 400, "invalid_request_error", "invalid_request_error"),
    ("timeout", 504, 504, "api_error", "timeout"),
    ("cli_crashed", 502, 502, "api_error", "server_error"),
    ("upstream", 502, 502, "api_error", "server_error"),
]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(
    ("kind", "ant_status", "oai_status", "ant_type", "oai_type"),
    TURN_ERRORS,
    ids=[t[0] for t in TURN_ERRORS],
)
async def test_turn_error_before_output(
    client: httpx.AsyncClient,
    runner: FakeRunner,
    stream: bool,
    kind: ErrorKind,
    ant_status: int,
    oai_status: int,
    ant_type: str,
    oai_type: str,
) -> None:
    runner.script = [
        TurnStarted("sonnet", False),
        TurnError(kind, f"{kind} happened", retry_after=5 if kind == "rate_limit" else None),
    ]
    response = await client.post(MESSAGES, json=messages_body(stream=stream))
    assert assert_anthropic_error(response, ant_status)["type"] == ant_type
    if kind == "rate_limit":
        assert response.headers["retry-after"] == "5"
        assert response.headers["x-should-retry"] == "true"
    response = await client.post(CHAT, json=chat_body(stream=stream))
    assert assert_openai_error(response, oai_status)["type"] == oai_type
    assert runner.closed_runs == 2


async def test_upstream_auth_error_tells_how_to_log_in(
    client: httpx.AsyncClient, runner: FakeRunner
) -> None:
    runner.script = [TurnError("authentication", "invalid x-api-key")]
    error = assert_anthropic_error(await client.post(MESSAGES, json=messages_body()), 401)
    assert "claude /login" in error["message"]
    assert "CCGATE_UPSTREAM_API_KEY" in error["message"]


async def test_turn_error_mid_stream_openai(client: httpx.AsyncClient, runner: FakeRunner) -> None:
    runner.script = [
        TurnStarted("sonnet", False),
        TextDelta("partial "),
        TextDelta("answer"),
        TurnError("overloaded", "went away"),
    ]
    response = await client.post(CHAT, json=chat_body(stream=True))
    assert response.status_code == 200
    chunks = sse_data(response.text)
    assert chunks[-1] == "[DONE]"
    assert chunks[-2]["error"]["type"] == "server_error"
    assert "went away" in chunks[-2]["error"]["message"]
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks[:-2] if c.get("choices")
    )
    assert text == "partial answer"
    assert not any(c.get("choices") and c["choices"][0]["finish_reason"] for c in chunks[:-1])
    assert runner.closed_runs == 1


async def test_turn_error_mid_stream_anthropic(
    client: httpx.AsyncClient, runner: FakeRunner
) -> None:
    runner.script = [
        TurnStarted("sonnet", False),
        TextDelta("partial"),
        TurnError("rate_limit", "slow down"),
    ]
    response = await client.post(MESSAGES, json=messages_body(stream=True))
    assert response.status_code == 200
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names[-1] == "error"
    assert "message_stop" not in names
    assert events[-1][1]["error"]["type"] == "rate_limit_error"
    assert runner.closed_runs == 1


class BlockingRunner(FakeRunner):
    """A runner whose turns wait until ``go`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()
        self.started = asyncio.Event()

    async def play(self, events: list[AgentEvent]) -> AsyncGenerator[AgentEvent, None]:
        try:
            yield TurnStarted("sonnet", False)
            self.started.set()
            await self.go.wait()
            for event in ok_script()[1:]:
                yield event
        finally:
            self.closed_runs += 1


@pytest.mark.parametrize(("path", "body"), [(CHAT, chat_body()), (MESSAGES, messages_body())])
async def test_busy_gateway_answers_429(tmp_path: Path, path: str, body: dict[str, Any]) -> None:
    runner = BlockingRunner()
    settings = load_settings(
        {"data_dir": tmp_path / "data", "max_concurrent": 1, "max_queue": 0}, {}
    )
    app = create_app(settings, runner=runner)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
        ) as client,
    ):
        first = asyncio.create_task(client.post(path, json=body))
        await asyncio.wait_for(runner.started.wait(), 5)
        busy = await client.post(path, json=body)
        assert busy.status_code == 429
        assert int(busy.headers["retry-after"]) >= 1
        assert busy.headers["x-should-retry"] == "true"
        if path == CHAT:
            assert assert_openai_error(busy, 429)["type"] == "rate_limit_error"
        else:
            assert assert_anthropic_error(busy, 429)["type"] == "rate_limit_error"
        runner.go.set()
        assert (await asyncio.wait_for(first, 5)).status_code == 200
        assert len(runner.turns) == 1


# --- auth ---------------------------------------------------------------------------------------


@pytest.fixture
async def shared(make_client: Factory) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(auth_mode="shared", api_key=API_KEY) as c:
        yield c


async def test_shared_missing_key(shared: httpx.AsyncClient, runner: FakeRunner) -> None:
    assert assert_openai_error(await shared.post(CHAT, json=chat_body()), 401)["type"] == (
        "authentication_error"
    )
    error = assert_anthropic_error(await shared.post(MESSAGES, json=messages_body()), 401)
    assert error["type"] == "authentication_error"
    assert_openai_error(await shared.get("/v1/models"), 401)
    assert runner.turns == []


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": "Bearer wrong-key-0123456789abcdef"},
        {"x-api-key": "wrong-key-0123456789abcdef"},
        {"authorization": f"Basic {API_KEY}"},
        {"authorization": f"Bearer {API_KEY}x"},
    ],
)
async def test_shared_wrong_key(
    shared: httpx.AsyncClient, runner: FakeRunner, headers: dict[str, str]
) -> None:
    response = await shared.post(CHAT, json=chat_body(), headers=headers)
    assert_openai_error(response, 401)
    assert API_KEY not in response.text
    assert runner.turns == []


@pytest.mark.parametrize(
    "headers", [{"authorization": f"Bearer {API_KEY}"}, {"x-api-key": API_KEY}]
)
async def test_shared_right_key(shared: httpx.AsyncClient, headers: dict[str, str]) -> None:
    assert (await shared.post(CHAT, json=chat_body(), headers=headers)).status_code == 200
    assert (await shared.post(MESSAGES, json=messages_body(), headers=headers)).status_code == 200
    assert (await shared.get("/v1/models", headers=headers)).status_code == 200


# --- health, models, count_tokens, openapi --------------------------------------------------


class CountingRunner(FakeRunner):
    def run(
        self, turn: TurnRequest, box: ToolResultBox | None = None
    ) -> AsyncGenerator[AgentEvent, None]:
        raise AssertionError("/health must never start a turn")


async def test_health_has_no_secrets_and_runs_nothing(tmp_path: Path) -> None:
    runner = CountingRunner()
    settings = load_settings(
        {
            "data_dir": tmp_path / "data",
            "auth_mode": "shared",
            "api_key": API_KEY,
            "admin_key": ADMIN_KEY,
            "upstream_api_key": UPSTREAM_KEY,
            "upstream_url": "https://user:hunter2pass@upstream.example/base?token=qs-secret",
        },
        {},
    )
    app = create_app(settings, runner=runner)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
        ) as client,
    ):
        response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    for secret in (API_KEY, ADMIN_KEY, UPSTREAM_KEY, "hunter2pass", "qs-secret"):
        assert secret not in response.text
    assert runner.turns == []


async def test_health_open_in_shared_mode(shared: httpx.AsyncClient) -> None:
    response = await shared.get("/health")
    assert response.status_code == 200
    assert API_KEY not in response.text


async def test_models_list(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert {"sonnet", "opus", "haiku", "claude-sonnet-4-5"} <= set(ids)
    assert all(m["object"] == "model" for m in body["data"])
    current = [m["id"] for m in body["data"] if m["current"]]
    assert ids[: len(current)] == current  # Claude Code's current models come first
    assert "claude-sonnet-5-5" in current and "claude-sonnet-4-5" not in current


async def test_models_list_for_anthropic_clients(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models", headers={"anthropic-version": "2023-06-01"})
    body = response.json()
    assert body["has_more"] is False
    assert body["first_id"] == body["data"][0]["id"]
    assert all(m["type"] == "model" and m["created_at"].endswith("Z") for m in body["data"])
    one = await client.get("/v1/models/sonnet", headers={"anthropic-version": "2023-06-01"})
    assert one.json()["id"] == "claude-sonnet-5-5"


@pytest.mark.parametrize(
    ("name", "model_id"),
    [
        ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("sonnet", "claude-sonnet-5-5"),
        ("anthropic/claude-sonnet-4.5", "claude-sonnet-4-5"),
    ],
)
async def test_model_get(client: httpx.AsyncClient, name: str, model_id: str) -> None:
    response = await client.get(f"/v1/models/{name}")
    assert response.status_code == 200
    assert response.json()["id"] == model_id


async def test_count_tokens(client: httpx.AsyncClient, runner: FakeRunner) -> None:
    body = {"model": "sonnet", "messages": [{"role": "user", "content": "hello " * 100}]}
    response = await client.post("/v1/messages/count_tokens", json=body)
    assert response.status_code == 200
    assert response.json()["input_tokens"] > 50
    assert runner.turns == []
    body["model"] = "gpt-4o"
    response = await client.post("/v1/messages/count_tokens", json=body)
    assert_anthropic_error(response, 404)
    response = await client.post("/v1/messages/count_tokens", json={"model": "sonnet"})
    assert_anthropic_error(response, 400)


async def test_openapi(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {"/v1/chat/completions", "/v1/messages", "/health"} <= set(paths)


@pytest.mark.parametrize("path", ["/metrics", "/health/auth", "/openapi.json", "/docs"])
async def test_operations_routes_need_the_key_in_shared_mode(
    shared: httpx.AsyncClient, path: str
) -> None:
    assert (await shared.get(path)).status_code == 401
    assert (await shared.get(path, headers={"x-api-key": API_KEY})).status_code == 200


class SlowStartRunner(FakeRunner):
    """A runner whose turn is silent for a while before it answers."""

    async def play(self, events: list[AgentEvent]) -> AsyncGenerator[AgentEvent, None]:
        await asyncio.sleep(0.6)
        async for event in super().play(events):
            yield event


async def test_a_silent_start_longer_than_the_first_event_wait_is_still_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stream commits to 200 after the wait; the turn itself must go on, not be cut.
    monkeypatch.setattr("ccgate.api.answer.FIRST_EVENT_WAIT", 0.1)
    runner = SlowStartRunner()
    settings = load_settings({"data_dir": tmp_path / "data"}, {})
    app = create_app(settings, runner=runner)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
        ) as client,
    ):
        response = await client.post(CHAT, json=chat_body(stream=True))
    chunks = sse_data(response.text)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert text == "Hello"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
