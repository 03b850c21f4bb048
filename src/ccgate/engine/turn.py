"""What a front door asks the engine to do: one turn of a conversation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "EFFORTS",
    "Effort",
    "ImagePart",
    "Message",
    "OutputSchema",
    "Part",
    "SessionPlan",
    "TextPart",
    "Thinking",
    "ToolCallPart",
    "ToolChoice",
    "ToolResultPart",
    "ToolSpec",
    "TurnRequest",
]


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


@dataclass(frozen=True, slots=True)
class ToolCallPart:
    """The assistant called the client's tool ``name`` (call ``id``) with ``input``."""

    id: str
    name: str
    input: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolResultPart:
    """The client's result of call ``tool_use_id``: text and images, possibly an error."""

    tool_use_id: str
    content: tuple[TextPart | ImagePart, ...]
    is_error: bool = False


Part = TextPart | ImagePart | ToolCallPart | ToolResultPart


@dataclass(frozen=True, slots=True)
class Message:
    """One message of the conversation, in the neutral shape."""

    role: Literal["user", "assistant"]
    parts: tuple[Part, ...]

    def text(self) -> str:
        """Return the message's text parts joined."""
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def tool_calls(self) -> tuple[ToolCallPart, ...]:
        """Return the tool calls of an assistant message."""
        return tuple(p for p in self.parts if isinstance(p, ToolCallPart))

    @property
    def tool_results(self) -> tuple[ToolResultPart, ...]:
        """Return the tool results of a user message."""
        return tuple(p for p in self.parts if isinstance(p, ToolResultPart))


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the client defines: offered to the model under exactly this name."""

    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """How the model may use the client's tools.

    ``mode`` is ``auto`` (it decides), ``none`` (no tools are offered),
    ``required`` (it should call one) or ``tool`` (it should call ``name``).
    ``parallel`` is False when the client asked for at most one call at a time.
    """

    mode: Literal["auto", "none", "required", "tool"] = "auto"
    name: str | None = None
    parallel: bool = True


Effort = Literal["low", "medium", "high", "xhigh", "max"]

#: The effort levels, least first.
EFFORTS: tuple[Effort, ...] = ("low", "medium", "high", "xhigh", "max")


@dataclass(frozen=True, slots=True)
class Thinking:
    """Extended thinking the client asked for: adaptive, or with a token budget.

    A turn without it runs without thinking: the model thinks only when the
    client asks. ``display`` says whether the thinking text comes back
    (``summarized``) or only its signature (``omitted``).
    """

    budget_tokens: int | None = None
    display: Literal["summarized", "omitted"] = "summarized"


@dataclass(frozen=True, slots=True)
class OutputSchema:
    """Structured output: the turn's final answer is JSON valid against ``schema``.

    ``schema`` is what the model is given (a JSON object schema); ``wrapped`` says the
    client's own schema was not an object and is ``schema["properties"]["value"]``,
    so the answer is that value; ``text`` is the schema as canonical JSON (the
    process configuration's key).
    """

    schema: dict[str, Any]
    text: str
    wrapped: bool = False
    name: str | None = None


@dataclass(frozen=True, slots=True)
class SessionPlan:
    """Which Claude Code session a turn runs in.

    ``resume`` means the session's transcript exists (kept from earlier turns or
    built from the client's history) and the CLI resumes it, receiving only the
    new user message; otherwise the CLI starts session ``cli_session_id`` fresh.
    """

    cli_session_id: str
    resume: bool
    #: The transcript ends with a deferred call of the client's tool: the CLI re-runs it
    #: at start (its result is already in the turn's tool box) and continues without a
    #: new prompt. Used when tool results arrive for a turn that is no longer alive.
    deferred_call: str | None = None


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """One turn: the conversation so far, ending with the user's new message.

    ``model`` is the name the CLI understands (already resolved from the
    catalogue); ``requested_model`` is what the client asked for and echoes back.
    ``tools`` are the client's tools (``offered_tools`` says which the model
    gets under ``tool_choice``). A turn is plain data: where its tool calls
    wait for the client's results is the runner's ``box`` argument.
    """

    model: str
    requested_model: str
    messages: tuple[Message, ...]
    system: str | None = None
    max_tokens: int | None = None
    stop_sequences: tuple[str, ...] = ()
    thinking: Thinking | None = None
    #: How much effort the client asked for (``None``: the model's own default).
    effort: Effort | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    session: SessionPlan | None = None
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    #: The upstream accounts the turn may run on (``None``: any); the caller's key may
    #: have used its fair share of the others' plans.
    accounts: frozenset[str] | None = None
    #: The JSON schema the final answer must match (structured outputs).
    output: OutputSchema | None = None

    @property
    def last(self) -> Message:
        """Return the new user message."""
        return self.messages[-1]

    @property
    def history(self) -> tuple[Message, ...]:
        """Return the messages before the new one."""
        return self.messages[:-1]

    def offered_tools(self) -> tuple[ToolSpec, ...]:
        """Return the tools the model is offered under ``tool_choice``.

        A call the CLI must re-run (``session.deferred_call``) keeps its tool
        offered whatever the choice, or the CLI could not hand back its result.
        """
        choice = self.tool_choice
        if choice.mode == "none":
            offered: tuple[ToolSpec, ...] = ()
        elif choice.mode == "tool":
            offered = tuple(t for t in self.tools if t.name == choice.name)
        else:
            offered = self.tools
        deferred = self.session.deferred_call if self.session else None
        if deferred is not None:
            call = next((c for m in self.messages for c in m.tool_calls if c.id == deferred), None)
            if call is not None and all(t.name != call.name for t in offered):
                spec = next((t for t in self.tools if t.name == call.name), None)
                offered += (spec or ToolSpec(call.name, "", {"type": "object"}),)
        return offered
