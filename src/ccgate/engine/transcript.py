"""Build a Claude Code session transcript from a client's history, so the CLI resumes it.

Claude Code keeps each session as ``<CLAUDE_CONFIG_DIR>/projects/<cwd with / as
->/<session-uuid>.jsonl``: one entry per message, linked by ``parentUuid``. A
transcript written here and resumed with ``resume=<uuid>`` makes the model see
the client's earlier turns as real alternating user/assistant messages.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

from ccgate.engine.prompt import content_blocks
from ccgate.engine.turn import Message

__all__ = ["project_dir", "transcript_path", "write_transcript"]

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
    config_dir: Path, cwd: Path, session_id: str, history: tuple[Message, ...], model: str
) -> Path:
    """Write ``history`` as the transcript of a new session ``session_id`` and return its path.

    The history must alternate and start with a user message (the front doors
    merge consecutive roles); an assistant message may be empty.
    """
    path = transcript_path(config_dir, cwd, session_id)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    parent: str | None = None
    lines: list[str] = []
    for index, message in enumerate(history):
        entry_id = str(uuid.uuid4())
        blocks = content_blocks(message.parts) or [{"type": "text", "text": " "}]
        entry: dict[str, Any] = {
            "parentUuid": parent,
            "isSidechain": False,
            "userType": "external",
            "cwd": str(cwd),
            "sessionId": session_id,
            "version": _VERSION,
            "type": message.role,
            "uuid": entry_id,
            "timestamp": _stamp(index),
        }
        if message.role == "user":
            entry["message"] = {"role": "user", "content": blocks}
        else:
            entry["message"] = {
                "id": f"msg_ccgate_{entry_id.replace('-', '')[:24]}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": blocks,
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }
        lines.append(json.dumps(entry, separators=(",", ":")))
        parent = entry_id
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path
