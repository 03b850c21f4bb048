"""Nothing leaks over real HTTP: rebinding and other origins, /metrics readers, crashes, errors.

Every test runs a real ccgate; only the last one runs the Claude Code CLI.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from ccgate.access.keys import hash_key
from ccgate.demo import ScriptedModel
from ccgate.logs import JSONFormatter
from tests.gateway_testing import Gateway

pytestmark = pytest.mark.cli

ADMIN_KEY = "admin-HpBcZIbcabB0RBaSqtXebJ0BFc5lWNH6HoHu5P0yZ6s"
SHARED_KEY = "shared-g4JMEYN_SS1ICd_6gd7_z90RPPuBwvrCdjRTLxJdqjc"
METRICS_TOKEN = "metrics-35Mt3_LYvQPCu-OpuXyNK0RIuUhzSYv1H_barekYGto"
COUNT: dict[str, Any] = {
    "model": "sonnet",
    "max_tokens": 10,
    "messages": [{"role": "user", "content": "hi"}],
}


def _port(gateway: Gateway) -> int:
    return int(gateway.url.rsplit(":", 1)[1])


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


# --- DNS rebinding: the Host header ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "shape"),
    [
        ("GET", "/health", "openai"),
        ("GET", "/v1/sessions", "openai"),
        ("POST", "/v1/chat/completions", "openai"),
        ("POST", "/v1/messages", "anthropic"),
        ("POST", "/v1/loops", "loops"),
        ("DELETE", "/v1/sessions", "openai"),
    ],
)
def test_a_rebinding_host_is_refused_in_the_protocols_shape(
    gateway: Gateway, method: str, path: str, shape: str
) -> None:
    body = {**COUNT, "title": "t"} if method == "POST" else None
    response = httpx.request(
        method,
        gateway.url + path,
        headers={"host": f"evil.example:{_port(gateway)}"},
        json=body,
        timeout=30,
    )
    assert response.status_code == 421, response.text
    error = response.json()["error"]
    assert "evil.example" in error["message"] and "allowed_hosts" in error["message"]
    if shape == "anthropic":
        assert response.json()["type"] == "error"
        assert error["type"] == "invalid_request_error"
    else:
        assert error["code"] == "host_not_allowed"
    assert response.headers["x-should-retry"] == "false"


def test_nothing_happens_for_a_rebinding_host(gateway: Gateway) -> None:
    evil = {"host": f"attacker.example:{_port(gateway)}"}
    made = httpx.post(gateway.url + "/v1/loops", json={"title": "x"}, headers=evil, timeout=30)
    assert made.status_code == 421
    listed = httpx.get(gateway.url + "/v1/loops", timeout=30)
    assert listed.status_code == 200 and listed.json()["data"] == []


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "LOCALHOST", "[::1]"])
def test_loopback_names_are_served_with_any_port(gateway: Gateway, name: str) -> None:
    for host in (name, f"{name}:{_port(gateway)}", f"{name}:1"):
        response = httpx.get(gateway.url + "/health", headers={"host": host}, timeout=30)
        assert response.status_code == 200, (host, response.text)


def test_allowed_hosts_serves_more_names(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = make_gateway(allowed_hosts="gw.example.com")
    ok = httpx.get(gateway.url + "/health", headers={"host": "gw.example.com:443"}, timeout=30)
    assert ok.status_code == 200
    other = httpx.get(gateway.url + "/health", headers={"host": "gw2.example.com"}, timeout=30)
    assert other.status_code == 421


# --- browsers of other origins ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/messages/count_tokens"),
        ("POST", "/v1/loops"),
        ("DELETE", "/v1/sessions"),
        ("GET", "/v1/sessions"),
        ("GET", "/v1/usage"),
        ("GET", "/metrics"),
    ],
)
@pytest.mark.parametrize("origin", ["http://evil.example", "https://evil.example:8787", "null"])
def test_a_page_of_another_origin_is_refused(
    gateway: Gateway, method: str, path: str, origin: str
) -> None:
    body = {**COUNT, "title": "t"} if method == "POST" else None
    response = httpx.request(
        method, gateway.url + path, headers={"origin": origin}, json=body, timeout=30
    )
    assert response.status_code == 403, response.text
    assert "another origin" in response.text
    assert "access-control-allow-origin" not in response.headers


def test_a_cors_preflight_is_never_granted(gateway: Gateway) -> None:
    preflight = {"access-control-request-method": "POST", "access-control-request-headers": "x"}
    for origin in ("http://evil.example", f"http://localhost:{_port(gateway)}"):
        response = httpx.options(
            gateway.url + "/v1/chat/completions",
            headers={"origin": origin, **preflight},
            timeout=30,
        )
        assert response.status_code >= 400, (origin, response.status_code)
        assert not [h for h in response.headers if h.startswith("access-control-allow")]


def test_own_and_loopback_origins_and_clients_without_one_are_served(gateway: Gateway) -> None:
    own = f"http://127.0.0.1:{_port(gateway)}"
    for headers in ({"origin": own}, {"origin": "http://localhost:5173"}, {}):
        response = httpx.post(
            gateway.url + "/v1/messages/count_tokens", json=COUNT, headers=headers, timeout=30
        )
        assert response.status_code == 200, (headers, response.text)
    with anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0) as ant:
        assert ant.messages.count_tokens(**{k: v for k, v in COUNT.items() if k != "max_tokens"})
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0) as oai:
        assert oai.models.list().data


def test_a_cross_site_request_without_origin_is_refused_but_a_link_is_followed(
    gateway: Gateway,
) -> None:
    image = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors"}
    refused = httpx.get(gateway.url + "/health/auth", headers=image, timeout=30)
    assert refused.status_code == 403
    link = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"}
    assert httpx.get(gateway.url + "/health", headers=link, timeout=30).status_code == 200
    same = {"sec-fetch-site": "same-origin", "sec-fetch-mode": "cors"}
    assert httpx.get(gateway.url + "/v1/sessions", headers=same, timeout=30).status_code == 200


# --- who reads /metrics -----------------------------------------------------------------------


def _metrics(gateway: Gateway, key: str | None) -> httpx.Response:
    headers = _bearer(key) if key is not None else {}
    return httpx.get(gateway.url + "/metrics", headers=headers, timeout=30)


def test_metrics_are_open_with_auth_mode_none(gateway: Gateway) -> None:
    response = _metrics(gateway, None)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "ccgate_turns_active" in response.text


def test_metrics_readers_with_auth_mode_shared(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = make_gateway(
        auth_mode="shared", api_key=SHARED_KEY, admin_key=ADMIN_KEY, metrics_token=METRICS_TOKEN
    )
    key: str | None
    for key in (SHARED_KEY, ADMIN_KEY, METRICS_TOKEN):
        assert _metrics(gateway, key).status_code == 200
    for key in (None, "wrong", SHARED_KEY + "x"):
        response = _metrics(gateway, key)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
    # The token reads /metrics and nothing else.
    models = httpx.get(gateway.url + "/v1/models", headers=_bearer(METRICS_TOKEN), timeout=30)
    assert models.status_code == 401
    admin = httpx.get(gateway.url + "/admin/keys", headers=_bearer(METRICS_TOKEN), timeout=30)
    assert admin.status_code == 401


def test_metrics_readers_with_auth_mode_multi(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = make_gateway(auth_mode="multi", admin_key=ADMIN_KEY, metrics_token=METRICS_TOKEN)
    made = httpx.post(
        gateway.url + "/admin/keys", headers=_bearer(ADMIN_KEY), json={"name": "bot"}, timeout=30
    )
    client = made.json()["key"]
    key: str | None
    for key in (ADMIN_KEY, METRICS_TOKEN):
        assert _metrics(gateway, key).status_code == 200
    refused = _metrics(gateway, client)
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "metrics_not_allowed"
    assert "admin_key or metrics_token" in error["message"]
    for key in (None, "ccg_unknown"):
        assert _metrics(gateway, key).status_code == 401
    without_token = make_gateway(auth_mode="multi", admin_key=ADMIN_KEY, port=0)
    assert _metrics(without_token, METRICS_TOKEN).status_code == 401


def test_metrics_are_documented_as_text(gateway: Gateway) -> None:
    schema = httpx.get(gateway.url + "/openapi.json", timeout=30).json()
    responses = schema["paths"]["/metrics"]["get"]["responses"]
    assert set(responses["200"]["content"]) == {"text/plain"}


# --- a crash is logged once, without values --------------------------------------------------


def test_a_crash_is_logged_once_and_without_values(
    make_gateway: Callable[..., Gateway],
    model: ScriptedModel,
    data_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = make_gateway(auth_mode="multi", admin_key=ADMIN_KEY)
    made = httpx.post(
        gateway.url + "/admin/keys", headers=_bearer(ADMIN_KEY), json={"name": "bot"}, timeout=30
    )
    raw = made.json()["key"]
    # The keys' table goes away under the gateway: looking a key up now fails in SQL.
    with sqlite3.connect(data_dir / "ccgate.db") as db:
        db.execute("ALTER TABLE api_keys RENAME TO api_keys_gone")
    caplog.set_level(logging.INFO)
    caplog.clear()
    listing = httpx.get(gateway.url + "/v1/models", headers=_bearer(raw), timeout=30)
    counting = httpx.post(
        gateway.url + "/v1/messages/count_tokens", headers=_bearer(raw), json=COUNT, timeout=30
    )
    for response in (listing, counting):
        assert response.status_code == 500, response.text
        text = response.text
        assert "internal error" in text and "api_keys" not in text and "SELECT" not in text
    assert listing.json()["error"]["type"] == "server_error"  # each in its protocol's shape
    assert counting.json()["error"]["type"] == "api_error"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage().split(" ", 1)[0] for r in errors] == ["request_crashed"] * 2, [
        r.getMessage()[:200] for r in errors
    ]
    lines = [JSONFormatter().format(r) for r in errors]
    for line in lines:
        record: dict[str, Any] = json.loads(line)
        assert record["statement"] == "SELECT"
        assert record["error"] == "OperationalError"
        assert "Traceback" in record["exception"]
        assert raw not in line and hash_key(raw) not in line


# --- errors name no address -------------------------------------------------------------------


def test_an_upstream_error_reaches_the_client_without_its_address(
    oai: openai.OpenAI, ant: anthropic.Anthropic
) -> None:
    words = "dial tcp 10.9.8.7:4000: connect: connection refused (http://10.9.8.7:4000/v1)"
    content = f'hi [[demo: error=400 message="{words}"]]'
    with pytest.raises(anthropic.BadRequestError) as refused:
        ant.messages.create(
            model="haiku", max_tokens=50, messages=[{"role": "user", "content": content}]
        )
    with pytest.raises(openai.BadRequestError) as also:
        oai.chat.completions.create(model="haiku", messages=[{"role": "user", "content": content}])
    for error in (refused.value, also.value):
        message = str(error)
        assert "connect: connection refused" in message, message
        assert "10.9.8.7" not in message and "4000" not in message, message
