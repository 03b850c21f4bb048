"""The SDK internals ccgate relies on (``claude.sdk``) are where it looks for them."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest
from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient

from ccgate.claude import sdk
from ccgate.demo import DemoServer

pytestmark = pytest.mark.cli


async def test_the_cli_process_and_its_stream_are_reachable(
    demo: DemoServer, tmp_path: Path
) -> None:
    options = ClaudeAgentOptions(
        tools=[],
        setting_sources=[],
        system_prompt="",
        cwd=str(tmp_path),
        env={
            "ANTHROPIC_BASE_URL": demo.url,
            "ANTHROPIC_API_KEY": "k",
            "CLAUDE_CONFIG_DIR": str(tmp_path / "config"),
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        },
    )
    client = ClaudeSDKClient(options)
    assert sdk.cli_pid(client) is None and sdk.cli_process(client) is None
    await client.connect()
    try:
        pid = sdk.cli_pid(client)
        assert isinstance(pid, int) and pid > 0
        assert sdk.cli_process(client).pid == pid
        os.kill(pid, signal.SIGKILL)  # a process that dies: its exit code is known
        assert await sdk.exit_code(client) == -signal.SIGKILL
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()
        sdk.close_receive_stream(client)  # harmless after a disconnect
    assert sdk.cli_process(client) is None
