"""Find the Claude Code CLI and ask its version, without running a turn."""

from __future__ import annotations

import asyncio
import shutil
from importlib import util
from pathlib import Path

__all__ = ["cli_version", "find_cli"]


def find_cli(override: Path | None = None) -> Path | None:
    """Return the CLI ccgate will run: the override, the one bundled in the SDK, or PATH's."""
    if override is not None:
        return override if override.exists() else None
    spec = util.find_spec("claude_agent_sdk")
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "_bundled" / "claude"
        if bundled.exists():
            return bundled
    found = shutil.which("claude")
    return Path(found) if found else None


async def cli_version(path: Path, env: dict[str, str]) -> str:
    """Return what ``claude --version`` prints."""
    proc = await asyncio.create_subprocess_exec(
        str(path),
        "--version",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return out.decode(errors="replace").strip()
