"""The scripted model's plans: windows that fill, refuse, bill extra usage and roll over."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccgate.claude.binary import find_cli
from ccgate.demo import DemoServer, ScriptedModel
from ccgate.demo.plan import PREFIX, Plans, credential_of

BODY = {"model": "demo", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.unit
def test_windows_fill_warn_refuse_and_roll_over() -> None:
    plans = Plans()
    plans.set("tok", {"step": 0.3, "rollover": 100}, now=1000.0)
    seen = []
    for i in range(5):
        plan = plans.answer("tok", now=1000.0 + i)
        assert plan is not None
        seen.append((plan.headers()[PREFIX + "5h-status"], plan.rejected()))
    assert seen == [
        ("allowed", False),
        ("allowed", False),
        ("allowed_warning", False),
        ("rejected", True),
        ("rejected", True),
    ]
    headers = plans.get("tok").headers()  # type: ignore[union-attr]
    assert headers[PREFIX + "status"] == "rejected"
    assert headers[PREFIX + "representative-claim"] in ("five_hour", "seven_day")
    assert headers[PREFIX + "overage-status"] == "rejected"
    rolled = plans.answer("tok", now=1101.0)  # the short 5-hour window rolled over ...
    assert rolled is not None and rolled.five_hour.utilization == 0.0
    assert int(rolled.headers()[PREFIX + "5h-reset"]) == 1201
    # ... but the 7-day window filled too: still refused, and it says which window.
    assert rolled.rejected()
    assert rolled.headers()[PREFIX + "representative-claim"] == "seven_day"
    plans.set("tok", {"seven_day": {"utilization": 0.2, "reset_in": 50}}, now=1102.0)
    back = plans.answer("tok", now=1103.0)
    assert back is not None and not back.rejected()
    assert back.five_hour.utilization == pytest.approx(0.3)


@pytest.mark.unit
def test_overage_serves_a_full_plan_as_extra_usage() -> None:
    plans = Plans()
    plans.set("tok", {"five_hour": {"utilization": 1.0}, "overage_allowed": True}, now=0.0)
    plan = plans.answer("tok", now=1.0)
    assert plan is not None and not plan.rejected()
    headers = plan.headers()
    assert headers[PREFIX + "status"] == "rejected"
    assert headers[PREFIX + "overage-in-use"] == "true"
    assert plans.answer("other") is None  # no plan, no headers


@pytest.mark.unit
def test_the_credential_is_the_bearer_token_or_the_api_key() -> None:
    assert credential_of({"authorization": "Bearer sk-ant-oat01-x"}) == "sk-ant-oat01-x"
    assert credential_of({"x-api-key": "sk-ant-api03-y"}) == "sk-ant-api03-y"
    assert credential_of({}) is None


@pytest.fixture
async def served(model: ScriptedModel) -> AsyncIterator[tuple[DemoServer, httpx.AsyncClient]]:
    async with DemoServer(model) as server, httpx.AsyncClient(base_url=server.url) as http:
        yield server, http


@pytest.mark.server
async def test_over_http_each_account_gets_its_headers_and_refusals(
    served: tuple[DemoServer, httpx.AsyncClient],
) -> None:
    _, http = served
    set_up = await http.post(
        "/demo/plans", json={"acct-a": {"step": 0.5}, "acct-b": {"refuse_in_stream": True}}
    )
    assert set(set_up.json()) == {"acct-a", "acct-b"}
    a = {"authorization": "Bearer acct-a"}
    first = await http.post("/v1/messages", json=BODY, headers=a)
    assert first.status_code == 200 and first.headers[PREFIX + "5h-utilization"] == "0.50"
    second = await http.post("/v1/messages", json=BODY, headers=a)
    assert second.headers[PREFIX + "5h-utilization"] == "1.00"
    refused = await http.post("/v1/messages", json=BODY, headers=a)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert refused.headers[PREFIX + "status"] == "rejected"
    assert "resets at" in refused.json()["error"]["message"]
    none = await http.post("/v1/messages", json=BODY, headers={"x-api-key": "no-plan"})
    assert not any(k.startswith(PREFIX) for k in none.headers)
    # A refusal inside a 200 stream, then (as Claude Code asks again without a stream) a 429.
    await http.post("/demo/plans", json={"acct-b": {"five_hour": {"utilization": 1.0}}})
    b = {"authorization": "Bearer acct-b"}
    streamed = await http.post("/v1/messages", json={**BODY, "stream": True}, headers=b)
    assert streamed.status_code == 200
    events = [line for line in streamed.text.splitlines() if line.startswith("event: ")]
    assert events == ["event: message_start", "event: error"]
    error = json.loads(streamed.text.split("event: error\ndata: ")[1].split("\n")[0])
    assert error["error"]["type"] == "rate_limit_error"
    again = await http.post("/v1/messages", json=BODY, headers=b)
    assert again.status_code == 429


@pytest.mark.server
async def test_a_stream_error_directive(served: tuple[DemoServer, httpx.AsyncClient]) -> None:
    _, http = served
    body = {
        **BODY,
        "stream": True,
        "messages": [{"role": "user", "content": "x [[demo: stream_error=overloaded_error]]"}],
    }
    streamed = await http.post("/v1/messages", json=body)
    assert streamed.status_code == 200
    assert "event: error" in streamed.text and "overloaded_error" in streamed.text
    assert "message_stop" not in streamed.text


def _cli_stream(server: DemoServer, home: Path, auth: dict[str, str]) -> list[dict[str, Any]]:
    """Run the bundled Claude Code once against ``server``; return its stream-json lines."""
    cli = find_cli(None)
    assert cli is not None
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": server.url,
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        **auth,
    }
    done = subprocess.run(
        [str(cli), "-p", "hi", "--output-format", "stream-json", "--verbose"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.mark.cli
def test_claude_code_reads_the_plan_of_an_oauth_login_only(tmp_path: Path) -> None:
    """The headers are what the real API sends: Claude Code reports them as its
    ``rate_limit_event`` for an OAuth login (and, as with the real API, never for a key)."""
    model = ScriptedModel()
    plan = {"five_hour": {"utilization": 0.9, "reset_in": 4 * 3600}}
    server = DemoServer(model).start_in_thread()
    try:
        httpx.post(server.url + "/demo/plans", json={"oauth-acct": plan, "key-acct": plan})
        oauth = _cli_stream(server, tmp_path / "a", {"CLAUDE_CODE_OAUTH_TOKEN": "oauth-acct"})
        keyed = _cli_stream(server, tmp_path / "b", {"ANTHROPIC_API_KEY": "key-acct"})
    finally:
        server.stop()
    events = [e for e in oauth if e.get("type") == "rate_limit_event"]
    assert events, [e.get("type") for e in oauth]
    info = events[-1]["rate_limit_info"]
    assert info["rateLimitType"] == "five_hour"
    assert info["utilization"] == pytest.approx(0.9)
    assert info["status"] == "allowed_warning"  # 90 % used early in the window
    assert not [e for e in keyed if e.get("type") == "rate_limit_event"]
    assert any(e.get("type") == "result" for e in keyed)
