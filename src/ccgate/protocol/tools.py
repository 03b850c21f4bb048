"""Client tools on the wire: definitions, and the checks a conversation with tools must pass.

Both APIs share the rules: tool names are ``[a-zA-Z0-9_-]{1,64}`` and unique,
input schemas are JSON Schemas of type ``object``; every tool call is answered
by exactly one result in the next user turn, and a result answers a call that
was made. A request breaking them gets a 400 naming the message and the call.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from jsonschema import SchemaError
from jsonschema.validators import validator_for

from ccgate.engine.turn import Message, ToolChoice, ToolSpec
from ccgate.errors import InvalidRequest

__all__ = ["MAX_TOOLS", "RESERVED_NAMES", "check_choice", "check_tool_flow", "tool_spec"]

MAX_TOOLS = 128
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
#: Names Claude Code keeps for itself: a client tool named ``ToolSearch`` puts the CLI in
#: its tool-search mode, which hides every other client tool behind its own ToolSearch.
RESERVED_NAMES = frozenset({"ToolSearch"})


def tool_spec(name: Any, description: Any, schema: Any, param: str) -> ToolSpec:
    """Return a checked tool definition, or raise InvalidRequest naming ``param``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequest(
            f"{param}: the tool name must be 1 to 64 letters, digits, '_' or '-', "
            f"got {str(name)[:80]!r}",
            param=param,
        )
    if name in RESERVED_NAMES:
        raise InvalidRequest(
            f"{param}: the tool name '{name}' is reserved by Claude Code (it would hide the "
            "other tools behind its own tool search); rename the tool",
            param=param,
        )
    if description is not None and not isinstance(description, str):
        raise InvalidRequest(f"{param}: the tool description must be a string", param=param)
    if not isinstance(schema, dict):
        raise InvalidRequest(
            f"{param}: the input schema of tool '{name}' must be a JSON object", param=param
        )
    if schema.get("type", "object") != "object":
        raise InvalidRequest(
            f"{param}: the input schema of tool '{name}' must have type 'object', "
            f"got {schema.get('type')!r}",
            param=param,
        )
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(top level)"
        raise InvalidRequest(
            f"{param}: the input schema of tool '{name}' is not a valid JSON Schema "
            f"at {where}: {exc.message[:200]}",
            param=param,
        ) from None
    return ToolSpec(name, description or "", {"type": "object", **schema})


def check_tools(tools: Sequence[ToolSpec], param: str) -> tuple[ToolSpec, ...]:
    """Refuse too many tools and duplicate names."""
    if len(tools) > MAX_TOOLS:
        raise InvalidRequest(f"{param}: at most {MAX_TOOLS} tools are allowed", param=param)
    seen: set[str] = set()
    for tool in tools:
        if tool.name in seen:
            raise InvalidRequest(f"{param}: the tool name '{tool.name}' is used twice", param=param)
        seen.add(tool.name)
    return tuple(tools)


def check_choice(choice: ToolChoice, tools: Sequence[ToolSpec], param: str) -> ToolChoice:
    """Refuse a choice that names an unknown tool, or asks for tools without any."""
    if choice.mode in ("required", "tool") and not tools:
        raise InvalidRequest(
            f"{param}: tool_choice '{choice.mode}' needs tools; define them in 'tools'",
            param=param,
        )
    if choice.mode == "tool" and all(t.name != choice.name for t in tools):
        raise InvalidRequest(
            f"{param}: tool_choice names the tool '{choice.name}', which is not in tools",
            param=param,
        )
    return choice


def check_tool_flow(items: Sequence[tuple[str, Message]], tools: Sequence[ToolSpec] | None) -> None:
    """Check calls and results of a conversation (messages as sent, with their params).

    ``tools`` is None when the request defined none: then the results at the end
    may answer any call; otherwise each must answer a call of a defined tool.
    """
    pending: dict[str, tuple[str, str]] = {}  # call id -> (tool name, where it was made)
    calls: set[str] = set()
    answered: set[str] = set()
    last_results: list[str] = []
    for where, message in items:
        if message.role == "assistant":
            _unanswered(pending)
            last_results = []
            for call in message.tool_calls:
                if call.id in calls:
                    raise InvalidRequest(
                        f"{where}: the tool call id '{call.id}' is used twice", param=where
                    )
                calls.add(call.id)
                pending[call.id] = (call.name, where)
            continue
        results = message.tool_results
        if not results:
            _unanswered(pending)
            last_results = []
            continue
        for result in results:
            call_id = result.tool_use_id
            if call_id in answered:
                raise InvalidRequest(
                    f"{where}: the tool call '{call_id}' has more than one result", param=where
                )
            if call_id not in pending:
                raise InvalidRequest(
                    f"{where}: a tool result answers the call '{call_id}', which was never "
                    "made: the assistant message just before must contain that call",
                    param=where,
                )
            answered.add(call_id)
            last_results.append(pending.pop(call_id)[0])
        if len(results) != len(message.parts):
            _unanswered(pending)  # anything after the results closes the round
    _unanswered(pending)
    if tools is not None:
        names = {t.name for t in tools}
        for name in last_results:
            if name not in names:
                where = items[-1][0]
                raise InvalidRequest(
                    f"{where}: a tool result answers a call of the tool '{name}', which is "
                    "not in tools; send the tools of the conversation with every request",
                    param=where,
                )


def _unanswered(pending: dict[str, tuple[str, str]]) -> None:
    if pending:
        call_id, (name, where) = next(iter(pending.items()))
        raise InvalidRequest(
            f"{where}: the call '{call_id}' of tool '{name}' has no result; the next user "
            "message must answer every tool call of the assistant message before it",
            param=where,
        )
