"""Build a Claude Code session transcript from a client's history, so the CLI resumes it.

Claude Code keeps each session as ``<CLAUDE_CONFIG_DIR>/projects/<cwd with / as
->/<session-uuid>.jsonl``: one entry per message, linked by ``parentUuid``. A
transcript written here and resumed with ``resume=<uuid>`` makes the model see
the client's earlier turns as real alternating user/assistant messages.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

from ccgate.claude.prompt import content_blocks
from ccgate.engine.turn import Message, ToolResultPart

__all__ = [
    "ACCOUNT_REFUSALS",
    "project_dir",
    "rewind_transcript",
    "transcript_path",
    "write_transcript",
]

#: Turn errors that say the upstream account refused (another account may serve).
ACCOUNT_REFUSALS = frozenset({"rate_limit", "billing", "authentication"})

#: The CLI version whose transcript format this writes (older and newer read it alike).
_VERSION = "2.1.330"


def project_dir(config_dir: Path, cwd: Path) -> Path:
    """Return the directory where the CLI keeps sessions started in ``cwd``."""
    return config_dir / "projects" / re.sub(r"[^a-zA-Z0-9]", "-", str(cwd))


def transcript_path(config_dir: Path, cwd: Path, session_id: str) -> Path:
    """Return the transcript file of session ``session_id``."""
    return project_dir(config_dir, cwd) / f"{session_id}.jsonl"


def _stamp(offset: int) -> str:
    now = time.time() + offset / 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def write_transcript(
    config_dir: Path,
    cwd: Path,
    session_id: str,
    history: tuple[Message, ...],
    model: str,
    *,
    results: Message | None = None,
) -> Path:
    """Write ``history`` as the transcript of a new session ``session_id`` and return its path.

    The history must alternate and start with a user message (the front doors
    merge consecutive roles); an assistant message may be empty. ``results``,
    a user message holding the results of the last assistant message's tool
    calls, ends the transcript with its last call deferred (see the module
    docstring); that call's id is ``results.tool_results[-1].tool_use_id``.
    """
    path = transcript_path(config_dir, cwd, session_id)
    for directory in (path.parent.parent, path.parent):  # projects/ and the cwd's folder
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    writer = _Writer(cwd, session_id, model)
    for message in history:
        writer.message(message.role, content_blocks(message.parts))
    if results is not None:
        deferred = results.tool_results[-1]
        rest = tuple(p for p in results.parts if p is not deferred)
        if rest:
            writer.message("user", content_blocks(rest), tool_result=True)
        writer.deferred(deferred, history[-1])
    tmp = path.with_suffix(".tmp")
    # A transcript holds a client's conversation: readable by ccgate's user only.
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("\n".join(writer.lines) + "\n")
    tmp.replace(path)
    return path


class _Writer:
    """Build transcript entries linked by ``parentUuid``."""

    def __init__(self, cwd: Path, session_id: str, model: str) -> None:
        self._cwd = cwd
        self._session_id = session_id
        self._model = model
        self._parent: str | None = None
        self.lines: list[str] = []

    def _entry(self, kind: str, **fields: Any) -> None:
        entry_id = str(uuid.uuid4())
        entry: dict[str, Any] = {
            "parentUuid": self._parent,
            "isSidechain": False,
            "userType": "external",
            "cwd": str(self._cwd),
            "sessionId": self._session_id,
            "version": _VERSION,
            "type": kind,
            "uuid": entry_id,
            "timestamp": _stamp(len(self.lines)),
            **fields,
        }
        self.lines.append(json.dumps(entry, separators=(",", ":")))
        self._parent = entry_id

    def message(
        self, role: str, blocks: list[dict[str, Any]], *, tool_result: bool = False
    ) -> None:
        blocks = blocks or [{"type": "text", "text": " "}]
        if role == "user":
            extra = {"toolUseResult": "client result"} if tool_result else {}
            self._entry("user", message={"role": "user", "content": blocks}, **extra)
            return
        calls = any(b["type"] == "tool_use" for b in blocks)
        self._entry(
            "assistant",
            message={
                "id": f"msg_ccgate_{uuid.uuid4().hex[:24]}",
                "type": "message",
                "role": "assistant",
                "model": self._model,
                "content": blocks,
                "stop_reason": "tool_use" if calls else "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            },
        )

    def deferred(self, result: ToolResultPart, calls: Message) -> None:
        call = next(c for c in calls.tool_calls if c.id == result.tool_use_id)
        self._entry(
            "attachment",
            attachment={
                "type": "hook_deferred_tool",
                "toolUseID": call.id,
                "toolName": call.name,
                "toolInput": call.input,
                "hookName": "ccgate",
                "hookEvent": "PreToolUse",
                "permissionMode": "default",
            },
        )


def rewind_transcript(path: Path, mark: int | None) -> None:
    """Put a transcript back as it was before a refused turn (gone, if it was not there).

    ``mark`` is its size before the turn. A refused turn leaves the user's message and
    Claude Code's error in it; the turn runs again elsewhere from the state before.
    """
    try:
        if mark is None:
            path.unlink(missing_ok=True)
        elif path.exists() and path.stat().st_size > mark:
            with path.open("r+b") as handle:
                handle.truncate(mark)
    except OSError:
        pass  # the next turn then sees the refused one: worse, not wrong
