"""The scripted model: a deterministic Anthropic Messages API server for tests and ``--demo``.

The real Claude Code CLI uses it as its upstream (``ANTHROPIC_BASE_URL``). Every
request is recorded in a ``ScriptedModel``; conversation requests take the
replies queued with ``ScriptedModel.script(Reply(...), ...)``, else a default
answer: a report of tool results, or an echo (``You said: <text>``) shaped by
directives written in the last user message.

Directive grammar (several directives may appear; they are removed before echoing)::

    directive := "[[demo:" pair* "]]"
    pair      := key "=" value            (pairs separated by whitespace)
    value     := JSON string | JSON object | JSON array | bare token (no spaces, no "]]")

    say="text"          answer exactly this text instead of the echo
    chunks=N            split text (and thinking) into N stream deltas
    delay=S             sleep S seconds between deltas
    thinking="text"     emit a thinking block (with a signature) first; a request
                        with thinking.display "omitted" gets the signature only
    tool=NAME           emit a tool_use block; repeat for parallel calls
    input={...}         the input of the preceding tool (default {})
    id=toolu_x          the id of the preceding tool (default toolu_demo_N)
    error=STATUS        answer HTTP STATUS (400..599) with an Anthropic error body
    message="text"      the error message
    cut=N               close the stream abruptly after N deltas (no message_stop)
    stall=S             sleep S seconds before answering (in a stream: after ping)
    stop=REASON         override stop_reason (end_turn, tool_use, max_tokens, ...)
    stream_error=TYPE   answer 200 but send an ``error`` event (rate_limit_error,
                        overloaded_error, api_error) right after message_start
    times=N             error/cut/stall fire for the first N requests carrying this
                        exact text only, so a retrying client then succeeds

Plans: ``POST /demo/plans`` gives a credential (an OAuth token or API key) a plan of
5-hour and 7-day windows; every answer to it then carries the
``anthropic-ratelimit-unified-*`` headers, a full window is a 429 (or an ``error``
event inside the stream, or extra usage when overage is allowed) and windows roll
over at their reset (``ccgate.demo.plan``). ``GET /demo/plans`` reads them back.

Example: ``What's the weather? [[demo: tool=get_weather input={"city":"Paris"}]]``.
A malformed pair ends its directive and is ignored; parsing never fails.
"""

from ccgate.demo.model import (
    RecordedRequest,
    ScriptedModel,
    is_side_request,
    last_user_text,
    side_text,
)
from ccgate.demo.reply import Reply, ToolUse
from ccgate.demo.runner import DemoServer
from ccgate.demo.server import create_demo_app

__all__ = [
    "DemoServer",
    "RecordedRequest",
    "Reply",
    "ScriptedModel",
    "ToolUse",
    "create_demo_app",
    "is_side_request",
    "last_user_text",
    "side_text",
]
