"""Loops end to end: real ccgate, the real Claude Code CLI, the scripted model.

A loop is a long-lived agent with a workspace of its own. Each test drives the
Loop API with httpx, reads the SSE events of its turns, and checks what really
happened: the files in the workspace, what reached "the model" (the scripted
model records every request; a turn after tool calls answers
``Tool results: <id>=<text>``), the CLI processes alive under the data dir.

Covered: permissions allowed and denied, questions, interrupt, the queue, a
watcher's snapshot, idempotent retries (live, finished, after a restart), a
restart between turns, confinement of commands and file tools, choice timeout,
errors and paging, process release (archive, idle, shutdown), the usage ledger.
Waits are on the gateway's state or the stream, never on the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccgate.demo import Reply, ScriptedModel, last_user_text
from ccgate.protocol.loops import CONTENT_MAX
from ccgate.store.loops import SqlLoopStore
from tests.gateway_testing import Gateway, cli_processes, wait_for_no_processes, wait_until

pytestmark = pytest.mark.cli

ADMIN_KEY = "admin-key-of-the-loop-tests-0123456789abcdef"
FINAL = frozenset({"done", "interrupted", "error"})
COLOR_QUESTION = {
    "question": "Color?",
    "header": "c",
    "options": [
        {"label": "Blue", "description": "b"},
        {"label": "Red", "description": "r"},
    ],
    "multiSelect": False,
}


# --- reading a loop's events -----------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One SSE event of the Loop API."""

    name: str
    data: dict[str, Any]


OnEvent = Callable[[Event], None]


def _read(response: httpx.Response, on_event: OnEvent | None = None) -> list[Event]:
    """Read SSE events (pings dropped) until the turn's final event or the stream's end."""
    events: list[Event] = []
    name: str | None = None
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:") and name is not None:
            event = Event(name, json.loads(line.removeprefix("data:")))
            name = None
            if event.name == "ping":
                continue
            events.append(event)
            if on_event is not None:
                on_event(event)
            if event.name in FINAL:
                break
    return events


@dataclass
class Turn:
    """One message's stream: its turn id (``x-turn-id``) and its events."""

    turn_id: str
    events: list[Event]

    @property
    def names(self) -> list[str]:
        """Return the event names, runs of ``assistant_delta`` counted once."""
        out: list[str] = []
        for event in self.events:
            if not (out and out[-1] == event.name == "assistant_delta"):
                out.append(event.name)
        return out

    @property
    def text(self) -> str:
        """Return the assistant's text of the turn."""
        return "".join(e.data["text"] for e in self.events if e.name == "assistant_delta")

    def one(self, name: str) -> dict[str, Any]:
        """Return the data of the one event called ``name``."""
        found = [e.data for e in self.events if e.name == name]
        assert len(found) == 1, (name, self.events)
        return found[0]


# --- the Loop API --------------------------------------------------------------------------


def _client(gateway: Gateway, key: str | None = None) -> httpx.Client:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=gateway.url, headers=headers, timeout=60)


def _create(client: httpx.Client, **body: Any) -> dict[str, Any]:
    """Make a loop; return it."""
    response = client.post("/v1/loops", json=body)
    assert response.status_code == 201, response.text
    loop: dict[str, Any] = response.json()
    return loop


@contextlib.contextmanager
def _opened(
    client: httpx.Client, loop_id: str, content: str, *, key: str | None = None, **body: Any
) -> Iterator[httpx.Response]:
    """Send a message and hold its SSE response open (its headers are in)."""
    headers = {"idempotency-key": key} if key is not None else {}
    with client.stream(
        "POST",
        f"/v1/loops/{loop_id}/messages",
        json={"content": content, **body},
        headers=headers,
    ) as response:
        assert response.status_code == 200, response.read().decode()
        yield response


def _send(
    client: httpx.Client,
    loop_id: str,
    content: str,
    *,
    on_event: OnEvent | None = None,
    key: str | None = None,
) -> Turn:
    """Send a message and read its turn to the end."""
    with _opened(client, loop_id, content, key=key) as response:
        return Turn(response.headers["x-turn-id"], _read(response, on_event))


def _answer(client: httpx.Client, loop_id: str, choice_id: str, body: Any) -> httpx.Response:
    return client.post(f"/v1/loops/{loop_id}/choices/{choice_id}", json=body)


def _allow_all(client: httpx.Client, loop_id: str) -> OnEvent:
    """Return an event handler that allows every permission asked."""

    def on_event(event: Event) -> None:
        if event.name == "requires_choice":
            response = _answer(client, loop_id, event.data["choice_id"], {"allow": True})
            assert response.status_code == 202, response.text

    return on_event


def _error(response: httpx.Response, status: int, code: str) -> str:
    """Check a Loop API error's status, shape and code; return its message."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"type", "code", "message"}
    assert error["code"] == code, error
    return str(error["message"])


def _workspace(gateway: Gateway, loop_id: str) -> Path:
    return gateway.settings.loops_path / loop_id / "workspace"


def _health(gateway: Gateway) -> dict[str, Any]:
    health: dict[str, Any] = httpx.get(gateway.url + "/health", timeout=10).json()
    return health


def _tool(name: str, tool_input: dict[str, Any], lead: str = "please") -> str:
    """Return user text that makes the scripted model call a built-in tool."""
    return f"{lead} [[demo: tool={name} input={json.dumps(tool_input)}]]"


def _bash(command: str, lead: str = "please") -> str:
    return _tool("Bash", {"command": command, "description": "run it"}, lead)


# --- what reached the model ----------------------------------------------------------------


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content or [] if b.get("type") == "text")


def _last_results(model: ScriptedModel) -> list[tuple[str, str, bool]]:
    """Return the tool results of the model's last request as (tool_use_id, text, is_error)."""
    last = model.conversation_requests()[-1].body["messages"][-1]
    assert last["role"] == "user"
    return [
        (b["tool_use_id"], _text_of(b.get("content")), bool(b.get("is_error")))
        for b in _blocks(last)
        if b.get("type") == "tool_result"
    ]


def _dialogue(model: ScriptedModel) -> list[tuple[str, str]]:
    """Return the last request's user/assistant messages as (role, text), reminders left out."""
    out = []
    for message in model.conversation_requests()[-1].body["messages"]:
        if message["role"] == "system":
            continue
        text = "".join(
            b.get("text", "")
            for b in _blocks(message)
            if b.get("type") == "text" and not b.get("text", "").startswith("<system-reminder>")
        )
        out.append((message["role"], text))
    return out


def _prompts(model: ScriptedModel) -> list[str]:
    """Return the last user text of every conversation request, in order."""
    return [last_user_text(r.body) for r in model.conversation_requests()]


# --- admin API (auth_mode multi) -----------------------------------------------------------


def _make_key(gateway: Gateway, name: str) -> str:
    response = httpx.post(
        gateway.url + "/admin/keys",
        json={"name": name},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


# --- 1. permissions ------------------------------------------------------------------------


def test_an_allowed_command_runs_in_the_workspace_with_its_events_in_order(
    gateway: Gateway, model: ScriptedModel
) -> None:
    with _client(gateway) as client:
        loop = _create(client, title="builder")
        assert loop["id"].startswith("loop_")
        command = "echo hello-loop > made.txt"
        seen: dict[str, Any] = {}

        def on_event(event: Event) -> None:
            if event.name != "requires_choice":
                return
            choice_id = event.data["choice_id"]
            seen["loop"] = client.get(f"/v1/loops/{loop['id']}").json()
            assert _answer(client, loop["id"], choice_id, {"allow": True}).status_code == 202
            # A choice is answered once: the second answer finds nothing pending.
            again = _answer(client, loop["id"], choice_id, {"allow": True})
            _error(again, 404, "choice_not_found")

        turn = _send(client, loop["id"], _bash(command), on_event=on_event)
        archived = client.delete(f"/v1/loops/{loop['id']}")
    assert archived.status_code == 204

    assert turn.names == [
        "started",
        "tool_call",
        "requires_choice",
        "choice_resolved",
        "tool_result",
        "assistant_delta",
        "done",
    ]
    assert turn.one("started") == {"turn_id": turn.turn_id, "cold_start": True}
    call = turn.one("tool_call")
    assert (call["tool"], call["input_summary"]) == ("Bash", command)
    choice = turn.one("requires_choice")
    assert choice["kind"] == "permission"
    assert choice["payload"] == {
        "tool": "Bash",
        "tool_use_id": call["tool_use_id"],
        "summary": command,
        "input": {"command": command, "description": "run it"},
    }
    assert turn.one("choice_resolved") == {"choice_id": choice["choice_id"], "source": "api"}
    assert turn.one("tool_result") == {"tool_use_id": call["tool_use_id"], "ok": True}
    assert turn.text.startswith(f"Tool results: {call['tool_use_id']}=")
    done = turn.one("done")
    assert done["turn_id"] == turn.turn_id
    assert done["usage"]["input_tokens"] > 0 and done["usage"]["output_tokens"] > 0

    # While the choice waited, the loop said so.
    assert seen["loop"]["busy"] is True
    assert seen["loop"]["current_turn"]["turn_id"] == turn.turn_id
    assert seen["loop"]["current_turn"]["pending_choice_id"] == choice["choice_id"]
    # The command ran in the loop's own workspace.
    made = _workspace(gateway, loop["id"]) / "made.txt"
    assert made.read_text() == "hello-loop\n"
    [(tool_use_id, _, is_error)] = _last_results(model)
    assert (tool_use_id, is_error) == (call["tool_use_id"], False)


def test_a_denied_command_leaves_no_file_and_the_model_reads_the_reason(
    gateway: Gateway, model: ScriptedModel
) -> None:
    reason = "not in this workspace, please"
    with _client(gateway) as client:
        loop = _create(client)

        def deny(event: Event) -> None:
            if event.name == "requires_choice":
                body = {"allow": False, "message": reason}
                assert _answer(client, loop["id"], event.data["choice_id"], body).status_code == 202

        turn = _send(client, loop["id"], _bash("echo no > refused.txt"), on_event=deny)
        assert client.delete(f"/v1/loops/{loop['id']}").status_code == 204

    call = turn.one("tool_call")
    assert turn.one("choice_resolved")["source"] == "api"
    assert turn.one("tool_result") == {"tool_use_id": call["tool_use_id"], "ok": False}
    assert turn.names[-1] == "done"
    assert not (_workspace(gateway, loop["id"]) / "refused.txt").exists()
    assert _last_results(model) == [(call["tool_use_id"], reason, True)]
    assert turn.text == f"Tool results: {call['tool_use_id']}={reason} (error)"


# --- 2. questions --------------------------------------------------------------------------


def test_an_answered_question_reaches_the_model(gateway: Gateway, model: ScriptedModel) -> None:
    with _client(gateway) as client:
        loop = _create(client)
        refused: list[httpx.Response] = []

        def on_event(event: Event) -> None:
            if event.name != "requires_choice":
                return
            choice_id = event.data["choice_id"]
            # A question takes answers, not a permission's allow: 400, still pending.
            refused.append(_answer(client, loop["id"], choice_id, {"allow": True}))
            refused.append(_answer(client, loop["id"], choice_id, {"answers": ["Red"]}))
            body = {"answers": {"Color?": "Red"}}
            assert _answer(client, loop["id"], choice_id, body).status_code == 202

        question = _tool("AskUserQuestion", {"questions": [COLOR_QUESTION]}, "ask me")
        turn = _send(client, loop["id"], question, on_event=on_event)
        assert client.delete(f"/v1/loops/{loop['id']}").status_code == 204

    _error(refused[0], 400, "invalid_choice_payload")
    assert refused[1].status_code == 400
    choice = turn.one("requires_choice")
    assert (choice["kind"], choice["payload"]) == ("question", {"questions": [COLOR_QUESTION]})
    assert turn.one("choice_resolved") == {"choice_id": choice["choice_id"], "source": "api"}
    call = turn.one("tool_call")
    assert call["tool"] == "AskUserQuestion"
    assert turn.one("tool_result") == {"tool_use_id": call["tool_use_id"], "ok": True}
    assert turn.names[-1] == "done"
    [(tool_use_id, text, is_error)] = _last_results(model)
    assert (tool_use_id, is_error) == (call["tool_use_id"], False)
    assert '"Color?"="Red"' in text
    assert "Blue" not in text


def test_a_question_is_announced_by_its_tool_call_before_the_choice(
    gateway: Gateway, model: ScriptedModel
) -> None:
    with _client(gateway) as client:
        loop = _create(client)

        def on_event(event: Event) -> None:
            if event.name == "requires_choice":
                body = {"answers": {"Color?": "Blue"}}
                assert _answer(client, loop["id"], event.data["choice_id"], body).status_code == 202

        question = _tool("AskUserQuestion", {"questions": [COLOR_QUESTION]}, "ask me")
        turn = _send(client, loop["id"], question, on_event=on_event)
        assert client.delete(f"/v1/loops/{loop['id']}").status_code == 204

    assert turn.names[:3] == ["started", "tool_call", "requires_choice"]


def test_a_malformed_choice_payload_is_invalid_choice_payload(
    gateway: Gateway, model: ScriptedModel
) -> None:
    with _client(gateway) as client:
        loop = _create(client)
        refused: list[httpx.Response] = []

        def on_event(event: Event) -> None:
            if event.name != "requires_choice":
                return
            choice_id = event.data["choice_id"]
            for body in ({"allow": "maybe"}, {"answers": ["Red"]}, {"allow": True, "why": 1}):
                refused.append(_answer(client, loop["id"], choice_id, body))
            assert _answer(client, loop["id"], choice_id, {"allow": False}).status_code == 202

        turn = _send(client, loop["id"], _bash("echo x > x.txt"), on_event=on_event)
        assert client.delete(f"/v1/loops/{loop['id']}").status_code == 204
    assert turn.names[-1] == "done"
    assert [r.status_code for r in refused] == [400, 400, 400]
    assert [r.json()["error"]["code"] for r in refused] == ["invalid_choice_payload"] * 3


# --- 3. interrupt --------------------------------------------------------------------------


def test_an_interrupt_stops_the_turn_and_the_queued_message_then_runs(
    gateway: Gateway, model: ScriptedModel, data_dir: Path
) -> None:
    with _client(gateway) as client, ThreadPoolExecutor(2) as pool:
        loop = _create(client)
        slow = pool.submit(_send, client, loop["id"], "think long [[demo: stall=30]]")
        assert wait_until(lambda: len(model.conversation_requests()) == 1, within=60)
        before = cli_processes(data_dir)
        assert before
        # The stalled request is recorded; the next conversation request gets this reply
        # (the CLI keeps the interrupted prompt in its history, directive and all).
        model.script(Reply(text="fresh after the interrupt"))
        with _opened(client, loop["id"], "and now this") as queued:
            state = client.get(f"/v1/loops/{loop['id']}").json()
            stopped = client.post(f"/v1/loops/{loop['id']}/interrupt")
            stopped_turn = slow.result(timeout=60)
            after = Turn(queued.headers["x-turn-id"], _read(queued))
        processes = cli_processes(data_dir)
        assert client.delete(f"/v1/loops/{loop['id']}").status_code == 204

    assert (state["busy"], state["queue_depth"]) == (True, 1)
    assert state["current_turn"]["turn_id"] == stopped_turn.turn_id
    assert stopped.status_code == 202
    assert stopped.json() == {"loop_id": loop["id"], "interrupted": True}
    assert stopped_turn.names == ["started", "interrupted"]
    assert stopped_turn.one("interrupted") == {"turn_id": stopped_turn.turn_id}

    assert after.names == ["queued", "started", "assistant_delta", "done"]
    assert after.one("queued") == {"position": 1, "turn_id": after.turn_id}
    assert after.text == "fresh after the interrupt"
    assert "and now this" in _prompts(model)[-1]
    assert len(model.conversation_requests()) == 2
    if after.one("started")["cold_start"]:
        assert not set(before) & set(processes), "the interrupted process was replaced"
    else:
        assert set(processes) == set(before), "the same process took the next turn"


# --- 4. the queue --------------------------------------------------------------------------


def test_messages_sent_together_queue_and_run_in_order(
    gateway: Gateway, model: ScriptedModel
) -> None:
    texts = ["first [[demo: chunks=2 delay=0.5]]", "second", "third"]
    with _client(gateway) as client, contextlib.ExitStack() as stack:
        loop = _create(client)
        responses = [stack.enter_context(_opened(client, loop["id"], t)) for t in texts]
        state = client.get(f"/v1/loops/{loop['id']}").json()
        turns = [Turn(r.headers["x-turn-id"], _read(r)) for r in responses]
        stack.close()
        assert client.delete(f"/v1/loops/{loop['id']}").status_code == 204

    assert (state["busy"], state["queue_depth"]) == (True, 2)
    assert state["current_turn"]["turn_id"] == turns[0].turn_id
    assert [t.names for t in turns] == [
        ["started", "assistant_delta", "done"],
        ["queued", "started", "assistant_delta", "done"],
        ["queued", "started", "assistant_delta", "done"],
    ]
    assert [t.one("queued")["position"] for t in turns[1:]] == [1, 2]
    assert [t.one("started")["cold_start"] for t in turns] == [True, False, False]
    assert [t.text for t in turns] == ["You said: first", "You said: second", "You said: third"]
    assert _prompts(model) == texts
    assert len({t.turn_id for t in turns}) == 3


# --- 5. watching ---------------------------------------------------------------------------


def test_a_watcher_joining_mid_turn_gets_a_snapshot_then_the_rest(
    gateway: Gateway, model: ScriptedModel
) -> None:
    with _client(gateway) as client, ThreadPoolExecutor(1) as pool:
        loop = _create(client)
        first_delta = threading.Event()

        def on_event(event: Event) -> None:
            if event.name == "assistant_delta":
                first_delta.set()

        text = "one two three four five six seven eight [[demo: chunks=4 delay=0.7]]"
        sending = pool.submit(_send, client, loop["id"], text, on_event=on_event)
        assert first_delta.wait(timeout=60)
        with client.stream("GET", f"/v1/loops/{loop['id']}/events") as response:
            assert response.status_code == 200
            watched = _read(response)
        turn = sending.result(timeout=60)
        assert client.delete(f"/v1/loops/{loop['id']}").status_code == 204

    full = "You said: one two three four five six seven eight"
    assert turn.text == full
    assert watched[0].name == "snapshot"
    snapshot = watched[0].data
    assert snapshot["turn_id"] == turn.turn_id
    assert snapshot["pending_choice_id"] is None
    so_far = snapshot["assistant_text_so_far"]
    assert so_far and full.startswith(so_far)
    rest = Turn(turn.turn_id, watched[1:])
    assert set(rest.names) <= {"assistant_delta", "done"}
    assert rest.text, "the watcher saw the turn go on"
    assert so_far + rest.text == full, "nothing lost, nothing repeated"
    assert watched[-1] == turn.events[-1]


# --- 6. idempotency ------------------------------------------------------------------------


def test_an_idempotent_retry_replays_the_turn_instead_of_sending_again(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = make_gateway()
    text = "only once please [[demo: chunks=3 delay=0.5]]"
    key = "retry-key-0001"
    with _client(gateway) as client, ThreadPoolExecutor(1) as pool:
        loop = _create(client)
        started = threading.Event()

        def on_event(event: Event) -> None:
            if event.name == "started":
                started.set()

        first = pool.submit(_send, client, loop["id"], text, key=key, on_event=on_event)
        assert started.wait(timeout=60)
        live = _send(client, loop["id"], text, key=key)
        original = first.result(timeout=60)
        finished = _send(client, loop["id"], text, key=key)
        conflict = client.post(
            f"/v1/loops/{loop['id']}/messages",
            json={"content": "something else"},
            headers={"idempotency-key": key},
        )
    assert original.names == ["started", "assistant_delta", "done"]
    assert original.text == "You said: only once please"
    assert live == original, "a retry while the turn runs follows the same turn"
    assert finished == original, "a retry after the turn replays its events"
    message = _error(conflict, 409, "idempotency_key_reused")
    assert "Idempotency-Key" in message
    assert _prompts(model) == [text]

    gateway.stop()
    gateway = make_gateway()
    with _client(gateway) as client:
        replayed = _send(client, loop["id"], text, key=key)
        assert client.delete(f"/v1/loops/{loop['id']}").status_code == 204
    assert replayed == original, "the stored events outlive a restart"
    assert _prompts(model) == [text]


def test_a_retry_while_the_events_are_being_saved_still_replays_them(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slow database write, made deterministic: finish() waits until released.
    entered, release = threading.Event(), threading.Event()
    finish = SqlLoopStore.finish

    async def held_finish(self: SqlLoopStore, namespace: str, key: str, events: Any) -> None:
        entered.set()
        while not release.is_set():
            await asyncio.sleep(0.02)
        await finish(self, namespace, key, events)

    monkeypatch.setattr(SqlLoopStore, "finish", held_finish)
    gateway = make_gateway()
    with _client(gateway) as client:
        loop = _create(client)
        try:
            original = _send(client, loop["id"], "save me", key="slow-save")
            assert entered.wait(timeout=30)
            retry = _send(client, loop["id"], "save me", key="slow-save")
        finally:
            release.set()
        assert client.delete(f"/v1/loops/{loop['id']}").status_code == 204
    assert original.names == ["started", "assistant_delta", "done"]
    assert retry == original
    assert _prompts(model) == ["save me"]


# --- 7. restart ----------------------------------------------------------------------------


def test_a_restart_between_turns_keeps_the_conversation(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, data_dir: Path
) -> None:
    gateway = make_gateway()
    with _client(gateway) as client:
        loop = _create(client, title="remembers", metadata={"team": "blue"})
        first = _send(client, loop["id"], "the word is apricot")
    assert first.text == "You said: the word is apricot"
    gateway.stop()
    assert wait_for_no_processes(data_dir) == []

    gateway = make_gateway()
    with _client(gateway) as client:
        kept = client.get(f"/v1/loops/{loop['id']}").json()
        second = _send(client, loop["id"], "which word?")
        assert client.delete(f"/v1/loops/{loop['id']}").status_code == 204
    assert (kept["title"], kept["metadata"], kept["turns"]) == ("remembers", {"team": "blue"}, 1)
    assert kept["busy"] is False
    assert second.one("started")["cold_start"] is True
    assert second.names[-1] == "done"
    assert _dialogue(model) == [
        ("user", "the word is apricot"),
        ("assistant", "You said: the word is apricot"),
        ("user", "which word?"),
    ]


# --- 8. confinement ------------------------------------------------------------------------


def test_a_command_cannot_write_outside_the_workspace(
    gateway: Gateway, model: ScriptedModel, tmp_path: Path
) -> None:
    outside = tmp_path / "escaped.txt"
    with _client(gateway) as client:
        loop = _create(client)
        command = f"echo inside > in.txt; echo out > {outside}"
        turn = _send(client, loop["id"], _bash(command), on_event=_allow_all(client, loop["id"]))
        assert client.delete(f"/v1/loops/{loop['id']}").status_code == 204
    assert turn.names[-1] == "done"
    assert (_workspace(gateway, loop["id"]) / "in.txt").read_text() == "inside\n"
    assert not outside.exists()
    assert turn.one("tool_result")["ok"] is False


def test_a_command_cannot_read_another_loop_or_the_data_dir(
    gateway: Gateway, model: ScriptedModel, data_dir: Path
) -> None:
    with _client(gateway) as client:
        reader = _create(client, title="reader")
        other = _create(client, title="other")
        secret = _workspace(gateway, other["id"]) / "secret.txt"
        secret.write_text("SECRET-OF-THE-OTHER-LOOP")
        marker = data_dir / "marker.txt"
        marker.write_text("SECRET-OF-THE-DATA-DIR")
        command = f"echo ran-$((40+2)); cat {secret}; cat {marker}"
        turn = _send(
            client, reader["id"], _bash(command), on_event=_allow_all(client, reader["id"])
        )
        for loop in (reader, other):
            assert client.delete(f"/v1/loops/{loop['id']}").status_code == 204
    assert turn.names[-1] == "done"
    [(_, text, _)] = _last_results(model)
    assert "ran-42" in text, "the command did run"
    assert "SECRET-OF-THE-OTHER-LOOP" not in text
    assert "SECRET-OF-THE-DATA-DIR" not in text
    assert "SECRET" not in turn.text


def test_a_command_sees_no_credential_and_none_of_the_operators_variables(
    gateway: Gateway, model: ScriptedModel, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The operator's own environment, as ccgate inherits it.
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-SECRET-OF-THE-OPERATOR")
    monkeypatch.setenv("CCGATE_TEST_SETTING", "SECRET-SETTING")
    with _client(gateway) as client:
        loop = _create(client)
        command = "env; echo fds: $(ls /proc/self/fd | tr '\\n' ' ')"
        turn = _send(client, loop["id"], _bash(command), on_event=_allow_all(client, loop["id"]))
        assert client.delete(f"/v1/loops/{loop['id']}").status_code == 204
    assert turn.names[-1] == "done"
    [(_, text, _)] = _last_results(model)
    assert "PATH=" in text, "the command did run and print its environment"
    assert "demo-upstream-key" not in text
    assert "ghp-SECRET-OF-THE-OPERATOR" not in text
    assert "SECRET-SETTING" not in text
    assert "ANTHROPIC_API_KEY" not in text
    # Descriptors 0-2 and the one ls opens for itself: not the CLI's credential descriptor.
    fds = text.split("fds:")[1].split()
    assert len(fds) <= 4, fds
    # The credential reached the model all the same, and its file is gone.
    agent_calls = [r for r in model.conversation_requests()]
    assert agent_calls and all(
        r.headers.get("x-api-key") == "demo-upstream-key" for r in agent_calls
    )
    assert not list((data_dir / "run").glob("credential-*"))


def test_a_command_cannot_reach_ccgate_or_other_local_services(
    gateway: Gateway, model: ScriptedModel, demo: Any
) -> None:
    ports = [httpx.URL(gateway.url).port, httpx.URL(demo.url).port]
    probes = "; ".join(
        f"(exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo open-{port} || echo shut-{port}"
        for port in ports
    )
    with _client(gateway) as client:
        loop = _create(client)
        turn = _send(client, loop["id"], _bash(probes), on_event=_allow_all(client, loop["id"]))
        assert client.delete(f"/v1/loops/{loop['id']}").status_code == 204
    assert turn.names[-1] == "done"
    [(_, text, _)] = _last_results(model)
    assert all(f"shut-{port}" in text for port in ports), text
    # The same probe outside the sandbox finds them open: it can tell.
    outside = subprocess.run(["bash", "-c", probes], capture_output=True, text=True, check=True)
    assert all(f"open-{port}" in outside.stdout for port in ports), outside.stdout


def test_a_watcher_sees_queued_messages_and_an_archived_loop_cannot_be_watched(
    gateway: Gateway, model: ScriptedModel
) -> None:
    with _client(gateway) as client, ThreadPoolExecutor(2) as pool:
        loop = _create(client)
        seen: list[Event] = []
        watching = threading.Event()

        def watch() -> None:  # to the end of the watch, not of a turn
            with client.stream("GET", f"/v1/loops/{loop['id']}/events") as response:
                watching.set()
                name = None
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        name = line.removeprefix("event:").strip()
                    elif line.startswith("data:") and name not in (None, "ping"):
                        seen.append(Event(str(name), json.loads(line.removeprefix("data:"))))

        watcher = pool.submit(watch)
        assert watching.wait(10)
        first = pool.submit(_send, client, loop["id"], "one [[demo: chunks=2 delay=0.5]]")
        assert wait_until(lambda: any(e.name == "started" for e in seen), within=60)
        second = _send(client, loop["id"], "two")
        first.result(timeout=60)
        assert client.delete(f"/v1/loops/{loop['id']}").status_code == 204
        watcher.result(timeout=30)
        _error(client.get(f"/v1/loops/{loop['id']}/events"), 400, "loop_archived")
    queued = [e.data for e in seen if e.name == "queued"]
    assert queued == [{"position": 1, "turn_id": second.turn_id}]
    assert seen[-1].name == "error" and seen[-1].data["code"] == "loop_closed"


def test_the_write_tool_cannot_write_outside_the_workspace(
    gateway: Gateway, model: ScriptedModel, tmp_path: Path
) -> None:
    outside = tmp_path / "written-by-tool.txt"
    with _client(gateway) as client:
        loop = _create(client)
        write = _tool("Write", {"file_path": str(outside), "content": "escaped"})
        turn = _send(client, loop["id"], write, on_event=_allow_all(client, loop["id"]))
        inside = _workspace(gateway, loop["id"]) / "kept.txt"
        write = _tool("Write", {"file_path": str(inside), "content": "kept"})
        control = _send(client, loop["id"], write, on_event=_allow_all(client, loop["id"]))
        assert client.delete(f"/v1/loops/{loop['id']}").status_code == 204
    call = turn.one("tool_call")
    assert call["tool"] == "Write"
    assert turn.one("tool_result") == {"tool_use_id": call["tool_use_id"], "ok": False}
    assert not outside.exists()
    # The same tool writes inside the workspace: the refusal above is the confinement.
    assert control.one("tool_result")["ok"] is True
    assert inside.read_text() == "kept"


# --- 9. choice timeout ---------------------------------------------------------------------


def test_an_unanswered_choice_times_out_as_a_denial(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = make_gateway(choice_timeout=1)
    with _client(gateway) as client:
        loop = _create(client)
        turn = _send(client, loop["id"], _bash("echo late > late.txt"))
        choice_id = turn.one("requires_choice")["choice_id"]
        late = _answer(client, loop["id"], choice_id, {"allow": True})
        assert client.delete(f"/v1/loops/{loop['id']}").status_code == 204

    assert turn.names == [
        "started",
        "tool_call",
        "requires_choice",
        "choice_resolved",
        "tool_result",
        "assistant_delta",
        "done",
    ]
    assert turn.one("choice_resolved") == {"choice_id": choice_id, "source": "timeout"}
    call = turn.one("tool_call")
    assert turn.one("tool_result") == {"tool_use_id": call["tool_use_id"], "ok": False}
    [(tool_use_id, text, is_error)] = _last_results(model)
    assert (tool_use_id, is_error) == (call["tool_use_id"], True)
    assert "late" not in text
    assert not (_workspace(gateway, loop["id"]) / "late.txt").exists()
    _error(late, 404, "choice_not_found")


# --- 10. errors and paging -----------------------------------------------------------------


def test_an_unknown_loop_is_404(gateway: Gateway, model: ScriptedModel) -> None:
    with _client(gateway) as client:
        _error(client.get("/v1/loops/loop_nope"), 404, "loop_not_found")
        sent = client.post("/v1/loops/loop_nope/messages", json={"content": "x"})
        _error(sent, 404, "loop_not_found")
        _error(client.get("/v1/loops/loop_nope/events"), 404, "loop_not_found")
        _error(client.post("/v1/loops/loop_nope/interrupt"), 404, "loop_not_found")
        answered = _answer(client, "loop_nope", "choice_x", {"allow": True})
        _error(answered, 404, "loop_not_found")
        _error(client.delete("/v1/loops/loop_nope"), 404, "loop_not_found")


def test_a_loop_with_bad_settings_is_not_made(gateway: Gateway, model: ScriptedModel) -> None:
    with _client(gateway) as client:
        refused = client.post("/v1/loops", json={"permission_mode": "yolo"})
        message = _error(refused, 400, "invalid_permission_mode")
        assert all(mode in message for mode in ("default", "acceptEdits", "plan"))
        bypass = client.post("/v1/loops", json={"permission_mode": "bypassPermissions"})
        _error(bypass, 400, "invalid_permission_mode")
        assert client.post("/v1/loops", json={"title": "t" * 201}).status_code == 400
        too_big = {"blob": "m" * (16 * 1024)}
        _error(client.post("/v1/loops", json={"metadata": too_big}), 400, "metadata_too_large")
        assert client.get("/v1/loops").json()["data"] == []
        # Right at the limits, a loop is made.
        made = _create(client, title="t" * 200, metadata={"blob": "m" * (15 * 1024)})
        assert (len(made["title"]), made["permission_mode"]) == (200, "default")
        assert (made["busy"], made["queue_depth"], made["current_turn"]) == (False, 0, None)
        assert client.delete(f"/v1/loops/{made['id']}").status_code == 204


def test_bad_messages_are_refused_without_a_turn(gateway: Gateway, model: ScriptedModel) -> None:
    with _client(gateway) as client:
        loop = _create(client)
        send = f"/v1/loops/{loop['id']}/messages"
        refused = client.post(send, json={"content": "x", "permission_mode": "yolo"})
        message = _error(refused, 400, "invalid_permission_mode")
        assert all(mode in message for mode in ("default", "acceptEdits", "plan"))
        oversized = client.post(send, json={"content": "x" * (CONTENT_MAX + 1)})
        _error(oversized, 413, "content_too_large")
        assert oversized.json()["error"]["type"] == "request_too_large"
        long_key = client.post(send, json={"content": "x"}, headers={"idempotency-key": "k" * 257})
        assert long_key.status_code == 400
        assert client.post(send, json={"content": ""}).status_code == 400
        _error(_answer(client, loop["id"], "choice_nope", {"allow": True}), 404, "choice_not_found")
        assert client.get(f"/v1/loops/{loop['id']}").json()["turns"] == 0
        assert client.delete(f"/v1/loops/{loop['id']}").status_code == 204
    assert model.conversation_requests() == []


def test_an_archived_loop_takes_no_messages(gateway: Gateway, model: ScriptedModel) -> None:
    with _client(gateway) as client:
        loop = _create(client)
        assert client.delete(f"/v1/loops/{loop['id']}").status_code == 204
        archived = client.get(f"/v1/loops/{loop['id']}").json()
        assert archived["archived"] is True and archived["archived_at"] is not None
        sent = client.post(f"/v1/loops/{loop['id']}/messages", json={"content": "hello"})
        _error(sent, 400, "loop_archived")
    assert model.conversation_requests() == []


def test_content_over_one_megabyte_of_utf8_is_refused(
    gateway: Gateway, model: ScriptedModel
) -> None:
    content = "é" * 600_000
    assert len(content.encode()) > 1024 * 1024
    with _client(gateway) as client:
        loop = _create(client)
        try:
            with client.stream(
                "POST", f"/v1/loops/{loop['id']}/messages", json={"content": content}
            ) as response:
                status = response.status_code
        finally:
            assert client.delete(f"/v1/loops/{loop['id']}").status_code == 204
    assert status == 413


def test_another_keys_loop_is_forbidden(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = make_gateway(auth_mode="multi", admin_key=ADMIN_KEY)
    alice, bob = _make_key(gateway, "alice"), _make_key(gateway, "bob")
    with _client(gateway, alice) as mine, _client(gateway, bob) as theirs:
        loop = _create(mine, title="alice's")
        path = f"/v1/loops/{loop['id']}"
        _error(theirs.get(path), 403, "not_loop_owner")
        _error(theirs.post(path + "/messages", json={"content": "hi"}), 403, "not_loop_owner")
        _error(theirs.get(path + "/events"), 403, "not_loop_owner")
        _error(theirs.post(path + "/interrupt"), 403, "not_loop_owner")
        _error(theirs.post(path + "/choices/choice_x", json={"allow": True}), 403, "not_loop_owner")
        _error(theirs.delete(path), 403, "not_loop_owner")
        _error(theirs.get("/v1/loops/loop_nope"), 404, "loop_not_found")
        assert theirs.get("/v1/loops").json()["data"] == []
        assert [x["id"] for x in mine.get("/v1/loops").json()["data"]] == [loop["id"]]
        assert mine.get(path).json()["archived"] is False
        assert httpx.get(gateway.url + "/v1/loops", timeout=10).status_code == 401
        assert mine.delete(path).status_code == 204
    assert model.conversation_requests() == []


def test_the_list_pages_newest_first(gateway: Gateway, model: ScriptedModel) -> None:
    with _client(gateway) as client:
        made = [_create(client, title=f"loop {n}")["id"] for n in range(5)]
        newest = made[::-1]

        def page(**params: Any) -> dict[str, Any]:
            response = client.get("/v1/loops", params=params)
            assert response.status_code == 200, response.text
            listed: dict[str, Any] = response.json()
            return listed

        def ids(body: dict[str, Any]) -> list[str]:
            return [loop["id"] for loop in body["data"]]

        everything = page()
        assert ids(everything) == newest and everything["has_more"] is False
        first = page(limit=2)
        assert ids(first) == newest[:2] and first["has_more"] is True
        assert (first["first_id"], first["last_id"]) == (newest[0], newest[1])
        second = page(limit=2, after=first["last_id"])
        assert ids(second) == newest[2:4] and second["has_more"] is True
        third = page(limit=2, after=second["last_id"])
        assert ids(third) == newest[4:] and third["has_more"] is False
        back = page(limit=2, before=second["first_id"])
        assert ids(back) == newest[:2] and back["has_more"] is False
        back = page(limit=2, before=third["first_id"])
        assert ids(back) == newest[2:4] and back["has_more"] is True

        assert client.delete(f"/v1/loops/{made[2]}").status_code == 204
        assert made[2] not in ids(page())
        with_archived = page(archived="true")
        assert ids(with_archived) == newest
        assert [x["archived"] for x in with_archived["data"]] == [False, False, True, False, False]
        for bad in ({"limit": 0}, {"limit": 101}):
            assert client.get("/v1/loops", params=bad).status_code == 400
        for loop_id in made:
            client.delete(f"/v1/loops/{loop_id}")
        assert page()["data"] == [] and page()["first_id"] is None


# --- 11. processes -------------------------------------------------------------------------


def test_archiving_ends_the_process_at_once(
    gateway: Gateway, model: ScriptedModel, data_dir: Path
) -> None:
    with _client(gateway) as client:
        loop = _create(client)
        assert _send(client, loop["id"], "hello").names[-1] == "done"
        assert cli_processes(data_dir)
        assert _health(gateway)["loops_active"] == 1
        assert client.delete(f"/v1/loops/{loop['id']}").status_code == 204
        assert cli_processes(data_dir) == []
        assert _health(gateway)["loops_active"] == 0
        _error(
            client.post(f"/v1/loops/{loop['id']}/messages", json={"content": "again"}),
            400,
            "loop_archived",
        )


def test_an_idle_loop_releases_its_process_and_resumes_its_session(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, data_dir: Path
) -> None:
    gateway = make_gateway(loop_idle_timeout=0.5)
    with _client(gateway) as client:
        loop = _create(client)
        first = _send(client, loop["id"], "remember plum")
        assert first.one("started")["cold_start"] is True
        assert wait_until(
            lambda: _health(gateway)["loops_active"] == 0 and not cli_processes(data_dir),
            within=30,
        )
        second = _send(client, loop["id"], "what did I say?")
        assert client.delete(f"/v1/loops/{loop['id']}").status_code == 204
    assert second.one("started")["cold_start"] is True
    assert second.text == "You said: what did I say?"
    assert _dialogue(model) == [
        ("user", "remember plum"),
        ("assistant", "You said: remember plum"),
        ("user", "what did I say?"),
    ]


def test_short_memory_releases_an_idle_loops_process_and_it_resumes(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, data_dir: Path
) -> None:
    # Idle loops share the budget of idle processes: below one process, none may stay.
    gateway = make_gateway(pool_memory_mb=1)
    with _client(gateway) as client:
        loop = _create(client)
        _send(client, loop["id"], "remember fig")
        # The next periodic memory check ends the idle loop's process (long before
        # loop_idle_timeout), and says so.
        assert wait_until(
            lambda: _health(gateway)["loops_active"] == 0 and not cli_processes(data_dir),
            within=30,
        )
        assert _health(gateway)["pool"]["evictions"].get("memory_loop") == 1
        second = _send(client, loop["id"], "and now?")
        assert client.delete(f"/v1/loops/{loop['id']}").status_code == 204
    assert second.one("started")["cold_start"] is True
    assert [m for m in _dialogue(model) if m[0] == "user"] == [
        ("user", "remember fig"),
        ("user", "and now?"),
    ]


def test_a_shutdown_mid_turn_leaves_no_process(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, data_dir: Path
) -> None:
    gateway = make_gateway()
    with _client(gateway) as client, ThreadPoolExecutor(1) as pool:
        loop = _create(client)

        events: list[Event] = []

        def send() -> None:
            with contextlib.suppress(httpx.HTTPError):
                _send(client, loop["id"], "never mind [[demo: stall=30]]", on_event=events.append)

        sending = pool.submit(send)
        assert wait_until(lambda: len(model.conversation_requests()) == 1, within=60)
        assert cli_processes(data_dir)
        gateway.stop()
        assert not gateway.thread.is_alive()
        sending.result(timeout=60)
    assert wait_for_no_processes(data_dir) == []
    # The stream may be cut before the turn's end is told; nothing else is sent.
    assert [e.name for e in events][:1] == ["started"]
    assert {e.name for e in events} <= {"started", "interrupted", "error"}


# --- 12. usage -----------------------------------------------------------------------------


def test_the_usage_ledger_counts_loop_turns(gateway: Gateway, model: ScriptedModel) -> None:
    with _client(gateway) as client:
        loop = _create(client)
        turns = [_send(client, loop["id"], text) for text in ("one", "two")]
        assert client.delete(f"/v1/loops/{loop['id']}").status_code == 204
        totals = client.get("/v1/usage").json()["totals"]
    usage = [t.one("done")["usage"] for t in turns]
    assert totals["requests"] == 2
    assert totals["failed_requests"] == 0
    assert totals["input_tokens"] == sum(u["input_tokens"] for u in usage)
    assert totals["output_tokens"] == sum(u["output_tokens"] for u in usage)
