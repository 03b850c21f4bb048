"""Conversations continue as one Claude Code session, seen by the model as real turns."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from ccgate.demo import DemoServer, ScriptedModel
from tests.gateway_testing import Gateway, wait_for_no_processes, wait_until

pytestmark = pytest.mark.cli


def _turns(model: ScriptedModel) -> list[tuple[str, str]]:
    """Return the last conversation request's user/assistant messages as (role, text)."""
    body = model.conversation_requests()[-1].body
    out = []
    for message in body["messages"]:
        if message["role"] == "system":
            continue
        content = message["content"]
        if isinstance(content, str):
            text = content
        else:
            text = "".join(
                b.get("text", "")
                for b in content
                if b.get("type") == "text" and not b.get("text", "").startswith("<system-reminder>")
            )
        out.append((message["role"], text))
    return out


def _chat(gateway: Gateway, messages: list[dict[str, str]], **headers: str) -> httpx.Response:
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "sonnet", "messages": messages},
        headers=headers,
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response


@pytest.mark.parametrize("with_header", [True, False])
def test_three_openai_turns_reach_the_model_as_alternating_messages(
    gateway: Gateway, model: ScriptedModel, with_header: bool
) -> None:
    headers = {"X-Session-Id": "conv-openai"} if with_header else {}
    history: list[dict[str, str]] = []
    keys = set()
    for n in range(1, 4):
        history.append({"role": "user", "content": f"question {n}"})
        response = _chat(gateway, history, **headers)
        keys.add(response.headers["x-session-id"])
        answer = response.json()["choices"][0]["message"]["content"]
        assert answer == f"You said: question {n}"
        history.append({"role": "assistant", "content": answer})
    assert len(keys) == 1
    if with_header:
        assert keys == {"conv-openai"}
    assert _turns(model) == [
        ("user", "question 1"),
        ("assistant", "You said: question 1"),
        ("user", "question 2"),
        ("assistant", "You said: question 2"),
        ("user", "question 3"),
    ]
    # Continued, not rebuilt: every request after the first sent only the new message.
    sessions = {r.headers.get("x-claude-code-session-id") for r in model.conversation_requests()}
    assert len(sessions) == 1


@pytest.mark.parametrize("with_header", [True, False])
def test_three_anthropic_turns_continue_one_session(
    gateway: Gateway, model: ScriptedModel, with_header: bool
) -> None:
    extra = {"X-Session-Id": "conv-ant"} if with_header else {}
    client = anthropic.Anthropic(
        base_url=gateway.url, api_key="x", max_retries=0, default_headers=extra
    )
    history: list[anthropic.types.MessageParam] = []
    keys = set()
    with client:
        for n in range(1, 4):
            history.append({"role": "user", "content": f"ask {n}"})
            raw = client.messages.with_raw_response.create(
                model="sonnet",
                max_tokens=100,
                messages=history,
            )
            keys.add(raw.headers["x-session-id"])
            message = raw.parse()
            history.append({"role": "assistant", "content": message.content})
    assert len(keys) == 1
    assert _turns(model)[-1] == ("user", "ask 3")
    assert [role for role, _ in _turns(model)] == ["user", "assistant"] * 2 + ["user"]


def test_streamed_turns_continue_too(gateway: Gateway, model: ScriptedModel) -> None:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0) as oai:
        history: list[ChatCompletionMessageParam] = [{"role": "user", "content": "s1"}]
        text = "".join(
            c.choices[0].delta.content or ""
            for c in oai.chat.completions.create(model="sonnet", messages=history, stream=True)
            if c.choices
        )
        history += [{"role": "assistant", "content": text}, {"role": "user", "content": "s2"}]
        list(oai.chat.completions.create(model="sonnet", messages=history, stream=True))
    assert _turns(model) == [("user", "s1"), ("assistant", "You said: s1"), ("user", "s2")]
    sessions = {r.headers.get("x-claude-code-session-id") for r in model.conversation_requests()}
    assert len(sessions) == 1


def test_edited_history_starts_a_fresh_session(gateway: Gateway, model: ScriptedModel) -> None:
    first = _chat(gateway, [{"role": "user", "content": "hello"}])
    key = first.headers["x-session-id"]
    edited = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "Something else entirely"},
        {"role": "user", "content": "next"},
    ]
    second = _chat(gateway, edited)
    assert second.headers["x-session-id"] != key
    assert _turns(model) == [
        ("user", "hello"),
        ("assistant", "Something else entirely"),
        ("user", "next"),
    ]


def test_a_retried_request_does_not_duplicate_the_turn(
    gateway: Gateway, model: ScriptedModel
) -> None:
    history = [{"role": "user", "content": "one"}]
    answer = _chat(gateway, history, **{"X-Session-Id": "retry"}).json()
    history += [
        {"role": "assistant", "content": answer["choices"][0]["message"]["content"]},
        {"role": "user", "content": "two"},
    ]
    _chat(gateway, history, **{"X-Session-Id": "retry"})
    _chat(gateway, history, **{"X-Session-Id": "retry"})  # the client retries
    assert _turns(model) == [("user", "one"), ("assistant", "You said: one"), ("user", "two")]


def test_sessions_are_namespaced_by_client(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    local = make_gateway()
    _chat(local, [{"role": "user", "content": "secret A"}], **{"X-Session-Id": "same"})
    local.stop()
    key = "a-long-shared-key-for-tests-Nee_VbScO42cdv-xjatJ454"
    shared = make_gateway(auth_mode="shared", api_key=key)
    auth = {"authorization": f"Bearer {key}"}
    assert httpx.get(shared.url + "/v1/sessions").status_code == 401
    assert httpx.get(shared.url + "/v1/sessions", headers=auth).json()["data"] == []
    assert httpx.get(shared.url + "/v1/sessions/same", headers=auth).status_code == 404
    _chat(shared, [{"role": "user", "content": "secret B"}], **auth, **{"X-Session-Id": "same"})
    # The shared client's "same" is a new conversation: the model never sees secret A.
    assert _turns(model) == [("user", "secret B")]


def test_sessions_api(gateway: Gateway, model: ScriptedModel) -> None:
    _chat(gateway, [{"role": "user", "content": "a"}], **{"X-Session-Id": "k1"})
    _chat(gateway, [{"role": "user", "content": "b"}], **{"x-opencode-session": "k2"})
    listing = httpx.get(gateway.url + "/v1/sessions").json()["data"]
    assert [s["key"] for s in listing] == ["k2", "k1"]
    one = httpx.get(gateway.url + "/v1/sessions/k1").json()
    assert one["turns"] == 1 and one["model"] == "claude-sonnet-5-5"
    assert one["usage"]["output_tokens"] > 0
    assert 0 < one["ttl_remaining_seconds"] <= 86400
    assert httpx.delete(gateway.url + "/v1/sessions/k1").json()["deleted"] is True
    assert httpx.get(gateway.url + "/v1/sessions/k1").status_code == 404  # gone, not archived
    assert httpx.delete(gateway.url + "/v1/sessions/k1").status_code == 404
    assert httpx.delete(gateway.url + "/v1/sessions").json()["deleted"] == 1
    assert httpx.get(gateway.url + "/v1/sessions").json()["data"] == []


def test_body_session_id_is_a_key(gateway: Gateway, model: ScriptedModel) -> None:
    response = httpx.post(
        gateway.url + "/v1/messages",
        json={
            "model": "sonnet",
            "max_tokens": 50,
            "session_id": "from-body",
            "messages": [{"role": "user", "content": "hi"}],
        },
        timeout=60,
    )
    assert response.headers["x-session-id"] == "from-body"


def test_sessions_survive_a_restart(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    first = make_gateway()
    history = [{"role": "user", "content": "before restart"}]
    reply = _chat(first, history, **{"X-Session-Id": "durable"}).json()
    first.stop()
    second = make_gateway()
    history += [
        {"role": "assistant", "content": reply["choices"][0]["message"]["content"]},
        {"role": "user", "content": "after restart"},
    ]
    _chat(second, history, **{"X-Session-Id": "durable"})
    assert _turns(model) == [
        ("user", "before restart"),
        ("assistant", "You said: before restart"),
        ("user", "after restart"),
    ]
    sessions = {r.headers.get("x-claude-code-session-id") for r in model.conversation_requests()}
    assert len(sessions) == 1


def test_idle_sessions_expire_with_their_transcripts(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, data_dir: Path
) -> None:
    gateway = make_gateway(session_ttl=2)
    _chat(gateway, [{"role": "user", "content": "short-lived"}], **{"X-Session-Id": "brief"})
    transcripts = list((data_dir / "projects").rglob("*.jsonl"))
    assert transcripts
    assert wait_until(
        lambda: httpx.get(gateway.url + "/v1/sessions").json()["data"] == [], within=20
    )
    assert not any(path.exists() for path in transcripts)


def test_sessions_command_lists_and_removes(
    gateway: Gateway, model: ScriptedModel, data_dir: Path
) -> None:
    _chat(gateway, [{"role": "user", "content": "cli"}], **{"X-Session-Id": "from-cli-test"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCGATE_")}
    base = [sys.executable, "-m", "ccgate", "sessions"]
    listed = subprocess.run(
        [*base, "list", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert "from-cli-test" in listed.stdout
    removed = subprocess.run(
        [*base, "rm", "from-cli-test", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert removed.returncode == 0, removed.stderr
    assert httpx.get(gateway.url + "/v1/sessions").json()["data"] == []


def _serve(demo_url: str, data_dir: Path, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCGATE_")}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ccgate",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--upstream-url",
            demo_url,
            "--upstream-api-key",
            "x",
            "--upstream-retries",
            "0",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_session_survives_kill_9(demo: DemoServer, model: ScriptedModel, data_dir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    history = [{"role": "user", "content": "remember this"}]
    proc = _serve(demo.url, data_dir, port)
    try:
        assert wait_until(lambda: _up(url), within=30)
        first = httpx.post(
            url + "/v1/chat/completions",
            json={"model": "sonnet", "messages": history},
            timeout=60,
        ).json()
        proc.kill()
        proc.wait()
        assert wait_for_no_processes(data_dir) == []
        proc = _serve(demo.url, data_dir, port)
        assert wait_until(lambda: _up(url), within=30)
        history += [
            {"role": "assistant", "content": first["choices"][0]["message"]["content"]},
            {"role": "user", "content": "after kill -9"},
        ]
        second = httpx.post(
            url + "/v1/chat/completions",
            json={"model": "sonnet", "messages": history},
            timeout=60,
        )
        assert second.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert _turns(model) == [
        ("user", "remember this"),
        ("assistant", "You said: remember this"),
        ("user", "after kill -9"),
    ]
    sessions = {r.headers.get("x-claude-code-session-id") for r in model.conversation_requests()}
    assert len(sessions) == 1, "the conversation continued its session, it was not rebuilt"
