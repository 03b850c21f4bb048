"""Claude Code as a client: the real ``claude`` CLI → ccgate → its own CLI → the scripted model.

The client CLI runs as a subprocess with ``ANTHROPIC_BASE_URL`` set to the gateway,
in a home, config dir and working directory of its own. Its requests are recorded
in front of the gateway (``Recorder``); what ccgate's inner CLI sent is the scripted
model's record. The scripted model calls a tool when the prompt carries
``[[demo: tool=NAME input={...}]]`` and answers tool results with
``Tool results: <id>=<text>``, so the client's printed answer shows what the model got.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from ccgate.claude.binary import find_cli
from ccgate.demo import ScriptedModel
from tests.gateway_testing import Exchange, Gateway, Recorder, wait_for_no_processes

pytestmark = pytest.mark.cli

#: A bound on one client run (a tool loop takes a few seconds); a hung client fails the test.
CLIENT_TIMEOUT = 120.0
REMINDER = "<system-reminder>"


@dataclass
class ClaudeClient:
    """The real Claude Code CLI, run as a client of a gateway in directories of its own."""

    binary: Path
    base_url: str
    home: Path
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)

    def environ(self, **extra: str) -> dict[str, str]:
        """Return the client's environment: its own home and config, pointed at the gateway."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "CLAUDE_CONFIG_DIR": str(self.home / ".claude"),
            "ANTHROPIC_BASE_URL": self.base_url,
            "ANTHROPIC_API_KEY": "any-key",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            **self.env,
            **extra,
        }

    def run(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        """Run ``claude ARGS`` in the working directory; kill it (and its children) if it hangs."""
        env = {k: v for k, v in self.environ(**extra).items() if v}
        proc = subprocess.Popen(
            [str(self.binary), *args],
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=CLIENT_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"claude {' '.join(args)} did not end: {out[-500:]} {err[-500:]}")
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture
def claude(tmp_path: Path) -> Iterator[Callable[..., ClaudeClient]]:
    """Return a factory of client CLIs for a gateway; none of their processes outlives the test."""
    binary = find_cli()
    assert binary is not None, "the bundled Claude Code CLI is missing"
    home = tmp_path / "client-home"
    workdir = tmp_path / "client-work"
    (home / ".claude").mkdir(parents=True)
    workdir.mkdir()

    def make(gateway: Gateway, **env: str) -> ClaudeClient:
        # Claude Code searches its tools by default; ccgate refuses that and Claude Code
        # recovers, at the price of refused requests, which this setting spares.
        return ClaudeClient(
            binary, gateway.url, home, workdir, {"ENABLE_TOOL_SEARCH": "false", **env}
        )

    yield make
    left = wait_for_no_processes(home)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"client CLI processes outlived the test: {left}"


def _messages_calls(recorder: Recorder) -> list[Exchange]:
    return [e for e in recorder.exchanges if e.method == "POST" and e.path == "/v1/messages"]


def _user_texts(body: dict[str, Any]) -> list[str]:
    """Return the user's own words in a model request: text blocks that are not reminders."""
    texts: list[str] = []
    for message in body["messages"]:
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if message["role"] == "user":
            texts += [
                b["text"]
                for b in blocks
                if b.get("type") == "text" and b["text"].strip() and REMINDER not in b["text"]
            ]
    return texts


def _cli_session(body: dict[str, Any]) -> str:
    """Return the Claude Code session a model request belongs to (from its metadata)."""
    return str(json.loads(body["metadata"]["user_id"])["session_id"])


def _tool_names(body: dict[str, Any]) -> list[str]:
    return sorted(t["name"] for t in body.get("tools", []))


def test_claude_p_with_its_defaults_asks_claude_opus_5_5(
    make_gateway: Callable[..., Gateway],
    model: ScriptedModel,
    claude: Callable[..., ClaudeClient],
) -> None:
    recorder = Recorder()
    gateway = make_gateway(recorder=recorder)
    client = claude(gateway, ENABLE_TOOL_SEARCH="")  # Claude Code's own defaults
    result = client.run("-p", "hello")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "You said: hello"
    calls = _messages_calls(recorder)
    assert {c.body["model"] for c in calls} == {"claude-opus-5-5"}
    # Its tool search is refused, naming defer_loading; it sends its tools again in full.
    refused = [c for c in calls if c.status != 200]
    assert all(c.status == 400 for c in refused)
    assert any(t.get("defer_loading") for c in refused for t in c.body["tools"])
    answered = calls[-1]
    assert answered.status == 200
    assert not any(t.get("defer_loading") for t in answered.body["tools"])
    # Its environment arrives as an inline system message, accepted as it is.
    assert [m["role"] for m in answered.body["messages"]] == ["user", "system"]
    (inner,) = model.conversation_requests()
    assert inner.body["model"] == "claude-opus-5-5"
    assert _user_texts(inner.body) == ["hello"]
    notes = [b["text"] for b in inner.body["messages"][0]["content"] if REMINDER in b["text"]]
    environment = next(n for n in notes if "# Environment" in n)
    assert f"Primary working directory: {client.workdir}" in environment
    # The client's tools are the model's tools, under their own names.
    assert _tool_names(inner.body) == sorted(t["name"] for t in answered.body["tools"])


@pytest.mark.parametrize(
    ("alias", "model_id"),
    [("sonnet", "claude-sonnet-5-5"), ("opus", "claude-opus-5-5"), ("haiku", "claude-haiku-5-5")],
)
def test_claude_model_aliases_reach_the_model_as_sent(
    make_gateway: Callable[..., Gateway],
    model: ScriptedModel,
    claude: Callable[..., ClaudeClient],
    alias: str,
    model_id: str,
) -> None:
    recorder = Recorder()
    client = claude(make_gateway(recorder=recorder))
    result = client.run("-p", "--model", alias, "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "You said: hi"
    (call,) = _messages_calls(recorder)
    assert (call.status, call.body["model"]) == (200, model_id)
    (inner,) = model.conversation_requests()
    assert inner.body["model"] == model_id


def test_claude_thinking_reaches_the_model_and_its_text_stays_omitted(
    make_gateway: Callable[..., Gateway],
    model: ScriptedModel,
    claude: Callable[..., ClaudeClient],
) -> None:
    recorder = Recorder()
    client = claude(make_gateway(recorder=recorder))
    # The directive spells the thinking with an escape, so the prompt does not hold it.
    prompt = 'ponder [[demo: thinking="\\u0073ecret plan"]]'
    result = client.run("-p", "--output-format", "stream-json", "--verbose", prompt)
    assert result.returncode == 0, result.stderr
    (call,) = _messages_calls(recorder)
    # Claude Code asks for "omitted" (plain -p) or "updates": no thinking text either way.
    assert call.body["thinking"]["type"] == "adaptive"
    assert call.body["thinking"]["display"] in ("omitted", "updates")
    (inner,) = model.conversation_requests()
    assert inner.body["thinking"]["type"] == "adaptive"
    assert inner.body["thinking"]["display"] != "summarized"
    assert inner.body["output_config"] == {"effort": call.body["output_config"]["effort"]}
    blocks = [
        block
        for line in result.stdout.splitlines()
        if (event := json.loads(line)).get("type") == "assistant"
        for block in event["message"]["content"]
    ]
    thinking = [b for b in blocks if b["type"] == "thinking"]
    assert thinking and all(b["thinking"] == "" and b["signature"] for b in thinking)
    assert "secret plan" not in result.stdout
    assert any(b["type"] == "text" and b["text"] == "You said: ponder" for b in blocks)


def test_claude_reads_a_file_of_its_own_for_the_model(
    make_gateway: Callable[..., Gateway],
    model: ScriptedModel,
    claude: Callable[..., ClaudeClient],
) -> None:
    recorder = Recorder()
    client = claude(make_gateway(recorder=recorder))
    notes = client.workdir / "notes.txt"
    notes.write_text("banana-42\n")
    call = json.dumps({"file_path": str(notes)})
    result = client.run(
        "-p", "--allowedTools", "Read", "--", f"read it [[demo: tool=Read input={call}]]"
    )
    assert result.returncode == 0, result.stderr
    assert "banana-42" in result.stdout
    asked, answered = _messages_calls(recorder)
    assert (asked.status, answered.status) == (200, 200)
    (result_block,) = answered.body["messages"][-1]["content"]
    assert result_block["type"] == "tool_result" and "banana-42" in str(result_block["content"])
    first, second = (r.body for r in model.conversation_requests())
    assert "Read" in _tool_names(first) and "Bash" in _tool_names(first)
    (tool_use,) = [b for b in second["messages"][-2]["content"] if b["type"] == "tool_use"]
    assert tool_use["name"] == "Read" and tool_use["input"] == {"file_path": str(notes)}
    (inner_result,) = second["messages"][-1]["content"]
    assert inner_result["tool_use_id"] == tool_use["id"]
    assert "banana-42" in json.dumps(inner_result["content"])
    # The result continued the waiting turn: one Claude Code session, the prompt sent once.
    assert _cli_session(first) == _cli_session(second)
    assert _user_texts(second) == [f"read it [[demo: tool=Read input={call}]]"]


def test_claude_runs_a_command_of_its_own_for_the_model(
    make_gateway: Callable[..., Gateway],
    model: ScriptedModel,
    claude: Callable[..., ClaudeClient],
) -> None:
    client = claude(make_gateway())
    call = json.dumps({"command": "echo cherry-$((3 + 4))", "description": "Say the word"})
    result = client.run(
        "-p", "--allowedTools", "Bash", "--", f"run [[demo: tool=Bash input={call}]]"
    )
    assert result.returncode == 0, result.stderr
    assert "cherry-7" in result.stdout
    first, second = (r.body for r in model.conversation_requests())
    assert "cherry-7" in json.dumps(second["messages"][-1]["content"])
    assert _cli_session(first) == _cli_session(second)


def test_claude_continue_goes_on_in_the_same_session(
    make_gateway: Callable[..., Gateway],
    model: ScriptedModel,
    claude: Callable[..., ClaudeClient],
) -> None:
    recorder = Recorder()
    gateway = make_gateway(recorder=recorder)
    client = claude(gateway)
    (client.workdir / "notes.txt").write_text("banana-42\n")
    call = json.dumps({"file_path": str(client.workdir / "notes.txt")})
    first_prompt = f"read it [[demo: tool=Read input={call}]]"
    first = client.run("-p", "--allowedTools", "Read", "--", first_prompt)
    assert first.returncode == 0, first.stderr
    second = client.run("-p", "--continue", "and now?")
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "You said: and now?"
    third = client.run("-p", "--continue", "once more")
    assert third.returncode == 0, third.stderr
    assert third.stdout.strip() == "You said: once more"

    calls = _messages_calls(recorder)
    assert all(c.status == 200 for c in calls)
    # --continue resends the whole history, under the same Claude Code session id.
    assert len(calls[-1].body["messages"]) > 4
    assert len({c.headers["x-claude-code-session-id"] for c in calls}) == 1
    # ccgate found the conversation each time: one session, one Claude Code session upstream.
    with httpx.Client(base_url=gateway.url) as http:
        sessions = http.get("/v1/sessions").json()["data"]
    assert len(sessions) == 1
    requests = [r.body for r in model.conversation_requests()]
    assert len({_cli_session(body) for body in requests}) == 1
    # The model saw every earlier turn exactly once.
    last = requests[-1]
    assert _user_texts(last) == [first_prompt, "and now?", "once more"]
    calls_made = [
        b["id"] for m in last["messages"] for b in m["content"] if b["type"] == "tool_use"
    ]
    assert len(calls_made) == 1
    answers = [
        b["text"]
        for m in last["messages"]
        if m["role"] == "assistant"
        for b in m["content"]
        if b["type"] == "text"
    ]
    assert answers == [f"Tool results: {calls_made[0]}=1\tbanana-42\n2", "You said: and now?"]


def test_claude_with_a_shared_key(
    make_gateway: Callable[..., Gateway],
    model: ScriptedModel,
    claude: Callable[..., ClaudeClient],
) -> None:
    key = secrets.token_urlsafe(32)
    client = claude(make_gateway(auth_mode="shared", api_key=key))
    as_api_key = client.run("-p", "with a key", ANTHROPIC_API_KEY=key)
    assert as_api_key.returncode == 0, as_api_key.stderr
    assert as_api_key.stdout.strip() == "You said: with a key"
    as_token = client.run("-p", "with a token", ANTHROPIC_API_KEY="", ANTHROPIC_AUTH_TOKEN=key)
    assert as_token.returncode == 0, as_token.stderr
    assert as_token.stdout.strip() == "You said: with a token"
    wrong = client.run("-p", "with a wrong key", ANTHROPIC_API_KEY="not-the-key")
    assert wrong.returncode != 0
    assert "401" in wrong.stdout + wrong.stderr
    assert [_user_texts(r.body) for r in model.conversation_requests()] == [
        ["with a key"],
        ["with a token"],
    ]


def test_claude_code_session_header_is_not_a_conversation_key(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    # One Claude Code session holds several conversations (its subagents' too), all sent
    # with the same x-claude-code-session-id: ccgate tells them apart by their history.
    gateway = make_gateway()
    header = {"x-claude-code-session-id": "5d0f2b8e-0000-4000-8000-000000000001"}
    with anthropic.Anthropic(
        base_url=gateway.url, api_key="x", max_retries=0, default_headers=header
    ) as ant:
        main: list[Any] = [{"role": "user", "content": "main task"}]
        first = ant.messages.with_raw_response.create(model="sonnet", max_tokens=100, messages=main)
        sub = ant.messages.with_raw_response.create(
            model="sonnet", max_tokens=100, messages=[{"role": "user", "content": "sub task"}]
        )
        reply = first.parse().content[0]
        assert isinstance(reply, anthropic.types.TextBlock)
        main += [
            {"role": "assistant", "content": reply.text},
            {"role": "user", "content": "main again"},
        ]
        again = ant.messages.with_raw_response.create(model="sonnet", max_tokens=100, messages=main)
    assert again.headers["x-session-id"] == first.headers["x-session-id"]
    assert sub.headers["x-session-id"] != first.headers["x-session-id"]
    *_, last = model.conversation_requests()
    assert _user_texts(last.body) == ["main task", "main again"]
