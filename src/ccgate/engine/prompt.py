"""Build what the CLI receives as the user's message of a turn."""

from __future__ import annotations

from typing import Any

from ccgate.engine.turn import ImagePart, Message, Part, TextPart, TurnRequest

__all__ = ["content_blocks", "user_message_content"]


def content_blocks(parts: tuple[Part, ...]) -> list[dict[str, Any]]:
    """Return Anthropic content blocks for neutral parts."""
    blocks: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            if part.text:
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            if part.data is not None:
                source = {"type": "base64", "media_type": part.media_type, "data": part.data}
            else:
                source = {"type": "url", "url": part.url}
            blocks.append({"type": "image", "source": source})
    return blocks


def _transcript(history: tuple[Message, ...]) -> str:
    lines = ["<conversation_so_far>"]
    for message in history:
        name = "User" if message.role == "user" else "Assistant"
        images = sum(1 for p in message.parts if isinstance(p, ImagePart))
        suffix = f" [{images} image(s) omitted]" if images else ""
        lines.append(f"{name}: {message.text()}{suffix}")
    lines.append("</conversation_so_far>")
    return "\n".join(lines)


def user_message_content(turn: TurnRequest) -> list[dict[str, Any]]:
    """Return the content blocks of the turn's user message.

    In a session the CLI already holds the earlier turns; without one (a bare
    turn such as a health probe) they are flattened into one leading text block.
    """
    blocks = content_blocks(turn.last.parts)
    if turn.history and turn.session is None:
        blocks.insert(0, {"type": "text", "text": _transcript(turn.history)})
    if not blocks:
        blocks.append({"type": "text", "text": " "})
    return blocks
