"""Bad input never costs a turn, a connection or a 500 (fake runner; ASGI, one real server)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccgate.app import create_app
from ccgate.config import load_settings
from ccgate.protocol import strict_json
from tests.gateway_testing import start_gateway
from tests.test_app import FakeRunner, assert_anthropic_error, assert_openai_error

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
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
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


# --- strict JSON ------------------------------------------------------------------------------


@pytest.mark.unit
def test_strict_json_keeps_valid_text() -> None:
    text = '{"a": "\\ud83d\\ude00 caf\\u00e9 日本", "b": [1, 2.5, -0, null, true], "c": {}}'
    assert strict_json.loads(text.encode()) == {
        "a": "😀 café 日本",
        "b": [1, 2.5, 0, None, True],
        "c": {},
    }
    assert strict_json.loads(b'\xef\xbb\xbf{"bom": 1}') == {"bom": 1}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'{"a": "\\ud800"}', "a holds a lone UTF-16 surrogate"),
        (b'{"a": ["ok", "x\\udfff"]}', "a[1] holds a lone UTF-16 surrogate"),
        (b'{"a": "\\udc00\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"\\ud800": 1}', "a key in the body"),
        (b'{"a": NaN}', "NaN is not a JSON number"),
        (b'{"a": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"a": 1e999}', "too large"),
        (b'{"a": ' + b"9" * 401 + b"}", "more than 400 digits"),
        (b'{"a": "\xff"}', "not valid UTF-8"),
        (b'{"a": "\xed\xa0\x80"}', "not valid UTF-8"),
        (b"[" * 65 + b"]" * 65, "nested more than 64"),
        (b"[" * 100_000 + b"]" * 100_000, "nested more than 64"),
    ],
)
def test_strict_json_refuses(body: bytes, needle: str) -> None:
    with pytest.raises(json.JSONDecodeError) as refused:
        strict_json.loads(body)
    assert needle in refused.value.msg


@pytest.mark.unit
def test_strict_json_depth_limit_is_inclusive() -> None:
    assert strict_json.loads(b"[" * 64 + b"]" * 64) is not None


# --- lone surrogates are a 400, in the protocol's shape, before any turn ------------------------


TOOL: dict[str, Any] = {
    "type": "function",
    "function": {"name": "f", "parameters": {"type": "object"}},
}
ANT_TOOL = {"name": "f", "input_schema": {"type": "object"}}
SURROGATE_CASES: list[tuple[str, str, Any]] = [
    ("openai", CHAT, chat(messages=[{"role": "user", "content": "hi \ud800"}])),
    ("openai", CHAT, chat(messages=[{"role": "system", "content": "\udfff"}, *chat()["messages"]])),
    ("openai", CHAT, chat(tools=[{**TOOL, "function": {"name": "f\ud800", "parameters": {}}}])),
    (
        "openai",
        CHAT,
        chat(tools=[{**TOOL, "function": {**TOOL["function"], "description": "\ud800"}}]),
    ),  # noqa: E501
    ("openai", CHAT, chat(model="sonnet\ud800")),
    ("anthropic", MESSAGES, messages(messages=[{"role": "user", "content": "\ud800"}])),
    ("anthropic", MESSAGES, messages(system="be \udc00 brief")),
    ("anthropic", MESSAGES, messages(tools=[{**ANT_TOOL, "description": "\ud800"}])),
    (
        "anthropic",
        MESSAGES + "/count_tokens",
        {"model": "\ud800", "messages": [{"role": "user", "content": "x"}]},
    ),  # noqa: E501
    ("loops", "/v1/loops", {"title": "\ud800"}),
    ("loops", "/v1/loops", {"metadata": {"k": ["\ud800"]}}),
    ("loops", "/v1/loops", {"model": "\ud800"}),
    ("openai", "/admin/keys", {"name": "\ud800"}),
    ("openai", "/admin/keys", {"name": "n", "models": ["\udfff"]}),
]


@pytest.mark.unit
@pytest.mark.parametrize(("shape", "path", "body"), SURROGATE_CASES)
async def test_lone_surrogate_is_refused_with_the_protocols_400(
    client: httpx.AsyncClient, runner: FakeRunner, shape: str, path: str, body: Any
) -> None:
    response = await client.post(
        path, content=raw(body), headers={"content-type": "application/json", **ADMIN}
    )
    if shape == "openai":
        error = assert_openai_error(response, 400)
        assert error["type"] == "invalid_request_error"
    elif shape == "anthropic":
        error = assert_anthropic_error(response, 400)
        assert error["type"] == "invalid_request_error"
    else:
        error = assert_loop_error(response, 400)
        assert error["type"] == "invalid_request_error"
    assert "lone UTF-16 surrogate" in error["message"]
    assert runner.turns == []


@pytest.mark.unit
async def test_lone_surrogate_in_an_admin_update(client: httpx.AsyncClient) -> None:
    made = await client.post("/admin/keys", json={"name": "k"}, headers=ADMIN)
    response = await client.patch(
        f"/admin/keys/{made.json()['id']}",
        content=raw({"name": "\ud800"}),
        headers={"content-type": "application/json", **ADMIN},
    )
    assert "lone UTF-16 surrogate" in assert_openai_error(response, 400)["message"]


@pytest.mark.unit
async def test_non_finite_metadata_is_refused_and_loops_still_list(
    client: httpx.AsyncClient,
) -> None:
    for body in (b'{"metadata": {"a": NaN}}', b'{"metadata": {"a": 1e999}}'):
        response = await client.post(
            "/v1/loops", content=body, headers={"content-type": "application/json"}
        )
        assert_loop_error(response, 400)
    assert (await client.get("/v1/loops")).status_code == 200


@pytest.mark.unit
async def test_deep_nesting_is_a_400(client: httpx.AsyncClient, runner: FakeRunner) -> None:
    deep: Any = "x"
    for _ in range(200):
        deep = {"k": deep}
    response = await client.post("/v1/loops", json={"metadata": deep})
    assert "nested more than" in assert_loop_error(response, 400)["message"]
    response = await client.post(CHAT, json=chat(tools=[{**TOOL, "function": deep}]))
    assert_openai_error(response, 400)
    assert runner.turns == []


@pytest.mark.unit
async def test_every_route_with_a_body_reads_it_as_strict_json(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    checked = 0
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if "requestBody" not in operation:
                continue
            url = path.replace("{", "").replace("}", "")  # any id: the body is read first
            response = await client.request(
                method,
                url,
                content=b'{"x": "\\ud800"}',
                headers={"content-type": "application/json", **ADMIN},
            )
            assert response.status_code == 400, (method, path, response.text)
            assert "lone UTF-16 surrogate" in response.text
            checked += 1
    assert checked >= 8


# --- session keys -------------------------------------------------------------------------------


BAD_KEYS: list[bytes] = [
    "日本語".encode(),
    "😀".encode(),
    "\u202eab".encode(),
    b"caf\xe9",
    b"a\x00b",
    b"a\r\nb",
    b"my session",
    b"a/b",
    b"k" * 257,
]


@pytest.mark.unit
@pytest.mark.parametrize("header", ["X-Session-Id", "x-opencode-session"])
@pytest.mark.parametrize("key", BAD_KEYS, ids=range(len(BAD_KEYS)))
async def test_a_session_key_that_cannot_be_echoed_is_refused_before_the_turn(
    client: httpx.AsyncClient, runner: FakeRunner, header: str, key: bytes
) -> None:
    response = await client.post(CHAT, json=chat(), headers={header.encode(): key})
    error = assert_openai_error(response, 400)
    assert error["code"] == "invalid_session_key"
    assert error["param"] == header
    assert "256" in error["message"] and "A-Z a-z 0-9" in error["message"]
    response = await client.post(MESSAGES, json=messages(), headers={header.encode(): key})
    assert_anthropic_error(response, 400)
    assert runner.turns == []
    usage = (await client.get("/v1/usage")).json()
    assert usage["totals"]["requests"] == 0  # nothing was billed


@pytest.mark.unit
@pytest.mark.parametrize("key", ["日本", "😀", "a\x00b", "line\nbreak", "a" * 257, "x y"])
async def test_a_body_session_id_that_cannot_be_echoed_is_refused(
    client: httpx.AsyncClient, runner: FakeRunner, key: str
) -> None:
    error = assert_openai_error(await client.post(CHAT, json=chat(session_id=key)), 400)
    assert (error["code"], error["param"]) == ("invalid_session_key", "session_id")
    error = assert_anthropic_error(await client.post(MESSAGES, json=messages(session_id=key)), 400)
    assert "session key" in error["message"]
    assert runner.turns == []


@pytest.mark.unit
@pytest.mark.parametrize(
    "key",
    [
        "0b3c1f5e-8a7d-4c21-9e0f-2a6b8c4d1e3f",  # UUID
        "ses_6f1e2d3c4b5a69788776655aBcD",  # opencode
        "01HZX3JQ5V8K2M4N6P7R9S0T1V",  # ULID
        "trip-planner.v2",  # slug
        "user@example.com:chat_1+a=b~c",
        "k" * 256,
    ],
)
async def test_real_client_session_ids_pass_and_are_echoed(
    client: httpx.AsyncClient, runner: FakeRunner, key: str
) -> None:
    response = await client.post(CHAT, json=chat(), headers={"X-Session-Id": key})
    assert response.status_code == 200, response.text
    assert response.headers["x-session-id"] == key
    response = await client.post(MESSAGES, json=messages(session_id=key, messages=[
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "again"}]))  # fmt: skip
    assert response.headers["x-session-id"] == key
    assert (await client.get(f"/v1/sessions/{key}")).json()["key"] == key


# --- types the schema does not allow are not coerced --------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("body", "param"),
    [
        (chat(stream=0), "stream"),
        (chat(stream="true"), "stream"),
        (chat(max_tokens="5"), "max_tokens"),
        (chat(max_tokens=5.0), "max_tokens"),
        (chat(max_tokens=True), "max_tokens"),
        (chat(n="1"), "n"),
        (chat(messages=[{"role": "user", "content": 5}]), "messages.0.content"),
        (chat(stream_options={"include_usage": 1}), "stream_options.include_usage"),
        (chat(session_id=7), "session_id"),
    ],
)
async def test_openai_coercions_are_refused(
    client: httpx.AsyncClient, runner: FakeRunner, body: dict[str, Any], param: str
) -> None:
    error = assert_openai_error(await client.post(CHAT, json=body), 400)
    assert error["param"] is not None and error["param"].startswith(param)
    assert runner.turns == []


@pytest.mark.unit
@pytest.mark.parametrize(
    "body",
    [
        messages(stream=0),
        messages(max_tokens="100"),
        messages(max_tokens=True),
        messages(system=5),
        messages(stop_sequences="x"),
        messages(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]),
    ],
)
async def test_anthropic_coercions_are_refused(
    client: httpx.AsyncClient, runner: FakeRunner, body: dict[str, Any]
) -> None:
    assert_anthropic_error(await client.post(MESSAGES, json=body), 400)
    assert runner.turns == []


@pytest.mark.unit
@pytest.mark.parametrize("body", [{"title": 5}, {"metadata": []}, {"permission_mode": 1}])
async def test_loop_coercions_are_refused(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    assert_loop_error(await client.post("/v1/loops", json=body), 400)


# --- admin keys ---------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    "expires_at", [False, True, 0, 1, "0", "1970-01-02", "2001-01-01T00:00:00Z", "1" * 13]
)
async def test_a_key_created_already_expired_is_refused(
    client: httpx.AsyncClient, expires_at: Any
) -> None:
    response = await client.post(
        "/admin/keys", json={"name": "k", "expires_at": expires_at}, headers=ADMIN
    )
    error = assert_openai_error(response, 400)
    assert error["param"] == "expires_at"
    keys = (await client.get("/admin/keys", headers=ADMIN)).json()["data"]
    assert keys == []


@pytest.mark.unit
async def test_expiry_in_the_past_says_what_to_do(client: httpx.AsyncClient) -> None:
    past = time.time() - 5
    response = await client.post(
        "/admin/keys", json={"name": "k", "expires_at": past}, headers=ADMIN
    )
    error = assert_openai_error(response, 400)
    assert error["code"] == "expiry_in_past"
    assert "in the past" in error["message"] and "null" in error["message"]


@pytest.mark.unit
async def test_a_future_expiry_is_kept_and_an_update_cannot_set_a_past_one(
    client: httpx.AsyncClient,
) -> None:
    made = await client.post(
        "/admin/keys", json={"name": "k", "expires_at": "2999-01-01"}, headers=ADMIN
    )
    assert made.status_code == 201, made.text
    key_id = made.json()["id"]
    response = await client.patch(f"/admin/keys/{key_id}", json={"expires_at": 0}, headers=ADMIN)
    assert assert_openai_error(response, 400)["code"] == "expiry_in_past"
    response = await client.patch(f"/admin/keys/{key_id}", json={"expires_at": None}, headers=ADMIN)
    assert response.json()["expires_at"] is None


@pytest.mark.unit
async def test_quota_limits_beyond_what_is_stored_are_a_400(client: httpx.AsyncClient) -> None:
    for quota in ({"requests_per_day": 2**64}, {"budget_usd_per_month": 1e300}):
        response = await client.post(
            "/admin/keys", json={"name": "k", "quota": quota}, headers=ADMIN
        )
        assert_openai_error(response, 400)


@pytest.mark.unit
@pytest.mark.parametrize("since", ["1" * 400, "9" * 20, "2026-13-45", "nan", "-1", "\x00"])
async def test_usage_times_out_of_range_are_a_400(client: httpx.AsyncClient, since: str) -> None:
    assert_openai_error(await client.get("/v1/usage", params={"since": since}), 400)
    response = await client.get("/admin/usage", params={"until": since}, headers=ADMIN)
    assert_openai_error(response, 400)


@pytest.mark.unit
@pytest.mark.parametrize("since", ["0001-01-01", "2020-02-29T23:59:59.5+05:30", "1700000000.25"])
async def test_usage_takes_any_date(client: httpx.AsyncClient, since: str) -> None:
    assert (await client.get("/v1/usage", params={"since": since})).status_code == 200


# --- 404 and 405 --------------------------------------------------------------------------------


@pytest.mark.unit
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


@pytest.mark.unit
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


@pytest.mark.unit
async def test_an_unexpected_error_is_a_500_in_the_protocols_shape(tmp_path: Path) -> None:
    runner = CrashingRunner()
    async with serve(tmp_path, runner) as client:
        runner.armed = True
        error = assert_openai_error(await client.get("/health"), 500)
    assert error["type"] == "server_error"
    assert "a bug" not in error["message"] and "log" in error["message"]


def _read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response (with a Content-Length) from ``sock``."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        rest += chunk
    buffer[:] = rest[length:]
    return int(lines[0].split()[1]), headers, rest[:length]


@pytest.mark.server
def test_an_unexpected_error_does_not_reset_the_next_request_on_the_connection(
    tmp_path: Path,
) -> None:
    runner = CrashingRunner()
    gateway = start_gateway(load_settings({"data_dir": tmp_path / "data"}, {}), runner)
    try:
        runner.armed = True
        port = int(gateway.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            # Both requests at once: the second is already on the wire when the first fails.
            sock.sendall(
                b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"
                b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\n\r\n"
            )
            buffer = bytearray()
            status, headers, body = _read_response(sock, buffer)
            assert status == 500 and headers.get("connection") != "close"
            assert json.loads(body)["error"]["type"] == "server_error"
            status, _, body = _read_response(sock, buffer)
            assert status == 200 and json.loads(body)["object"] == "list"
    finally:
        gateway.stop()
