"""The real Claude Code CLI, through claude-agent-sdk, using the demo server as upstream."""

from __future__ import annotations

from pathlib import Path

import pytest
from claude_agent_sdk import AssistantMessage, ClaudeAgentOptions, ResultMessage, TextBlock, query

from ccgate.demo import DemoServer, ScriptedModel, last_user_text


@pytest.mark.cli
@pytest.mark.asyncio
async def test_cli_echo_round_trip(
    server: DemoServer, model: ScriptedModel, tmp_path: Path
) -> None:
    options = ClaudeAgentOptions(
        tools=[],
        setting_sources=[],
        system_prompt="You are a test double.",
        cwd=str(tmp_path),
        include_partial_messages=True,
        env={
            "ANTHROPIC_BASE_URL": server.url,
            "ANTHROPIC_API_KEY": "demo",
            "CLAUDE_CONFIG_DIR": str(tmp_path / "config"),
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        },
    )
    texts: list[str] = []
    result: ResultMessage | None = None
    async for message in query(prompt="ping from the CLI [[demo: chunks=3]]", options=options):
        if isinstance(message, AssistantMessage):
            texts += [b.text for b in message.content if isinstance(b, TextBlock)]
        elif isinstance(message, ResultMessage):
            result = message
    assert result is not None and not result.is_error
    assert result.result == "You said: ping from the CLI"
    assert texts == ["You said: ping from the CLI"]
    [turn] = model.conversation_requests()
    assert last_user_text(turn.body) == "ping from the CLI [[demo: chunks=3]]"
    assert turn.body["system"][-1]["text"] == "You are a test double."
    assert turn.body["stream"] is True
