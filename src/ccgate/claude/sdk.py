"""Every touch of the Agent SDK's internals, in one place.

The SDK does not expose the CLI process it starts, nor a way to close the
stream of a client whose ``disconnect`` was cancelled; its transport keeps the
process as ``_process`` and its query the stream. Should an SDK release move
them, these functions degrade (``None``, nothing done) and one test of each
(``tests/claude``) says so.
"""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
from claude_agent_sdk import ClaudeSDKClient

__all__ = ["cli_pid", "cli_process", "close_receive_stream", "exit_code"]


def cli_process(client: ClaudeSDKClient) -> Any:
    """Return the CLI's process object (``anyio.abc.Process``), or ``None``."""
    return getattr(getattr(client, "_transport", None), "_process", None)


def cli_pid(client: ClaudeSDKClient) -> int | None:
    """Return the CLI process's pid, or ``None`` when there is no process."""
    pid = getattr(cli_process(client), "pid", None)
    return pid if isinstance(pid, int) else None


async def exit_code(client: ClaudeSDKClient) -> int | None:
    """Wait (at most 2 s) for the CLI to exit; return its exit code, if known."""
    process = cli_process(client)
    if process is None:
        return None
    with contextlib.suppress(Exception):
        with anyio.move_on_after(2):
            await process.wait()
    code = getattr(process, "returncode", None)
    return code if isinstance(code, int) else None


def close_receive_stream(client: ClaudeSDKClient) -> None:
    """Close the client's stream of messages (a cancelled ``disconnect`` skips this)."""
    close = getattr(getattr(client, "_query", None), "close_receive_stream", None)
    if close is not None:
        close()
