"""Client tools on the wire: definitions, and the checks a conversation with tools must pass.

Both APIs share the rules: tool names are ``[a-zA-Z0-9_-]{1,64}`` and unique,
input schemas are JSON Schemas of type ``object`` that some input can satisfy,
whose every ``$ref`` resolves inside the schema (nothing is fetched) and whose
references never loop back without descending into the input (``{"$ref": "#"}``
at the top, ``allOf`` of itself): a validator would recurse forever on such a
schema, and the model could never produce a valid call. Every tool call is answered
by exactly one result in the next user turn, and a result answers a call that
was made. A request breaking them gets a 400 naming the message and the call.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from jsonschema import SchemaError
from jsonschema.validators import validator_for
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012, specification_with

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
    problem = schema_problem(schema)
    if problem is not None:
        raise InvalidRequest(f"{param}: the input schema of tool '{name}' {problem}", param=param)
    return ToolSpec(name, description or "", {"type": "object", **schema})


#: Keywords whose value is one subschema, a map of them, or a list of them.
_ONE = (
    "additionalProperties",
    "additionalItems",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
    "items",
)
_MAP = (
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
    "dependencies",
)
_LIST = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
#: Keywords that apply their subschemas to the same input (a loop of them never ends).
_SAME_INPUT = ("allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas")
_BASE = "urn:ccgate:tool-schema"


def _subschemas(node: dict[str, Any], keywords: tuple[str, ...] | None = None) -> list[Any]:
    """Return the subschemas of ``node`` (under ``keywords``, else under every keyword)."""
    found: list[Any] = []
    for key, value in node.items():
        if keywords is not None and key not in keywords:
            continue
        if key in _MAP and isinstance(value, dict):
            found.extend(v for v in value.values() if isinstance(v, dict | bool))
        elif key in _LIST and isinstance(value, list):
            found.extend(v for v in value if isinstance(v, dict | bool))
        elif key in _ONE and isinstance(value, dict | bool):
            found.append(value)
    return found


def _unsatisfiable(node: Any) -> bool:
    return node is False or (
        isinstance(node, dict)
        and (node.get("not") in ({}, True) or ("enum" in node and node["enum"] == []))
    )


def schema_problem(schema: dict[str, Any]) -> str | None:
    """Say what makes a (metaschema-valid) tool schema unusable, or return None.

    Every ``$ref`` must resolve within the schema; following the keywords that
    apply to the same input (``$ref``, ``allOf``, ``anyOf``, ...) must never come
    back to where it started; and the top level must accept some input.
    """
    spec = specification_with(str(schema.get("$schema", "")), default=DRAFT202012)
    base = schema["$id"] if isinstance(schema.get("$id"), str) else _BASE
    registry: Registry[Any] = Registry().with_resource(base, spec.create_resource(schema))
    registry = registry.crawl()
    same: dict[int, list[int]] = {}  # node -> subschemas applied to the same input
    every: dict[int, list[int]] = {}  # node -> subschemas the input must all satisfy
    nodes: dict[int, Any] = {}
    stack: list[tuple[Any, Any]] = [(schema, registry.resolver(base))]
    while stack:
        node, resolver = stack.pop()
        if id(node) in nodes:
            continue
        nodes[id(node)] = node
        if not isinstance(node, dict):
            continue
        if isinstance(node.get("$id"), str) and node is not schema:
            resolver = resolver.in_subresource(spec.create_resource(node))
        conjuncts = [s for s in node.get("allOf", ()) if isinstance(s, dict | bool)]
        applied = _subschemas(node, _SAME_INPUT)
        ref = node.get("$ref")
        if isinstance(ref, str):
            try:
                target = resolver.lookup(ref)
            except Unresolvable:
                return (
                    f"has a $ref that does not resolve inside the schema: {ref[:80]!r} "
                    "(ccgate fetches no remote schema)"
                )
            conjuncts.append(target.contents)
            applied.append(target.contents)
            stack.append((target.contents, target.resolver))
        every[id(node)] = [id(s) for s in conjuncts]
        same[id(node)] = [id(s) for s in applied]
        stack.extend((sub, resolver) for sub in _subschemas(node))
    if _loops(same):
        return (
            "refers to itself without descending into the input (a $ref or allOf loop), "
            "so no input could ever be checked against it"
        )
    seen, todo = set(), [id(schema)]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if _unsatisfiable(nodes[current]):
            return "accepts no input at all (false, {'not': {}} or an empty enum)"
        todo.extend(every.get(current, ()))
    return None


def _loops(edges: dict[int, list[int]]) -> bool:
    """Tell whether the directed graph ``edges`` has a cycle (iteratively, any size)."""
    state: dict[int, int] = {}  # 1: on the current path, 2: done
    for start in edges:
        if start in state:
            continue
        path: list[tuple[int, int]] = [(start, 0)]
        state[start] = 1
        while path:
            node, i = path[-1]
            children = edges.get(node, [])
            if i < len(children):
                path[-1] = (node, i + 1)
                child = children[i]
                if state.get(child) == 1:
                    return True
                if child not in state:
                    state[child] = 1
                    path.append((child, 0))
            else:
                state[node] = 2
                path.pop()
    return False


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
