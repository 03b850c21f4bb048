"""The OpenAPI document says what each route answers, and what the routes answer matches it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from ccgate.app import create_app
from ccgate.config import load_settings
from tests.test_app import FakeRunner

pytestmark = pytest.mark.unit

ADMIN_KEY = "admin-key-for-openapi-tests-0123456789abcdef"


@pytest.fixture
def runner() -> FakeRunner:
    return FakeRunner()


@pytest.fixture
async def client(tmp_path: Path, runner: FakeRunner) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings({"data_dir": tmp_path / "data", "admin_key": ADMIN_KEY}, {})
    app = create_app(settings, runner=runner)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c,
    ):
        yield c


@pytest.fixture
async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get("/openapi.json")).json()
    return body


def responses(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    found: dict[str, Any] = document["paths"][path][method]["responses"]
    return found


def schema_of(document: dict[str, Any], method: str, path: str, status: int, kind: str) -> Any:
    return responses(document, method, path)[str(status)]["content"][kind]["schema"]


def validate(document: dict[str, Any], schema: Any, instance: Any) -> None:
    """Validate ``instance`` against ``schema`` with the document's components resolvable."""
    jsonschema.validate(instance, {**schema, "components": document.get("components", {})})


def sse_events(text: str) -> list[dict[str, str]]:
    """Parse an SSE body as schemathesis does: ``event`` (``message`` if none) and ``data``."""
    events: list[dict[str, str]] = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if "data" in fields:
            events.append({"event": fields.get("event", "message"), "data": fields["data"]})
    return events


def validate_stream(document: dict[str, Any], schema: dict[str, Any], text: str) -> list[str]:
    """Check each event against the stream's documented events; return the event names."""
    names: list[str] = []
    for event in sse_events(text):
        matches = []
        for branch in schema["anyOf"]:
            props = branch["properties"]
            if props["event"]["const"] != event["event"]:
                continue
            data = props["data"]
            if "const" in data:
                matches.append(data["const"] == event["data"])
                continue
            try:
                validate(document, data["contentSchema"], json.loads(event["data"]))
                matches.append(True)
            except (ValueError, jsonschema.ValidationError):
                matches.append(False)
        assert any(matches), f"undocumented event {event}"
        names.append(event["event"])
    return names


# --- what the document declares ---------------------------------------------------------------


async def test_every_operation_declares_the_statuses_any_route_answers(
    document: dict[str, Any],
) -> None:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            declared = set(operation["responses"])
            assert {"400", "413", "500"} <= declared, (method, path)
            assert "422" not in declared
            if (method, path) != ("get", "/health"):
                assert "401" in declared, (method, path)
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")) and path != "/health" and path != "/health/auth":
                    assert list(response["content"]) == ["application/json"], (method, path)
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/v1/chat/completions"),
        ("post", "/v1/messages"),
        ("post", "/v1/messages/count_tokens"),
        ("get", "/v1/models/{model_id}"),
        ("post", "/v1/loops"),
        ("post", "/admin/keys"),
    ],
)
async def test_routes_that_resolve_a_model_declare_404(
    document: dict[str, Any], method: str, path: str
) -> None:
    response = responses(document, method, path)["404"]
    assert "model_not_found" in response["description"]


async def test_streams_and_metrics_declare_their_content_types(document: dict[str, Any]) -> None:
    for path in ("/v1/chat/completions", "/v1/messages"):
        assert set(responses(document, "post", path)["200"]["content"]) == {
            "application/json",
            "text/event-stream",
        }
    for method, path in (
        ("post", "/v1/loops/{loop_id}/messages"),
        ("get", "/v1/loops/{loop_id}/events"),
    ):  # noqa: E501
        assert list(responses(document, method, path)["200"]["content"]) == ["text/event-stream"]
    assert list(responses(document, "get", "/metrics")["200"]["content"]) == ["text/plain"]
    error = schema_of(document, "post", "/v1/messages", 404, "application/json")
    assert error["properties"]["type"] == {"const": "error"}


# --- what the routes answer matches it ----------------------------------------------------------

CHAT = {"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {**CHAT, "max_tokens": 50}


async def test_chat_answers_match_the_document(
    client: httpx.AsyncClient, document: dict[str, Any]
) -> None:
    path = "/v1/chat/completions"
    plain = await client.post(path, json=CHAT)
    validate(document, schema_of(document, "post", path, 200, "application/json"), plain.json())
    streamed = await client.post(
        path, json={**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    )
    stream = schema_of(document, "post", path, 200, "text/event-stream")
    assert validate_stream(document, stream, streamed.text)[-1] == "message"
    assert streamed.text.rstrip().endswith("data: [DONE]")


async def test_messages_answers_match_the_document(
    client: httpx.AsyncClient, document: dict[str, Any]
) -> None:
    path = "/v1/messages"
    plain = await client.post(path, json=MESSAGES)
    validate(document, schema_of(document, "post", path, 200, "application/json"), plain.json())
    streamed = await client.post(path, json={**MESSAGES, "stream": True})
    stream = schema_of(document, "post", path, 200, "text/event-stream")
    names = validate_stream(document, stream, streamed.text)
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert "content_block_delta" in names


async def test_models_and_errors_match_the_document(
    client: httpx.AsyncClient, document: dict[str, Any]
) -> None:
    listed = await client.get("/v1/models")
    validate(
        document, schema_of(document, "get", "/v1/models", 200, "application/json"), listed.json()
    )  # noqa: E501
    one = await client.get("/v1/models/sonnet")
    path = "/v1/models/{model_id}"
    validate(document, schema_of(document, "get", path, 200, "application/json"), one.json())
    missing = await client.get("/v1/models/gpt-9")
    validate(document, schema_of(document, "get", path, 404, "application/json"), missing.json())
    refused = await client.post("/v1/messages", json={"model": "sonnet"})
    schema = schema_of(document, "post", "/v1/messages", 400, "application/json")
    validate(document, schema, refused.json())
    loop = await client.get("/v1/loops/loop_nothing")
    schema = schema_of(document, "get", "/v1/loops/{loop_id}", 404, "application/json")
    validate(document, schema, loop.json())
    metrics = await client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
