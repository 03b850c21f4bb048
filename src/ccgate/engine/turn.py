"""What a front door asks the engine to do: one turn of a conversation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["ImagePart", "Message", "Part", "SessionPlan", "TextPart", "TurnRequest"]


@dataclass(frozen=True, slots=True)
class TextPart:
    """Plain text."""

    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image, either inline (``data`` base64 with ``media_type``) or by ``url``."""

    media_type: str | None = None
    data: str | None = None
    url: str | None = None


Part = TextPart | ImagePart


@dataclass(frozen=True, slots=True)
class Message:
    """One message of the conversation, in the neutral shape."""

    role: Literal["user", "assistant"]
    parts: tuple[Part, ...]

    def text(self) -> str:
        """Return the message's text parts joined."""
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))


@dataclass(frozen=True, slots=True)
class SessionPlan:
    """Which Claude Code session a turn runs in.

    ``resume`` means the session's transcript exists (kept from earlier turns or
    built from the client's history) and the CLI resumes it, receiving only the
    new user message; otherwise the CLI starts session ``cli_session_id`` fresh.
    """

    cli_session_id: str
    resume: bool


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """One turn: the conversation so far, ending with the user's new message.

    ``model`` is the name the CLI understands (already resolved from the
    catalogue); ``requested_model`` is what the client asked for and echoes back.
    """

    model: str
    requested_model: str
    messages: tuple[Message, ...]
    system: str | None = None
    max_tokens: int | None = None
    stop_sequences: tuple[str, ...] = ()
    thinking_budget: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    session: SessionPlan | None = None

    @property
    def last(self) -> Message:
        """Return the new user message."""
        return self.messages[-1]

    @property
    def history(self) -> tuple[Message, ...]:
        """Return the messages before the new one."""
        return self.messages[:-1]
