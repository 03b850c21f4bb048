"""Build what the CLI receives as the user's message of a turn."""

from __future__ import annotations

from typing import Any

from ccgate.engine.turn import (
    ImagePart,
    Message,
    Part,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    TurnRequest,
)

__all__ = ["content_blocks", "system_prompt", "user_message_content"]


def _image(part: ImagePart) -> dict[str, Any]:
    if part.data is not None:
        source = {"type": "base64", "media_type": part.media_type, "data": part.data}
    else:
        source = {"type": "url", "url": part.url}
    return {"type": "image", "source": source}


def content_blocks(parts: tuple[Part, ...]) -> list[dict[str, Any]]:
    """Return Anthropic content blocks for neutral parts (tool results first, as required)."""
    blocks: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            if part.text:
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            blocks.append(_image(part))
        elif isinstance(part, ToolCallPart):
            blocks.append(
                {"type": "tool_use", "id": part.id, "name": part.name, "input": part.input}
            )
        elif isinstance(part, ToolResultPart):
            content = [
                {"type": "text", "text": p.text} if isinstance(p, TextPart) else _image(p)
                for p in part.content
            ]
            result: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": part.tool_use_id,
                "content": content,
            }
            if part.is_error:
                result["is_error"] = True
            results.append(result)
    return results + blocks


def system_prompt(turn: TurnRequest) -> str:
    """Return the system prompt: the client's, plus what ``tool_choice`` asks of the model.

    The CLI cannot pass ``tool_choice`` upstream; ``none`` and a named tool are
    enforced by what is offered, and the rest is asked for here.
    """
    text = turn.system or ""
    offered = turn.offered_tools()
    choice = turn.tool_choice
    notes: list[str] = []
    if offered and choice.mode == "required":
        notes.append("Answer by calling one or more of the available tools.")
    elif offered and choice.mode == "tool" and choice.name:
        notes.append(f"Answer by calling the tool {choice.name}.")
    if offered and not choice.parallel:
        notes.append("Call at most one tool per reply.")
    if not notes:
        return text
    return "\n\n".join(p for p in (text, " ".join(notes)) if p)


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
