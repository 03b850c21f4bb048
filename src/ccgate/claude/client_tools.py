"""The client's tools as an in-process MCP server, one per CLI process.

The CLI offers the tools to the model under their own names (the runner sets
``CLAUDE_AGENT_SDK_MCP_NO_PREFIX``, so no ``mcp__<server>__`` prefix is added)
and routes each call here. A call's handler does not run anything: it waits in
the turn's :class:`~ccgate.engine.toolbox.ToolResultBox` for the result the
client sends with its next request, and returns that to the CLI as the tool's
result (``is_error`` included), so the same turn continues. A process that
stays warm serves several turns of one conversation: the server asks for the
box of the turn running now.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mcp.server import Server
from mcp.types import CallToolRequestParams, CallToolResult, ListToolsResult, Tool

from ccgate.engine.toolbox import ToolBoxClosed, ToolResultBox
from ccgate.engine.turn import ImagePart, TextPart, ToolResultPart, ToolSpec

__all__ = ["SERVER_NAME", "client_tool_server", "mcp_content"]

log = logging.getLogger("ccgate.engine")

#: The MCP server's name; with the prefix off it appears only in permission rules.
SERVER_NAME = "client"

#: Claude Code keeps results up to this size inline instead of storing them in a file
#: the model (which has no file tools here) could not read.
_INLINE_RESULT_CHARS = 50_000_000

# The id of the model's tool_use block rides in the call's _meta under this key.
_TOOL_USE_ID = "claudecode/toolUseId"


def mcp_content(result: ToolResultPart) -> list[dict[str, Any]]:
    """Return a result's content as MCP content blocks (text and base64 images)."""
    blocks: list[dict[str, Any]] = []
    for part in result.content:
        if isinstance(part, TextPart):
            blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart) and part.data is not None:
            blocks.append({"type": "image", "data": part.data, "mimeType": part.media_type})
    return blocks


def _error(text: str) -> CallToolResult:
    return CallToolResult.model_validate(
        {"content": [{"type": "text", "text": text}], "isError": True}
    )


def client_tool_server(
    tools: tuple[ToolSpec, ...], current_box: Callable[[], ToolResultBox | None]
) -> Server[Any]:
    """Return an MCP server offering ``tools`` whose calls wait in the running turn's box."""
    wire = [
        Tool.model_validate(
            {
                "name": spec.name,
                "description": spec.description,
                "inputSchema": spec.input_schema,
                "_meta": {"anthropic/maxResultSizeChars": _INLINE_RESULT_CHARS},
            }
        )
        for spec in tools
    ]
    names = {spec.name for spec in tools}

    async def on_list_tools(ctx: Any, params: Any) -> ListToolsResult:
        return ListToolsResult(tools=wire)

    async def on_call_tool(ctx: Any, params: CallToolRequestParams) -> CallToolResult:
        meta = getattr(ctx, "meta", None) or {}
        tool_use_id = meta.get(_TOOL_USE_ID) if isinstance(meta, dict) else None
        if params.name not in names or not isinstance(tool_use_id, str):
            return _error(f"No such tool available: {params.name}")
        box = current_box()
        if box is None:
            return _error("The tool call was abandoned: no turn is running")
        log.debug("client_tool_waiting tool=%s id=%s", params.name, tool_use_id)
        try:
            result = await box.wait(tool_use_id)
        except ToolBoxClosed as exc:
            return _error(f"The tool call was abandoned: {exc}")
        return CallToolResult.model_validate(
            {"content": mcp_content(result), "isError": result.is_error}
        )

    server: Server[Any] = Server(
        SERVER_NAME, version="1", on_list_tools=on_list_tools, on_call_tool=on_call_tool
    )
    return server
