"""Client-defined tools end to end: SDK client → ccgate → the real CLI → the scripted model.

The scripted model calls the client's ``get_weather`` when a ``[[demo: tool=...]]``
directive asks it to, and answers tool results with ``Tool results: <id>=<text>``
(``(error)`` after failed ones), so every final answer shows what the model got.

What is checked, beyond the wire shapes:

- a turn that waits for results is *continued*, not restarted: the recorded
  model requests share one Claude Code session, the runner started one CLI
  process (a spy on ``ClaudeRunner.run`` counts them), and the user's message
  reaches the model once;
- results for a turn that is gone (restart, ``tool_result_timeout``, kill -9,
  slot given up) still reach the model as real ``tool_result`` blocks, through a
  session rebuilt from the client's history whose last call the CLI re-runs;
- bad tool flows are 400s naming the problem, and ``tool_choice`` shapes what
  the model is offered.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from ccgate.claude import ClaudeRunner
from ccgate.demo import DemoServer, Reply, ScriptedModel, ToolUse
from ccgate.engine.events import AgentEvent
from ccgate.engine.sessions import ConversationSessions
from ccgate.engine.toolbox import ToolResultBox
from ccgate.engine.turn import TurnRequest
from tests.gateway_testing import Gateway, cli_processes, wait_for_no_processes, wait_until

pytestmark = pytest.mark.cli

CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
ANTHROPIC_TOOLS: list[Any] = [
    {
        "name": "get_weather",
        "description": "Current weather of a city.",
        "input_schema": CITY_SCHEMA,
    },
    {"name": "get_time", "description": "Local time of a city.", "input_schema": CITY_SCHEMA},
]
OPENAI_TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": t["name"],
            "description": t["description"],
            "parameters": t["input_schema"],
        },
    }
    for t in ANTHROPIC_TOOLS
]
CLIENT_TOOL_NAMES = {"get_weather", "get_time"}

ONE_CALL = [("toolu_paris", "Paris")]
TWO_CALLS = [("toolu_paris", "Paris"), ("toolu_rome", "Rome")]
THREE_CALLS = [("toolu_paris", "Paris"), ("toolu_rome", "Rome"), ("toolu_oslo", "Oslo")]


# --- helpers -------------------------------------------------------------------------


def _ask(calls: list[tuple[str, str]], lead: str = "What's the weather?") -> str:
    """Return user text making the model say "Let me check." and call get_weather per city."""
    tools = " ".join(
        f"tool=get_weather input={json.dumps({'city': city})} id={call_id}"
        for call_id, city in calls
    )
    return f'{lead} [[demo: say="Let me check." {tools}]]'


def _weather(city: str) -> str:
    """Return the client's result text for a city (non-ASCII on purpose: it must pass as is)."""
    return f"{city}: 18°C, light rain"


def _dialogue(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Return a recorded request's user/assistant messages (the CLI's system ones dropped)."""
    return [m for m in body["messages"] if m["role"] != "system"]


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content or [] if b.get("type") == "text")


def _results_in(message: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """Return a user message's tool results as (tool_use_id, text, is_error)."""
    return [
        (b["tool_use_id"], _text_of(b.get("content")), bool(b.get("is_error")))
        for b in _blocks(message)
        if b.get("type") == "tool_result"
    ]


def _last_results(model: ScriptedModel) -> list[tuple[str, str, bool]]:
    """Return the tool results of the last message of the model's last conversation request."""
    last = _dialogue(model.conversation_requests()[-1].body)[-1]
    assert last["role"] == "user"
    return _results_in(last)


def _times_sent(model: ScriptedModel, text: str) -> int:
    """Count the user text blocks equal to ``text`` in the model's last conversation request."""
    body = model.conversation_requests()[-1].body
    return sum(
        1
        for message in _dialogue(body)
        if message["role"] == "user"
        for block in _blocks(message)
        if block.get("type") == "text" and block.get("text") == text
    )


def _cli_sessions(model: ScriptedModel) -> list[str]:
    """Return the Claude Code session id of each recorded conversation request."""
    return [r.headers["x-claude-code-session-id"] for r in model.conversation_requests()]


def _offered(model: ScriptedModel) -> set[str]:
    """Return the client tools offered upstream in the model's last conversation request."""
    body = model.conversation_requests()[-1].body
    return {t.get("name") for t in body.get("tools") or []} & CLIENT_TOOL_NAMES


def _system(model: ScriptedModel) -> str:
    """Return the system prompt of the model's last conversation request as one text."""
    system = model.conversation_requests()[-1].body.get("system")
    return system if isinstance(system, str) else _text_of(system)


def _reported(answer: str) -> set[str]:
    """Return the ``<id>=<text>`` items of the scripted model's ``Tool results:`` answer."""
    assert answer.startswith("Tool results: "), answer
    return set(answer.removeprefix("Tool results: ").split("; "))


def _expected(results: list[tuple[str, str, bool]]) -> set[str]:
    return {f"{i}={text}{' (error)' if error else ''}" for i, text, error in results}


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[TurnRequest]:
    """Record every turn the real runner starts (one CLI process each), in every gateway."""
    started: list[TurnRequest] = []
    real_run = ClaudeRunner.run

    def run(
        self: ClaudeRunner, turn: TurnRequest, box: ToolResultBox | None = None
    ) -> AsyncGenerator[AgentEvent, None]:
        started.append(turn)
        return real_run(self, turn, box)

    monkeypatch.setattr(ClaudeRunner, "run", run)
    return started


def _deferred(turn: TurnRequest) -> str | None:
    """Return the call a turn's CLI re-runs from a rebuilt session (None: not rebuilt)."""
    return turn.session.deferred_call if turn.session else None


# --- OpenAI client side --------------------------------------------------------------


@dataclass
class Said:
    """An OpenAI answer: its text, its tool calls as (id, name, arguments), its finish reason."""

    text: str | None
    calls: list[tuple[str, str, str]]
    finish: str | None

    def message(self) -> dict[str, Any]:
        """Return the assistant message a client sends back in its history."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.calls:
            message["tool_calls"] = [
                {"id": i, "type": "function", "function": {"name": n, "arguments": a}}
                for i, n, a in self.calls
            ]
        return message


def _chat(client: openai.OpenAI, messages: list[Any], *, stream: bool, **extra: Any) -> Said:
    """Ask once, streamed or not; assemble streamed tool calls the way clients do."""
    if not stream:
        completion = client.chat.completions.create(
            model="sonnet", messages=messages, tools=OPENAI_TOOLS, **extra
        )
        choice = completion.choices[0]
        calls = [
            (c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls or []
        ]
        return Said(choice.message.content, calls, choice.finish_reason)
    text = ""
    finish = None
    streamed: dict[int, list[str]] = {}
    pieces: dict[int, int] = {}
    chunks = client.chat.completions.create(
        model="sonnet", messages=messages, tools=OPENAI_TOOLS, stream=True, **extra
    )
    for chunk in chunks:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for piece in delta.tool_calls or []:
            assert piece.function is not None
            if piece.index not in streamed:
                # The first chunk of a call carries its id and name.
                assert piece.id and piece.function.name, piece
                streamed[piece.index] = [
                    piece.id,
                    piece.function.name,
                    piece.function.arguments or "",
                ]
                pieces[piece.index] = 0
            else:
                assert piece.id is None and piece.function.name is None, piece
                streamed[piece.index][2] += piece.function.arguments or ""
                pieces[piece.index] += 1
        finish = chunk.choices[0].finish_reason or finish
    # The arguments came as pieces after the first chunk, not all at once.
    assert all(n >= 2 for n in pieces.values()), pieces
    return Said(
        text or None, [(i, n, a) for i, n, a in (streamed[k] for k in sorted(streamed))], finish
    )


def _tool_messages(results: list[tuple[str, str, bool]]) -> list[dict[str, Any]]:
    return [{"role": "tool", "tool_call_id": i, "content": text} for i, text, _ in results]


# --- Anthropic client side -----------------------------------------------------------


def _message(
    client: anthropic.Anthropic, messages: list[Any], *, stream: bool, **extra: Any
) -> tuple[anthropic.types.Message, list[str]]:
    """Ask once, streamed (``messages.stream``) or not; return the message and delta types."""
    kwargs: dict[str, Any] = {"model": "sonnet", "max_tokens": 500, "tools": ANTHROPIC_TOOLS}
    if not stream:
        return client.messages.create(messages=messages, **kwargs, **extra), []
    deltas: list[str] = []
    with client.messages.stream(messages=messages, **kwargs, **extra) as events:
        for event in events:
            if event.type == "content_block_delta":
                deltas.append(event.delta.type)
        final = events.get_final_message()
    return final, deltas


def _tool_results(results: list[tuple[str, str, bool]]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for i, text, error in results:
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": i, "content": text}
        if error:
            block["is_error"] = True
        blocks.append(block)
    return blocks


def _answer_text(message: anthropic.types.Message) -> str:
    assert [b.type for b in message.content] == ["text"], message.content
    return message.content[0].text  # type: ignore[union-attr]


def _serve(demo_url: str, data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    """Start ``ccgate serve`` as a subprocess (so it can be killed with -9)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCGATE_")}
    flags = ["--port", str(port), "--data-dir", str(data_dir), "--upstream-url", demo_url]
    flags += ["--upstream-api-key", "x", "--upstream-retries", "0"]
    return subprocess.Popen(
        [sys.executable, "-m", "ccgate", "serve", *flags],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _oai(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0, timeout=120)


def _ant(gateway: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0, timeout=120)


# --- the calls and their results, continued in the same turn --------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("calls", [ONE_CALL, TWO_CALLS], ids=["single", "parallel"])
def test_openai_tool_calls_and_results_continue_the_turn(
    gateway: Gateway,
    oai: openai.OpenAI,
    model: ScriptedModel,
    data_dir: Path,
    runs: list[TurnRequest],
    stream: bool,
    calls: list[tuple[str, str]],
) -> None:
    ask = _ask(calls)
    messages: list[Any] = [{"role": "user", "content": ask}]
    said = _chat(oai, messages, stream=stream)
    assert said.finish == "tool_calls"
    assert said.text == "Let me check."
    assert [(i, n, json.loads(a)) for i, n, a in said.calls] == [
        (i, "get_weather", {"city": city}) for i, city in calls
    ]
    if stream:
        # The SDK stops reading at [DONE], before ccgate parks the turn: wait for it here
        # (test_streamed_openai_results_sent_at_once_continue_the_turn covers the race).
        assert wait_until(lambda: gateway.state.turns.parked == 1)
    # The turn waits, alive, on its one CLI process.
    assert gateway.state.turns.parked == 1
    assert len(cli_processes(data_dir)) == 1

    results = [(i, _weather(city), False) for i, city in reversed(calls)]
    messages += [said.message(), *_tool_messages(results)]
    final = _chat(oai, messages, stream=stream)

    assert final.finish == "stop" and not final.calls
    assert final.text is not None and _reported(final.text) == _expected(results)
    assert sorted(_last_results(model)) == sorted(results)
    assert _times_sent(model, ask) == 1
    sessions = _cli_sessions(model)
    assert len(sessions) == 2 and len(set(sessions)) == 1, "the same CLI session went on"
    assert len(runs) == 1 and _deferred(runs[0]) is None, "no second CLI process was started"
    assert gateway.state.turns.parked == 0


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("calls", [ONE_CALL, TWO_CALLS], ids=["single", "parallel"])
def test_anthropic_tool_calls_and_results_continue_the_turn(
    gateway: Gateway,
    ant: anthropic.Anthropic,
    model: ScriptedModel,
    data_dir: Path,
    runs: list[TurnRequest],
    stream: bool,
    calls: list[tuple[str, str]],
) -> None:
    ask = _ask(calls)
    messages: list[Any] = [{"role": "user", "content": ask}]
    first, deltas = _message(ant, messages, stream=stream)
    assert first.stop_reason == "tool_use"
    assert [b.type for b in first.content] == ["text"] + ["tool_use"] * len(calls)
    assert first.content[0].text == "Let me check."  # type: ignore[union-attr]
    assert [(b.id, b.name, b.input) for b in first.content[1:]] == [  # type: ignore[union-attr]
        (i, "get_weather", {"city": city}) for i, city in calls
    ]
    if stream:
        assert deltas.count("input_json_delta") >= 2 * len(calls), deltas
    assert gateway.state.turns.parked == 1
    assert len(cli_processes(data_dir)) == 1

    results = [(i, _weather(city), False) for i, city in reversed(calls)]
    messages += [
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": _tool_results(results)},
    ]
    final, _ = _message(ant, messages, stream=stream)

    assert final.stop_reason == "end_turn"
    assert _reported(_answer_text(final)) == _expected(results)
    assert sorted(_last_results(model)) == sorted(results)
    assert _times_sent(model, ask) == 1
    sessions = _cli_sessions(model)
    assert len(sessions) == 2 and len(set(sessions)) == 1, "the same CLI session went on"
    assert len(runs) == 1 and _deferred(runs[0]) is None, "no second CLI process was started"
    assert gateway.state.turns.parked == 0


def test_streamed_openai_results_sent_at_once_continue_the_turn(
    gateway: Gateway,
    oai: openai.OpenAI,
    model: ScriptedModel,
    runs: list[TurnRequest],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A session store that takes a moment to write (Postgres, a busy disk) would let a client
    # that answers at once overtake the recording of the segment, were the turn parked only
    # after its stream ended; it must be parked before the client sees the end.
    real_finished = ConversationSessions.finished

    async def slow_finished(self: ConversationSessions, *args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(0.5)
        await real_finished(self, *args, **kwargs)

    monkeypatch.setattr(ConversationSessions, "finished", slow_finished)
    messages: list[Any] = [{"role": "user", "content": _ask(ONE_CALL)}]
    said = _chat(oai, messages, stream=True)
    assert said.finish == "tool_calls"
    results = [("toolu_paris", _weather("Paris"), False)]
    messages += [said.message(), *_tool_messages(results)]
    final = _chat(oai, messages, stream=True)
    assert final.text == f"Tool results: toolu_paris={_weather('Paris')}"
    assert len(runs) == 1, "the results continued the waiting turn on its CLI process"
    assert len(set(_cli_sessions(model))) == 1


def test_two_rounds_of_tools_stay_in_one_turn(
    gateway: Gateway, ant: anthropic.Anthropic, model: ScriptedModel, runs: list[TurnRequest]
) -> None:
    model.script(
        Reply(text="Paris first.", tool_uses=[ToolUse("get_weather", {"city": "Paris"}, "t1")]),
        Reply(text="Now Rome.", tool_uses=[ToolUse("get_weather", {"city": "Rome"}, "t2")]),
        Reply(),  # the default: a report of the results it got
    )
    messages: list[Any] = [{"role": "user", "content": "Plan a trip."}]
    for call_id, city in [("t1", "Paris"), ("t2", "Rome")]:
        reply = ant.messages.create(
            model="sonnet", max_tokens=500, tools=ANTHROPIC_TOOLS, messages=messages
        )
        assert reply.stop_reason == "tool_use"
        assert reply.content[-1].id == call_id  # type: ignore[union-attr]
        messages += [
            {"role": "assistant", "content": reply.content},
            {"role": "user", "content": _tool_results([(call_id, _weather(city), False)])},
        ]
    final = ant.messages.create(
        model="sonnet", max_tokens=500, tools=ANTHROPIC_TOOLS, messages=messages
    )
    assert _answer_text(final) == f"Tool results: t2={_weather('Rome')}"
    dialogue = _dialogue(model.conversation_requests()[-1].body)
    assert [_results_in(m) for m in dialogue if m["role"] == "user"] == [
        [],
        [("t1", _weather("Paris"), False)],
        [("t2", _weather("Rome"), False)],
    ]
    assert _times_sent(model, "Plan a trip.") == 1
    assert len(set(_cli_sessions(model))) == 1 and len(runs) == 1
    assert model.pending == 0


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_the_conversation_goes_on_after_a_tool_turn(
    gateway: Gateway, model: ScriptedModel, runs: list[TurnRequest], api: str
) -> None:
    ask = _ask(ONE_CALL)
    results = [("toolu_paris", _weather("Paris"), False)]
    if api == "openai":
        with _oai(gateway) as client:
            history: list[Any] = [{"role": "user", "content": ask}]
            said = _chat(client, history, stream=False)
            history += [said.message(), *_tool_messages(results)]
            history += [_chat(client, history, stream=False).message()]
            history += [{"role": "user", "content": "Thanks!"}]
            assert _chat(client, history, stream=False).text == "You said: Thanks!"
    else:
        with _ant(gateway) as client:
            history = [{"role": "user", "content": ask}]
            first, _ = _message(client, history, stream=False)
            history += [
                {"role": "assistant", "content": first.content},
                {"role": "user", "content": _tool_results(results)},
            ]
            second, _ = _message(client, history, stream=False)
            history += [
                {"role": "assistant", "content": second.content},
                {"role": "user", "content": "Thanks!"},
            ]
            assert _answer_text(_message(client, history, stream=False)[0]) == "You said: Thanks!"
    dialogue = _dialogue(model.conversation_requests()[-1].body)
    assert [m["role"] for m in dialogue] == ["user", "assistant", "user", "assistant", "user"]
    assert _results_in(dialogue[2]) == results
    assert _text_of(dialogue[3]["content"]) == f"Tool results: toolu_paris={_weather('Paris')}"
    # The follow-up resumed the session the tool turn left (its fingerprint was recorded).
    assert len(set(_cli_sessions(model))) == 1
    assert [_deferred(t) for t in runs] == [None, None]
    assert runs[1].session is not None and runs[1].session.resume


@pytest.mark.parametrize("path", ["continued", "rebuilt"])
def test_an_error_result_reaches_the_model_as_an_error(
    make_gateway: Callable[..., Gateway],
    model: ScriptedModel,
    data_dir: Path,
    runs: list[TurnRequest],
    path: str,
) -> None:
    gateway = make_gateway(tool_result_timeout=600 if path == "continued" else 1)
    ask = _ask(THREE_CALLS)
    messages: list[Any] = [{"role": "user", "content": ask}]
    with _ant(gateway) as client:
        first, _ = _message(client, messages, stream=False)
        if path == "rebuilt":
            assert wait_until(lambda: gateway.state.turns.parked == 0, within=30)
            assert wait_for_no_processes(data_dir) == []
        # In a rebuilt session the last result (an error) is the call the CLI re-runs,
        # the others come from the written transcript: both routes carry is_error.
        results = [
            ("toolu_paris", "weather service down", True),
            ("toolu_rome", _weather("Rome"), False),
            ("toolu_oslo", "no such city", True),
        ]
        messages += [
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": _tool_results(results)},
        ]
        final, _ = _message(client, messages, stream=False)
    assert _reported(_answer_text(final)) == _expected(results)
    assert sorted(_last_results(model)) == sorted(results)
    assert [_deferred(t) for t in runs] == ([None] if path == "continued" else [None, "toolu_oslo"])


# --- results for a turn that is gone ------------------------------------------------


def test_results_after_a_restart_reach_the_model(
    make_gateway: Callable[..., Gateway],
    model: ScriptedModel,
    data_dir: Path,
    runs: list[TurnRequest],
) -> None:
    ask = _ask(TWO_CALLS)
    history: list[Any] = [{"role": "user", "content": ask}]
    before = make_gateway()
    with _oai(before) as client:
        said = _chat(client, history, stream=False)
    assert before.state.turns.parked == 1
    before.stop()
    assert wait_for_no_processes(data_dir) == []

    after = make_gateway()
    results = [("toolu_rome", _weather("Rome"), False), ("toolu_paris", "Paris: sunny", False)]
    history += [said.message(), *_tool_messages(results)]
    with _oai(after) as client:
        answer = _chat(client, history, stream=False)
        assert answer.finish == "stop" and answer.text is not None
        assert _reported(answer.text) == _expected(results)
        assert sorted(_last_results(model)) == sorted(results)
        assert _times_sent(model, ask) == 1
        # The new gateway rebuilt the session; its CLI re-ran the last call with its result.
        assert len(runs) == 2 and _deferred(runs[1]) == "toolu_paris"

        history += [answer.message(), {"role": "user", "content": "And tomorrow?"}]
        assert _chat(client, history, stream=False).text == "You said: And tomorrow?"
    dialogue = _dialogue(model.conversation_requests()[-1].body)
    assert [m["role"] for m in dialogue] == ["user", "assistant", "user", "assistant", "user"]
    assert sorted(_results_in(dialogue[2])) == sorted(results)
    # The follow-up continued the rebuilt session instead of rebuilding it again.
    assert _cli_sessions(model)[-1] == _cli_sessions(model)[-2]
    assert len(runs) == 3 and _deferred(runs[2]) is None


def test_results_after_the_tool_wait_expired_reach_the_model(
    make_gateway: Callable[..., Gateway],
    model: ScriptedModel,
    data_dir: Path,
    runs: list[TurnRequest],
) -> None:
    gateway = make_gateway(tool_result_timeout=1)
    ask = _ask(ONE_CALL)
    messages: list[Any] = [{"role": "user", "content": ask}]
    with _ant(gateway) as client:
        first, _ = _message(client, messages, stream=True)
        assert first.stop_reason == "tool_use"
        assert wait_until(lambda: gateway.state.turns.parked == 0, within=30)
        assert wait_for_no_processes(data_dir) == []
        assert wait_until(lambda: gateway.state.gate.active == 0), (
            "the expired turn gave its slot back"
        )
        # Dropped outright: the CLI did not answer the call itself and ask the model again.
        assert len(model.conversation_requests()) == 1

        results = [("toolu_paris", _weather("Paris"), False)]
        messages += [
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": _tool_results(results)},
        ]
        final, _ = _message(client, messages, stream=True)
    assert final.stop_reason == "end_turn"
    assert _answer_text(final) == f"Tool results: toolu_paris={_weather('Paris')}"
    assert _last_results(model) == results
    assert _times_sent(model, ask) == 1
    assert len(runs) == 2 and _deferred(runs[1]) == "toolu_paris"


def test_waiting_for_results_does_not_count_against_request_timeout(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, runs: list[TurnRequest]
) -> None:
    gateway = make_gateway(request_timeout=2)
    messages: list[Any] = [{"role": "user", "content": _ask(ONE_CALL)}]
    with _oai(gateway) as client:
        said = _chat(client, messages, stream=False)
        assert said.finish == "tool_calls"
        # The client's tool takes longer than the whole-turn bound; the turn still waits.
        assert not wait_until(lambda: gateway.state.turns.parked == 0, within=4)
        results = [("toolu_paris", _weather("Paris"), False)]
        messages += [said.message(), *_tool_messages(results)]
        answer = _chat(client, messages, stream=False)
    assert answer.text == f"Tool results: toolu_paris={_weather('Paris')}"
    assert len(runs) == 1, "the waiting turn was continued"


def test_results_after_kill_9_reach_the_model(
    demo: DemoServer, model: ScriptedModel, data_dir: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    ask = _ask(ONE_CALL)
    history: list[Any] = [{"role": "user", "content": ask}]
    proc = _serve(demo.url, data_dir, port)
    try:
        assert wait_until(lambda: _up(url), within=30)
        with openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as client:
            said = _chat(client, history, stream=False)
        assert said.finish == "tool_calls"
        health = httpx.get(url + "/health", timeout=10).json()
        assert health["turns"]["waiting_for_tools"] == 1
        proc.kill()
        proc.wait()
        assert wait_for_no_processes(data_dir) == []
        if shutil.which("setpriv"):
            # The CLI died with its gateway: it did not answer the call "interrupted" and
            # ask the model once more on its own.
            assert len(model.conversation_requests()) == 1
        proc = _serve(demo.url, data_dir, port)
        assert wait_until(lambda: _up(url), within=30)
        results = [("toolu_paris", _weather("Paris"), False)]
        history += [said.message(), *_tool_messages(results)]
        with openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as client:
            answer = _chat(client, history, stream=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert answer.finish == "stop"
    assert answer.text == f"Tool results: toolu_paris={_weather('Paris')}"
    assert _last_results(model) == results
    assert _times_sent(model, ask) == 1


# --- concurrency and slots ------------------------------------------------------------


def test_parked_conversations_each_get_their_own_results(
    make_gateway: Callable[..., Gateway],
    model: ScriptedModel,
    data_dir: Path,
    runs: list[TurnRequest],
) -> None:
    gateway = make_gateway(max_concurrent=4, pool_max_processes=0)  # counts processes
    histories: list[list[Any]] = []
    answers: dict[int, str | None] = {}
    with _oai(gateway) as client:
        for n in range(4):
            history: list[Any] = [{"role": "user", "content": _ask([(f"toolu_c{n}", f"City{n}")])}]
            said = _chat(client, history, stream=n % 2 == 1)
            assert [c[0] for c in said.calls] == [f"toolu_c{n}"]
            histories.append([*history, said.message()])
        assert wait_until(lambda: gateway.state.turns.parked == 4)  # streamed ones park just after
        assert len(cli_processes(data_dir)) == 4
        assert httpx.get(gateway.url + "/health").json()["turns"]["waiting_for_tools"] == 4

        start = threading.Barrier(4)

        def finish(n: int) -> None:
            messages = [*histories[n], *_tool_messages([(f"toolu_c{n}", f"result {n}", False)])]
            start.wait(timeout=30)
            answers[n] = _chat(client, messages, stream=n % 2 == 0).text

        # Results come back in reverse order, all at once, each on its own thread.
        threads = [threading.Thread(target=finish, args=(n,)) for n in reversed(range(4))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert answers == {n: f"Tool results: toolu_c{n}=result {n}" for n in range(4)}
    assert gateway.state.turns.parked == 0
    assert len(runs) == 4 and all(_deferred(t) is None for t in runs)
    # Each conversation's two model requests came from its own CLI session.
    by_session: dict[str, set[str]] = {}
    for request in model.conversation_requests():
        first = _text_of(_dialogue(request.body)[0]["content"])
        by_session.setdefault(request.headers["x-claude-code-session-id"], set()).add(first)
    assert sorted(len(firsts) for firsts in by_session.values()) == [1, 1, 1, 1]
    assert len(model.conversation_requests()) == 8


def test_a_parked_turn_gives_up_its_slot(
    make_gateway: Callable[..., Gateway],
    model: ScriptedModel,
    data_dir: Path,
    runs: list[TurnRequest],
) -> None:
    gateway = make_gateway(max_concurrent=1)
    ask = _ask(ONE_CALL)
    history: list[Any] = [{"role": "user", "content": ask}]
    with _ant(gateway) as ant_client, _oai(gateway) as oai_client:
        first, _ = _message(ant_client, history, stream=False)
        assert gateway.state.turns.parked == 1 and gateway.state.gate.active == 1

        other = _chat(oai_client, [{"role": "user", "content": "Meanwhile, hello."}], stream=False)
        assert other.text == "You said: Meanwhile, hello."
        assert gateway.state.turns.parked == 0

        results = [("toolu_paris", _weather("Paris"), False)]
        history += [
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": _tool_results(results)},
        ]
        final, _ = _message(ant_client, history, stream=False)
    assert _answer_text(final) == f"Tool results: toolu_paris={_weather('Paris')}"
    assert _last_results(model) == results
    assert [_deferred(t) for t in runs] == [None, None, "toolu_paris"]


def test_a_parked_turn_gives_up_its_slot_without_a_queue(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = make_gateway(max_concurrent=1, max_queue=0)
    with _oai(gateway) as client:
        _chat(client, [{"role": "user", "content": _ask(ONE_CALL)}], stream=False)
        assert gateway.state.turns.parked == 1
        other = _chat(client, [{"role": "user", "content": "Meanwhile, hello."}], stream=False)
    assert other.text == "You said: Meanwhile, hello."


def test_a_new_conversation_in_the_session_drops_the_parked_turn(
    gateway: Gateway, model: ScriptedModel, data_dir: Path, runs: list[TurnRequest]
) -> None:
    headers = {"X-Session-Id": "trip-planner"}
    with openai.OpenAI(
        base_url=gateway.url + "/v1", api_key="x", max_retries=0, default_headers=headers
    ) as client:
        said = _chat(client, [{"role": "user", "content": _ask(ONE_CALL)}], stream=False)
        assert said.finish == "tool_calls" and gateway.state.turns.parked == 1
        other = _chat(client, [{"role": "user", "content": "Start over."}], stream=False)
    assert other.text == "You said: Start over."
    assert gateway.state.turns.parked == 0
    assert len(runs) == 2


# --- bad input ------------------------------------------------------------------------

_CALL = {
    "id": "toolu_a",
    "type": "function",
    "function": {"name": "get_weather", "arguments": "{}"},
}
_TIME_CALL = {
    "id": "toolu_a",
    "type": "function",
    "function": {"name": "get_time", "arguments": "{}"},
}
_BAD_SCHEMA = {"type": "object", "properties": {"city": {"type": "text"}}}

# Deliberately off-type input (the SDKs' types would refuse it): Any.
OPENAI_BAD: dict[str, tuple[list[Any], Any, str, str]] = {
    "unknown call id": (
        [
            {"role": "assistant", "content": None, "tool_calls": [_CALL]},
            {"role": "tool", "tool_call_id": "toolu_zzz", "content": "r"},
        ],
        OPENAI_TOOLS,
        "messages[2]",
        "answers the call 'toolu_zzz', which was never made",
    ),
    "duplicate call ids": (
        [
            {"role": "assistant", "content": None, "tool_calls": [_CALL, _CALL]},
            {"role": "tool", "tool_call_id": "toolu_a", "content": "r"},
            {"role": "tool", "tool_call_id": "toolu_a", "content": "r"},
        ],
        OPENAI_TOOLS,
        "messages[1]",
        "the tool call id 'toolu_a' is used twice",
    ),
    "malformed schema": (
        [],
        [{"type": "function", "function": {"name": "get_weather", "parameters": _BAD_SCHEMA}}],
        "tools[0]",
        "the input schema of tool 'get_weather' is not a valid JSON Schema",
    ),
    "result for a tool not in tools": (
        [
            {"role": "assistant", "content": None, "tool_calls": [_TIME_CALL]},
            {"role": "tool", "tool_call_id": "toolu_a", "content": "r"},
        ],
        OPENAI_TOOLS[:1],
        "messages[2]",
        "a call of the tool 'get_time', which is not in tools",
    ),
}


@pytest.mark.parametrize("case", list(OPENAI_BAD))
def test_openai_bad_tool_input_is_a_400(
    oai: openai.OpenAI, model: ScriptedModel, data_dir: Path, case: str
) -> None:
    messages, tools, param, phrase = OPENAI_BAD[case]
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(
            model="sonnet",
            messages=[{"role": "user", "content": "Weather?"}, *messages],
            tools=tools,
        )
    assert caught.value.status_code == 400
    error = caught.value.response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert phrase in error["message"] and param in error["message"]
    assert model.conversation_requests() == [] and cli_processes(data_dir) == []


_USE = {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}}

ANTHROPIC_BAD: dict[str, tuple[list[Any], Any, str]] = {
    "unknown call id": (
        [
            {"role": "assistant", "content": [_USE]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_zzz", "content": "r"}],
            },
        ],
        ANTHROPIC_TOOLS,
        "messages.2: a tool result answers the call 'toolu_zzz', which was never made",
    ),
    "duplicate call ids": (
        [
            {"role": "assistant", "content": [_USE, _USE]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_a", "content": "r"},
                    {"type": "tool_result", "tool_use_id": "toolu_a", "content": "r"},
                ],
            },
        ],
        ANTHROPIC_TOOLS,
        "messages.1: the tool call id 'toolu_a' is used twice",
    ),
    "malformed schema": (
        [],
        [{"name": "get_weather", "input_schema": _BAD_SCHEMA}],
        "tools.0: the input schema of tool 'get_weather' is not a valid JSON Schema",
    ),
    "result for a tool not in tools": (
        [
            {"role": "assistant", "content": [{**_USE, "name": "get_time"}]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_a", "content": "r"}],
            },
        ],
        ANTHROPIC_TOOLS[:1],
        "messages.2: a tool result answers a call of the tool 'get_time', which is not in tools",
    ),
}


@pytest.mark.parametrize("case", list(ANTHROPIC_BAD))
def test_anthropic_bad_tool_input_is_a_400(
    ant: anthropic.Anthropic, model: ScriptedModel, data_dir: Path, case: str
) -> None:
    messages, tools, phrase = ANTHROPIC_BAD[case]
    with pytest.raises(anthropic.BadRequestError) as caught:
        ant.messages.create(
            model="sonnet",
            max_tokens=100,
            messages=[{"role": "user", "content": "Weather?"}, *messages],
            tools=tools,
        )
    assert caught.value.status_code == 400
    body = caught.value.response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert phrase in body["error"]["message"]
    assert model.conversation_requests() == [] and cli_processes(data_dir) == []


# --- tool_choice ----------------------------------------------------------------------

REQUIRED_NOTE = "Answer by calling one or more of the available tools."
NAMED_NOTE = "Answer by calling the tool get_time."

CHOICES: dict[str, tuple[Any, Any, set[str], str | None]] = {
    # name: (OpenAI tool_choice, Anthropic tool_choice, tools offered upstream, system note)
    "none": ("none", {"type": "none"}, set(), None),
    "named": (
        {"type": "function", "function": {"name": "get_time"}},
        {"type": "tool", "name": "get_time"},
        {"get_time"},
        NAMED_NOTE,
    ),
    "required": ("required", {"type": "any"}, CLIENT_TOOL_NAMES, REQUIRED_NOTE),
}


@pytest.mark.parametrize("api", ["openai", "anthropic"])
@pytest.mark.parametrize("choice", list(CHOICES))
def test_tool_choice_shapes_what_the_model_is_offered(
    gateway: Gateway, model: ScriptedModel, api: str, choice: str
) -> None:
    openai_choice, anthropic_choice, offered, note = CHOICES[choice]
    messages: list[Any] = [{"role": "user", "content": "Hello there."}]
    if api == "openai":
        with _oai(gateway) as client:
            text = _chat(client, messages, stream=False, tool_choice=openai_choice).text
    else:
        with _ant(gateway) as client:
            reply, _ = _message(client, messages, stream=False, tool_choice=anthropic_choice)
            text = _answer_text(reply)
    assert text == "You said: Hello there."
    assert _offered(model) == offered
    system = _system(model)
    for other in (REQUIRED_NOTE, NAMED_NOTE):
        assert (other in system) == (other == note), system
