"""Where a turn's calls of client tools wait for the client's results.

The model's call of a client tool reaches ccgate as a call of an in-process
MCP tool; its handler awaits :meth:`ToolResultBox.wait` for that call's id.
The front door hands the results of the client's next request to
:meth:`ToolResultBox.deliver`, and the waiting handlers return them to the
CLI, which continues the same turn. Results may also be delivered before the
call is made (a call the CLI re-runs when a turn is rebuilt).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from ccgate.engine.turn import ToolResultPart

__all__ = ["ToolBoxClosed", "ToolResultBox"]


class ToolBoxClosed(Exception):
    """The turn ended while a call was still waiting for its result."""


class ToolResultBox:
    """Results of client tool calls, by call id; a waiter gets its result once."""

    def __init__(self) -> None:
        self._slots: dict[str, asyncio.Future[ToolResultPart]] = {}
        self._closed: str | None = None

    def _slot(self, tool_use_id: str) -> asyncio.Future[ToolResultPart]:
        slot = self._slots.get(tool_use_id)
        if slot is None:
            slot = asyncio.get_running_loop().create_future()
            if self._closed is not None:
                slot.set_exception(ToolBoxClosed(self._closed))
                slot.exception()  # marked retrieved: a late delivery may be all that asks
            self._slots[tool_use_id] = slot
        return slot

    def deliver(self, results: Iterable[ToolResultPart]) -> None:
        """Hand over results; a call already answered keeps its first result."""
        for result in results:
            slot = self._slot(result.tool_use_id)
            if not slot.done():
                slot.set_result(result)

    async def wait(self, tool_use_id: str) -> ToolResultPart:
        """Wait for the result of call ``tool_use_id``."""
        return await asyncio.shield(self._slot(tool_use_id))

    def close(self, reason: str) -> None:
        """Fail every call still waiting (the turn is over)."""
        self._closed = reason
        for slot in self._slots.values():
            if not slot.done():
                slot.set_exception(ToolBoxClosed(reason))
                slot.exception()  # retrieved: nobody may be waiting any more
