"""Nothing leaks over real HTTP: crashes, errors.

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

from ccgate.demo import ScriptedModel
from ccgate.engine.keys import hash_key
from ccgate.logs import JSONFormatter
from gateway_testing import Gateway

ADMIN_KEY = "admin-HpBcZIbcabB0RBaSqtXebJ0BFc5lWNH6HoHu5P0yZ6s"
SHARED_KEY = "shared-g4JMEYN_SS1ICd_6gd7_z90RPPuBwvrCdjRTLxJdqjc"
METRICS_TOKEN = "metrics-35Mt3_LYvQPCu-OpuXyNK0RIuUhzSYv1H_barekYGto"
COUNT = {"model": "sonnet", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


def _port(gateway: Gateway) -> int:
    return int(gateway.url.rsplit(":", 1)[1])


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


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


@pytest.mark.cli
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
