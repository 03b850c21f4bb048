"""Bad input never costs a turn, a connection or a 500 (fake runner, loopback ASGI only)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_unit_app import FakeRunner, assert_anthropic_error, assert_openai_error

from ccgate.app import create_app
from ccgate.config import load_settings

ADMIN_KEY = "admin-key-for-input-tests-0123456789abcdef"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"


@pytest.fixture
def runner() -> FakeRunner:
    return FakeRunner()


@asynccontextmanager
async def serve(tmp_path: Path, runner: Any, **flags: Any) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings({"data_dir": tmp_path / "data", "admin_key": ADMIN_KEY, **flags}, {})
    app = create_app(settings, runner=runner)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway.test"
        ) as client,
    ):
        yield client


@pytest.fixture
async def client(tmp_path: Path, runner: FakeRunner) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(tmp_path, runner) as c:
        yield c


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "sonnet", "messages": [{"role": "user", "content": "hi"}], **extra}


def messages(**extra: Any) -> dict[str, Any]:
    return {
        "model": "sonnet",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi"}],
    } | (extra)


def raw(body: Any) -> bytes:
    """Return ``body`` as JSON bytes with lone surrogates escaped, as a JavaScript client sends."""
    return json.dumps(body).encode()


def assert_loop_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "code", "message"}
    error: dict[str, Any] = body["error"]
    return error


# --- 404 and 405 --------------------------------------------------------------------------------


async def test_405_names_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/sessions")
    assert_openai_error(response, 405)
    assert response.headers["allow"] == "DELETE, GET"
    response = await client.get(MESSAGES)
    assert assert_anthropic_error(response, 405)["type"] == "invalid_request_error"
    assert response.headers["allow"] == "POST"
    response = await client.put("/v1/loops")
    assert assert_loop_error(response, 405)["code"] == "method_not_allowed"
    assert response.headers["allow"] == "GET, POST"
    response = await client.request("TRACE", "/health")
    assert response.status_code == 405 and response.headers["allow"] == "GET"


async def test_a_missing_route_does_not_answer_like_a_missing_model(
    client: httpx.AsyncClient,
) -> None:
    route = assert_openai_error(await client.post("/chat/completions", json=chat()), 404)
    model = assert_openai_error(await client.post(CHAT, json=chat(model="gpt-9")), 404)
    assert (route["code"], model["code"]) == ("route_not_found", "model_not_found")
    assert "Invalid URL (POST /chat/completions)" in route["message"]
    assert "base URL" in route["message"] and "model" not in route["message"]
    error = assert_anthropic_error(await client.post(MESSAGES + "/nothing", json={}), 404)
    assert error["type"] == "not_found_error" and "Invalid URL" in error["message"]
    error = assert_loop_error(await client.get("/v1/loops/a/b/c"), 404)
    assert error["code"] == "route_not_found"


# --- anything unexpected ------------------------------------------------------------------------


class CrashingRunner(FakeRunner):
    """A runner whose status report fails once ``armed``, as a bug would (``/health`` asks)."""

    armed = False

    def pool_status(self) -> dict[str, object]:
        if self.armed:
            raise RuntimeError("a bug")
        return {}


async def test_an_unexpected_error_is_a_500_in_the_protocols_shape(tmp_path: Path) -> None:
    runner = CrashingRunner()
    async with serve(tmp_path, runner) as client:
        runner.armed = True
        error = assert_openai_error(await client.get("/health"), 500)
    assert error["type"] == "server_error"
    assert "a bug" not in error["message"] and "log" in error["message"]
