"""The model sees what the client sent: what the real CLI puts in front of the scripted model.

Every test reads the request the CLI sent upstream (the scripted model's record)
and compares it with what the client wrote.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from openai.types.chat import ChatCompletionFunctionToolParam

from ccgate.claude import ClaudeRunner, RunnerConfig
from ccgate.claude.fidelity import fidelity_env
from ccgate.demo import DemoServer, ScriptedModel
from tests.gateway_testing import Gateway, cli_processes

pytestmark = pytest.mark.cli

#: Blocks of the system prompt the CLI always sends before the client's own.
BILLING_PREFIX = "x-anthropic-billing-header:"
IDENTITY = "You are a Claude agent, built on Anthropic's Claude Agent SDK."

#: Secrets of the operator's environment that must not reach a CLI.
OPERATOR_SECRETS = {
    "GITHUB_TOKEN": "ghp_operator_secret_github",
    "AWS_SECRET_ACCESS_KEY": "operator-secret-aws",
    "OPENAI_API_KEY": "sk-operator-secret-openai",
    "ANTHROPIC_AUTH_TOKEN": "operator-secret-auth-token",
}


def _wire(body: dict[str, Any]) -> str:
    return json.dumps(body)


def _system_texts(body: dict[str, Any]) -> list[str]:
    return [block["text"] for block in body["system"]]


def _environ(**extra: str) -> dict[str, str]:
    kept = {k: v for k, v in os.environ.items() if not k.startswith("CCGATE_")}
    kept.pop("ANTHROPIC_API_KEY", None)
    kept.pop("CLAUDE_CODE_OAUTH_TOKEN", None)
    return {**kept, **OPERATOR_SECRETS, **extra}


def test_without_the_levers_the_cli_adds_what_the_next_test_rules_out(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, demo: DemoServer, data_dir: Path
) -> None:
    gateway = make_gateway(_without_levers(demo, data_dir), environ=_environ())
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0) as client:
        client.chat.completions.create(
            model="claude-opus-5-5", messages=[{"role": "user", "content": "hello there"}]
        )
    body = model.conversation_requests()[-1].body
    assert "# Environment" in _wire(body)
    assert body["thinking"]["type"] == "adaptive" and body["output_config"]["effort"]


def test_a_plain_turn_reaches_the_model_as_the_client_wrote_it(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = make_gateway(environ=_environ())
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0) as client:
        reply = client.chat.completions.create(
            model="claude-opus-5-5",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hello there"},
            ],
        )
    assert reply.choices[0].message.content == "You said: hello there"
    (request,) = model.conversation_requests()
    body = request.body
    # The messages are exactly the client's: no environment, date or model identity.
    assert [(m["role"], m["content"][0]["text"]) for m in body["messages"]] == [
        ("user", "hello there")
    ]
    system = _system_texts(body)
    assert system[0].startswith(BILLING_PREFIX)
    assert system[1:] == [IDENTITY, "Be brief."]
    # No thinking, no effort, no reminders the client did not ask for.
    assert "thinking" not in body and "output_config" not in body
    assert "context_management" not in body
    wire = _wire(body)
    for added in ("# Environment", "system-reminder", "total_tokens", "Today's date"):
        assert added not in wire
    assert body["tools"] == []


def test_thinking_runs_only_when_asked_and_maps_to_the_cli_s_settings(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = make_gateway()
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0) as client:
        client.chat.completions.create(
            model="sonnet", messages=[{"role": "user", "content": "plain"}]
        )
        client.chat.completions.create(
            model="sonnet",
            reasoning_effort="high",
            messages=[{"role": "user", "content": "think hard"}],
        )
    with anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0) as ant:
        ant.messages.create(
            model="claude-haiku-4-5",
            max_tokens=8000,
            thinking={"type": "enabled", "budget_tokens": 3000},
            messages=[{"role": "user", "content": "budgeted"}],
        )
        ant.messages.create(
            model="sonnet",
            max_tokens=8000,
            thinking={"type": "adaptive"},
            extra_body={"output_config": {"effort": "low"}},
            messages=[{"role": "user", "content": "adaptive and low"}],
        )
        # Claude Code as a client asks for thinking without its text.
        omitted = ant.messages.create(
            model="sonnet",
            max_tokens=8000,
            thinking={"type": "adaptive", "display": "omitted"},
            messages=[{"role": "user", "content": 'hidden [[demo: thinking="my plan"]]'}],
        )
    requests = [r.body for r in model.conversation_requests()]
    plain, effort_high, budgeted, adaptive_low, adaptive_omitted = requests
    assert "thinking" not in plain and "output_config" not in plain
    assert effort_high["thinking"] == {"type": "adaptive", "display": "summarized"}
    assert effort_high["output_config"] == {"effort": "high"}
    assert budgeted["thinking"] == {
        "type": "enabled",
        "budget_tokens": 3000,
        "display": "summarized",
    }
    assert "output_config" not in budgeted
    assert adaptive_low["thinking"]["type"] == "adaptive"
    assert adaptive_low["output_config"] == {"effort": "low"}
    # Asked for "omitted", the CLI sends its own "updates" display: no summarized text.
    assert adaptive_omitted["thinking"]["display"] in ("omitted", "updates")
    thinking, text = omitted.content
    assert thinking.type == "thinking" and thinking.thinking == "" and thinking.signature
    assert text.type == "text" and text.text == "You said: hidden"


def _without_levers(demo: DemoServer, data_dir: Path) -> ClaudeRunner:
    """Return a runner whose CLIs run with the fidelity levers blanked (the control)."""
    blank = dict.fromkeys(fidelity_env(None, None, minimal=True), "")
    config = RunnerConfig(
        data_dir=data_dir,
        upstream_url=demo.url,
        upstream_api_key="demo-upstream-key",
        upstream_retries=0,
        environ=_environ(),
        extra_env=blank,
    )
    return ClaudeRunner(config)


@pytest.mark.parametrize("levers", [True, False], ids=["ccgate", "control-without-levers"])
def test_tool_results_reach_the_model_without_a_token_reminder(
    make_gateway: Callable[..., Gateway],
    model: ScriptedModel,
    demo: DemoServer,
    data_dir: Path,
    levers: bool,
) -> None:
    runner = None if levers else _without_levers(demo, data_dir)
    gateway = make_gateway(runner)
    tools: list[ChatCompletionFunctionToolParam] = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Look something up",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    ]
    messages: list[Any] = [
        {"role": "user", "content": 'find it [[demo: tool=lookup input={"q":"x"}]]'}
    ]
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0) as client:
        # A pinned id whose model the CLI gives token reminders.
        first = client.chat.completions.create(
            model="claude-haiku-4-5", messages=messages, tools=tools
        )
        call = (first.choices[0].message.tool_calls or [])[0]
        messages += [
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "found 42"},
        ]
        final = client.chat.completions.create(
            model="claude-haiku-4-5", messages=messages, tools=tools
        )
    assert "found 42" in (final.choices[0].message.content or "")
    last = model.conversation_requests()[-1].body
    result_message = last["messages"][-1]
    assert result_message["role"] == "user"
    wire = _wire(result_message)
    assert "found 42" in wire
    # Without the lever the CLI adds the reminder: the control shows the test can fail.
    assert ("<total_tokens>" in wire) is not levers


def test_an_oauth_credential_reaches_the_cli_on_a_descriptor_and_nothing_else_leaks(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, data_dir: Path
) -> None:
    token = "sk-ant-oat01-operator-subscription"
    gateway = make_gateway(
        environ=_environ(CLAUDE_CODE_OAUTH_TOKEN=token),
        upstream_api_key=None,
        pool_max_processes=0,
    )
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0) as client:
        reply = client.chat.completions.create(
            model="sonnet", messages=[{"role": "user", "content": "on my subscription"}]
        )
    assert reply.choices[0].message.content == "You said: on my subscription"
    (request,) = model.conversation_requests()
    assert request.headers["authorization"] == f"Bearer {token}"
    assert "x-api-key" not in request.headers
    body = request.body
    assert "thinking" not in body and "output_config" not in body
    # With a subscription Claude Code keeps its environment message (its minimal mode
    # takes API keys only); it names ccgate's empty neutral directory, nothing else.
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user", "system"]
    environment = body["messages"][1]["content"][0]["text"]
    assert environment.startswith("# Environment")
    assert f"Primary working directory: {data_dir / 'cwd'}" in environment
    # The warm process is still alive: its environment has the token nowhere.
    (pid,) = cli_processes(data_dir)
    values = _process_environment(pid)
    assert values.get("CLAUDE_CODE_OAUTH_TOKEN_FILE_DESCRIPTOR") == "3"
    assert token not in " ".join(values.values())
    for name, secret in OPERATOR_SECRETS.items():
        assert values.get(name, "") == "", name
        assert secret not in _wire(body) and secret not in json.dumps(request.headers)


def test_an_api_key_never_sits_in_the_environment_ccgate_passes(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, data_dir: Path
) -> None:
    gateway = make_gateway(environ=_environ(), pool_max_processes=0)
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0) as client:
        client.chat.completions.create(
            model="sonnet", messages=[{"role": "user", "content": "with a key"}]
        )
    (request,) = model.conversation_requests()
    assert request.headers["x-api-key"] == "demo-upstream-key"
    assert "authorization" not in request.headers  # ANTHROPIC_AUTH_TOKEN did not reach it
    (pid,) = cli_processes(data_dir)
    values = _process_environment(pid)
    # The launcher set the key for the CLI alone (minimal mode reads no descriptor) and
    # removed the file it came from; ccgate's own variables are gone.
    assert values["ANTHROPIC_API_KEY"] == "demo-upstream-key"
    assert "CCGATE_CREDENTIAL_FILE" not in values and "CCGATE_CREDENTIAL_AS" not in values
    assert not list((data_dir / "run").glob("credential-*"))
    for name in OPERATOR_SECRETS:
        assert values.get(name, "") == "", name


def _process_environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return {k: v for k, _, v in (e.decode(errors="replace").partition("=") for e in raw) if k}


def test_message_start_carries_the_real_input_token_count(ant: anthropic.Anthropic) -> None:
    with ant.messages.stream(
        model="sonnet",
        max_tokens=100,
        messages=[{"role": "user", "content": "count me " * 40}],
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    start = next(e for e in events if e.type == "message_start")
    assert start.message.usage.input_tokens > 0
    assert start.message.usage.input_tokens == final.usage.input_tokens
