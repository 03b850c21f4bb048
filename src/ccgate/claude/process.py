"""What every Claude Code process of ccgate shares: its environment and how it is watched.

A process gets its own ``CLAUDE_CONFIG_DIR`` slot and an allow-listed
environment (``claude.launch``), and is stopped by signal when it must end now.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ccgate.claude.environment import Credential
from ccgate.store.transcripts import TranscriptStore

__all__ = [
    "CLIExited",
    "Pause",
    "RunnerConfig",
    "cli_settings_env",
    "keep_tail",
    "send_signal",
    "short",
]


@dataclass(frozen=True)
class RunnerConfig:
    """What the runner needs from the settings."""

    data_dir: Path
    upstream_url: str | None = None
    upstream_api_key: str | None = None
    upstream_retries: int = 2
    request_timeout: float = 600.0
    cli_path: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    #: The environment ccgate runs in (``os.environ`` at the composition root); every
    #: CLI's environment is made from it (``claude.environment``).
    environ: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: Seconds a conversation's process stays alive after its turn (0: it ends with it).
    session_keepalive: float = 0.0
    #: Spares started ahead for new conversations (0: no pool), and the memory (MB) all
    #: idle processes may hold.
    pool_max_processes: int = 0
    pool_memory_mb: int = 2048
    #: The upstream account the CLIs run as ("": the settings' credential, found in
    #: ``upstream_api_key`` or ``environ``), and its credential (``None``: Claude Code's
    #: own login, in the account's config dirs).
    account: str = ""
    credential: Credential | None = None
    #: Told every plan report the CLIs make (the raw ``rate_limit_info``).
    on_plan: Callable[[dict[str, Any]], None] | None = None
    #: How many answers the model may give in one turn to match a structured output schema.
    structured_output_attempts: int = 3
    #: Where session transcripts are shared with the other replicas (``claude.shared``);
    #: ``None``: they stay this replica's files.
    transcripts: TranscriptStore | None = None


def cli_settings_env(workdir: Path, config: RunnerConfig) -> dict[str, str]:
    """Return what every CLI of ccgate runs with: its own config dir, no extra traffic."""
    return {
        "CLAUDE_CONFIG_DIR": str(workdir),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_MAX_RETRIES": str(config.upstream_retries),
    }


class Pause:
    """While a turn waits for client tool results: stop its ``request_timeout``, mark its pid."""

    def __init__(self, clock: asyncio.Timeout, waiting: set[int], pid: int | None) -> None:
        self._clock = clock
        self._waiting = waiting
        self._pid = pid
        self._left: float | None = None
        self._on = False

    def start(self) -> None:
        self._on = True
        if self._pid is not None:
            self._waiting.add(self._pid)
        when = self._clock.when()
        if when is not None:
            self._left = max(0.0, when - asyncio.get_running_loop().time())
            self._clock.reschedule(None)

    def resume(self) -> None:
        if not self._on:
            return
        self._on = False
        if self._pid is not None:
            self._waiting.discard(self._pid)
        if self._left is not None:
            self._clock.reschedule(asyncio.get_running_loop().time() + self._left)
            self._left = None


class CLIExited(Exception):
    """The CLI process died mid-turn with a non-zero exit code (``None``: not known)."""

    def __init__(self, exit_code: int | None, stderr_line: str) -> None:
        super().__init__(f"exit code {exit_code}")
        self.exit_code = exit_code
        self.stderr_line = stderr_line


def send_signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def keep_tail(tail: list[str], line: str) -> None:
    tail.append(line)
    del tail[:-20]


def short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
