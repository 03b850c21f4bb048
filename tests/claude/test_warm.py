"""Warm processes against the real CLI and the scripted model: reuse, the pool, isolation, release.

A conversation's second turn runs on the process of its first; new conversations
of a configuration in use take a spare the pool started ahead; no process ever
serves two conversations; idle processes end on expiry, under memory pressure,
when their session is discarded, and at shutdown.
"""

from __future__ import annotations

import concurrent.futures
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from ccgate.demo import ScriptedModel
from tests.gateway_testing import Gateway, cli_processes, wait_for_no_processes, wait_until

pytestmark = pytest.mark.cli

SYSTEM = "You are a terse assistant."


def _oai(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0, timeout=120)


def _pool(gateway: Gateway) -> dict[str, Any]:
    pool: dict[str, Any] = httpx.get(gateway.url + "/health", timeout=10).json()["pool"]
    return pool


def _ask(
    client: openai.OpenAI, history: list[ChatCompletionMessageParam], **extra: Any
) -> tuple[str, str]:
    """Send ``history`` (with the system prompt); return the reply and the session key."""
    raw = client.chat.completions.with_raw_response.create(
        model=extra.pop("model", "sonnet"),
        messages=[{"role": "system", "content": SYSTEM}, *history],
        **extra,
    )
    reply = raw.parse().choices[0].message.content or ""
    return reply, raw.headers["x-session-id"]


def _session_ids(model: ScriptedModel) -> list[str]:
    """Return the Claude Code session id of each conversation request the model received."""
    return [r.headers["x-claude-code-session-id"] for r in model.conversation_requests()]


def test_a_conversations_second_turn_runs_on_its_first_turns_process(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, data_dir: Path
) -> None:
    gateway = make_gateway()
    with _oai(gateway) as client:
        history: list[ChatCompletionMessageParam] = [{"role": "user", "content": "first"}]
        reply, key = _ask(client, history)
        assert reply == "You said: first"
        assert wait_until(lambda: _pool(gateway)["warm_idle"] == 1)
        pids = cli_processes(data_dir)
        assert len(pids) == 1
        history += [{"role": "assistant", "content": reply}, {"role": "user", "content": "second"}]
        reply, again = _ask(client, history)
        assert (reply, again) == ("You said: second", key)
        assert cli_processes(data_dir) == pids  # the same process, no new start
    pool = _pool(gateway)
    assert (pool["misses"], pool["hits_conversation"]) == (1, 1)
    # The warm process holds the conversation: the model saw both turns, once each.
    sent = model.conversation_requests()[-1].body["messages"]
    texts = [m for m in sent if m["role"] in ("user", "assistant")]
    assert len(texts) == 3
    assert len(set(_session_ids(model))) == 1


def test_a_client_tool_continuation_then_the_next_turn_stay_on_one_process(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, data_dir: Path
) -> None:
    gateway = make_gateway()
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Look a word up.",
                "parameters": {"type": "object", "properties": {"word": {"type": "string"}}},
            },
        }
    ]
    ask = 'Define it [[demo: tool=lookup input={"word": "warm"} id=toolu_w1]]'
    with _oai(gateway) as client:
        history: list[dict[str, Any]] = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": ask},
        ]
        first = client.chat.completions.create(model="sonnet", messages=history, tools=tools)  # type: ignore[arg-type]
        call = first.choices[0].message.tool_calls
        assert call and call[0].id == "toolu_w1"
        pids = cli_processes(data_dir)
        history += [
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": "toolu_w1", "content": "not cold"},
        ]
        second = client.chat.completions.create(model="sonnet", messages=history, tools=tools)  # type: ignore[arg-type]
        assert second.choices[0].finish_reason == "stop"
        history += [
            {"role": "assistant", "content": second.choices[0].message.content},
            {"role": "user", "content": "thanks"},
        ]
        third = client.chat.completions.create(model="sonnet", messages=history, tools=tools)  # type: ignore[arg-type]
        assert third.choices[0].message.content == "You said: thanks"
        assert cli_processes(data_dir) == pids
    assert _pool(gateway)["hits_conversation"] == 1


def test_the_pool_serves_a_hot_configuration_and_refills(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, data_dir: Path
) -> None:
    gateway = make_gateway(pool_max_processes=2, session_keepalive=0)
    with _oai(gateway) as client:
        for n in range(2):  # two new conversations make the configuration hot
            assert (
                _ask(client, [{"role": "user", "content": f"hello {n}"}])[0]
                == f"You said: hello {n}"
            )
        assert wait_until(lambda: _pool(gateway)["spares"] == 1, within=30)
        spare = set(cli_processes(data_dir))
        assert len(spare) == 1
        reply, _ = _ask(client, [{"role": "user", "content": "hello 2"}])
        assert reply == "You said: hello 2"
        assert _pool(gateway)["hits_pool"] == 1
        # The spare served that conversation and, with no keepalive, ended after it; a
        # replacement started in the background (two, now that three came in a minute).
        assert wait_until(lambda: _pool(gateway)["spares"] >= 1, within=30)
        assert wait_until(lambda: not spare & set(cli_processes(data_dir)), within=15)
        # Another configuration finds no spare: it starts its own process.
        other = client.chat.completions.create(
            model="sonnet",
            messages=[{"role": "system", "content": "Other."}, {"role": "user", "content": "hi"}],
        )
        assert other.choices[0].message.content == "You said: hi"
    pool = _pool(gateway)
    assert pool["hits_pool"] == 1 and pool["misses"] == 3
    # Each conversation ran in a session of its own, the pooled one included.
    assert len(set(_session_ids(model))) == 4


def test_concurrent_conversations_never_share_a_process(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, data_dir: Path
) -> None:
    gateway = make_gateway(pool_max_processes=4, max_concurrent=4)
    marks = [f"secret-{n}-{secrets.token_hex(4)}" for n in range(4)]

    def converse(mark: str) -> list[str]:
        replies = []
        with _oai(gateway) as client:
            history: list[ChatCompletionMessageParam] = []
            for turn in range(3):
                history.append({"role": "user", "content": f"{mark} turn {turn}"})
                reply, _ = _ask(client, history)
                replies.append(reply)
                history.append({"role": "assistant", "content": reply})
        return replies

    # Make the configuration hot first, so the conversations below also take spares.
    converse("warmup-a")
    converse("warmup-b")
    assert wait_until(lambda: _pool(gateway)["spares"] >= 1, within=30)
    with concurrent.futures.ThreadPoolExecutor(4) as workers:
        results = list(workers.map(converse, marks))
    for mark, replies in zip(marks, results, strict=True):
        assert replies == [f"You said: {mark} turn {n}" for n in range(3)]
    assert _pool(gateway)["hits_pool"] >= 1
    assert _pool(gateway)["hits_conversation"] >= 8
    # No request the model received mixes two conversations, and each conversation kept
    # one Claude Code session from its first turn to its last.
    sessions: dict[str, set[str]] = {}
    for request in model.conversation_requests():
        text = str(request.body["messages"])
        present = [m for m in marks if m in text]
        assert len(present) <= 1, present
        if present:
            sessions.setdefault(present[0], set()).add(request.headers["x-claude-code-session-id"])
    assert all(len(ids) == 1 for ids in sessions.values())
    assert len({next(iter(ids)) for ids in sessions.values()}) == len(marks)


def test_idle_processes_end_after_keepalive(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, data_dir: Path
) -> None:
    gateway = make_gateway(session_keepalive=1)
    with _oai(gateway) as client:
        _ask(client, [{"role": "user", "content": "brief"}])
    assert wait_for_no_processes(data_dir, within=15) == []
    assert _pool(gateway)["evictions"].get("keepalive") == 1


def test_memory_pressure_releases_idle_processes(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, data_dir: Path
) -> None:
    # A budget below one process's memory: nothing idle may stay.
    gateway = make_gateway(pool_memory_mb=1)
    with _oai(gateway) as client:
        history: list[ChatCompletionMessageParam] = [{"role": "user", "content": "one"}]
        reply, _ = _ask(client, history)
        assert wait_for_no_processes(data_dir, within=15) == []
        assert _pool(gateway)["evictions"].get("memory") == 1
        # The conversation goes on: its next turn resumes the session on a new process.
        history += [{"role": "assistant", "content": reply}, {"role": "user", "content": "two"}]
        assert _ask(client, history)[0] == "You said: two"
    assert _pool(gateway)["misses"] == 2
    assert len(set(_session_ids(model))) == 1


def test_a_failed_turn_or_a_deleted_session_keeps_no_process(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, data_dir: Path
) -> None:
    gateway = make_gateway(pool_max_processes=0)  # no spare among the processes counted
    with _oai(gateway) as client:
        with pytest.raises(openai.APIStatusError):
            _ask(client, [{"role": "user", "content": "boom [[demo: error=500]]"}])
        assert wait_for_no_processes(data_dir, within=15) == []
        _, key = _ask(client, [{"role": "user", "content": "keep me"}])
        assert wait_until(lambda: len(cli_processes(data_dir)) == 1)
        gone = httpx.delete(f"{gateway.url}/v1/sessions/{key}", timeout=10)
        assert gone.status_code == 200
    assert wait_for_no_processes(data_dir, within=15) == []
    assert _pool(gateway)["evictions"].get("released") == 1


def test_another_model_in_the_same_conversation_gets_a_process_of_its_own(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, data_dir: Path
) -> None:
    gateway = make_gateway()
    with _oai(gateway) as client:
        history: list[ChatCompletionMessageParam] = [{"role": "user", "content": "one"}]
        reply, key = _ask(client, history)
        first = cli_processes(data_dir)
        history += [{"role": "assistant", "content": reply}, {"role": "user", "content": "two"}]
        reply, again = _ask(client, history, model="opus")
        assert (reply, again) == ("You said: two", key)
        assert wait_until(lambda: len(cli_processes(data_dir)) == 1)
        assert cli_processes(data_dir) != first
    assert _pool(gateway)["evictions"].get("replaced") == 1
    assert (
        model.conversation_requests()[-1].body["model"]
        != model.conversation_requests()[0].body["model"]
    )


def test_shutdown_ends_warm_processes_and_spares(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, data_dir: Path
) -> None:
    gateway = make_gateway(pool_max_processes=2)
    with _oai(gateway) as client:
        for n in range(2):
            _ask(client, [{"role": "user", "content": f"conversation {n}"}])
    assert wait_until(lambda: _pool(gateway)["spares"] == 1, within=30)
    assert len(cli_processes(data_dir)) == 3  # two warm conversations and a spare
    gateway.stop()
    assert wait_for_no_processes(data_dir, within=15) == []
