"""Nothing lost: every admitted request has exactly one ledger row, under a locked database and
after ``kill -9``.

A real ccgate (in a thread, or ``ccgate serve`` in a subprocess) in front of the real Claude
Code CLI and the scripted model, the official SDKs and httpx as clients. Another connection
holds SQLite's write lock with ``BEGIN IMMEDIATE`` through the ``sqlite3`` module, as a
backup or ``ccgate keys create`` would; what ccgate recorded is read from the database file.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from ccgate.demo import DemoServer, ScriptedModel
from tests.gateway_testing import Gateway, wait_for_no_processes, wait_until

pytestmark = pytest.mark.cli

ADMIN_KEY = "admin-key-of-the-nothing-lost-tests-0123456789"
#: How long a request waits for the lock in these tests (the default is 5 s).
BUSY = 0.5


# --- the database, from outside ---------------------------------------------------------------


@contextlib.contextmanager
def _write_lock(data_dir: Path) -> Iterator[None]:
    """Hold the database's write lock from another connection for the block."""
    other = sqlite3.connect(data_dir / "ccgate.db", isolation_level=None, timeout=30)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.rollback()
    finally:
        other.close()


def _query(data_dir: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the database (readers are not blocked by a writer's lock)."""
    with contextlib.closing(sqlite3.connect(data_dir / "ccgate.db", timeout=30)) as db:
        return list(db.execute(sql, args))


def _ledger(data_dir: Path, namespace: str) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(data_dir / "ccgate.db", timeout=30)) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT * FROM usage_records WHERE namespace = ? ORDER BY id", (namespace,)
        )
        return [dict(r) for r in rows]


def _ledger_of(data_dir: Path, namespace: str, rows: int) -> list[dict[str, Any]]:
    """Return the namespace's ledger once it has ``rows`` rows (written behind the answers)."""
    assert wait_until(lambda: len(_ledger(data_dir, namespace)) >= rows, within=30)
    return _ledger(data_dir, namespace)


def _admissions(data_dir: Path) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(data_dir / "ccgate.db", timeout=30)) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM admissions")]


def _counters(data_dir: Path, namespace: str) -> tuple[int, int]:
    """Return the requests and tokens counted in the namespace's day windows."""
    rows = _query(
        data_dir,
        "SELECT requests, tokens FROM quota_counters WHERE namespace = ? AND window = 'day'",
        namespace,
    )
    return (sum(r[0] for r in rows), sum(r[1] for r in rows))


def _tokens(row: dict[str, Any]) -> int:
    return int(
        row["input_tokens"]
        + row["output_tokens"]
        + row["cache_read_tokens"]
        + row["cache_creation_tokens"]
    )


# --- gateways and keys ------------------------------------------------------------------------


def _multi(make_gateway: Callable[..., Gateway], **settings: Any) -> Gateway:
    return make_gateway(
        auth_mode="multi", admin_key=ADMIN_KEY, database_busy_timeout=BUSY, **settings
    )


def _make_key(url: str, name: str = "alice") -> dict[str, Any]:
    response = httpx.post(
        url + "/admin/keys",
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        json={"name": name, "quota": {"tokens_per_day": 10_000_000}},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()
    return made


def _oai(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)


def _ant(url: str, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=key, max_retries=0, timeout=60)


def _user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


# --- (a) locked before the turn: 503 with Retry-After, in each protocol's shape -------------


def test_a_locked_database_before_a_turn_is_a_503_in_each_protocol(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, data_dir: Path
) -> None:
    gateway = _multi(make_gateway)
    made = _make_key(gateway.url)
    refusals: list[openai.APIStatusError | anthropic.APIStatusError] = []
    waited: list[float] = []
    with (
        _write_lock(data_dir),
        _oai(gateway.url, made["key"]) as oai,
        _ant(gateway.url, made["key"]) as ant,
    ):
        for stream in (False, True):
            started = time.monotonic()
            with pytest.raises(openai.InternalServerError) as by_openai:
                oai.chat.completions.create(
                    model="sonnet", messages=_user("blocked"), stream=stream
                )
            waited.append(time.monotonic() - started)
            refusals.append(by_openai.value)
            with pytest.raises(anthropic.InternalServerError) as by_anthropic:
                ant.messages.create(
                    model="sonnet", max_tokens=50, messages=_user("blocked"), stream=stream
                )
            refusals.append(by_anthropic.value)
    print(f"waited for the lock: {', '.join(f'{w:.2f} s' for w in waited)}")
    for refusal in refusals:
        assert refusal.status_code == 503
        assert refusal.response.headers["retry-after"] == "1"
        assert refusal.response.headers["x-should-retry"] == "true"
        assert "locked by another process" in refusal.response.text
    openai_body = refusals[0].response.json()["error"]
    assert (openai_body["type"], openai_body["code"]) == ("server_error", "database_busy")
    anthropic_body = refusals[1].response.json()
    assert anthropic_body["type"] == "error" and anthropic_body["error"]["type"] == "api_error"
    # Nothing ran, nothing was counted, nothing is owed.
    assert model.conversation_requests() == []
    assert _counters(data_dir, made["id"]) == (0, 0)
    assert _admissions(data_dir) == [] and _ledger(data_dir, made["id"]) == []
    # The lock gone, the same request goes through and is recorded once.
    with _oai(gateway.url, made["key"]) as oai:
        reply = oai.chat.completions.create(model="sonnet", messages=_user("free"))
    assert reply.choices[0].message.content == "You said: free"
    [row] = _ledger_of(data_dir, made["id"], 1)
    assert row["status"] == "ok"
    assert _counters(data_dir, made["id"]) == (1, _tokens(row))


# --- (b) locked during and after the turn: the answer, then the bookkeeping -----------------

SLOW = "slowly [[demo: chunks=6 delay=0.4]]"


def _in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(work())
        except Exception as exc:  # noqa: BLE001 - the test looks at what came back
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _answer(url: str, key: str, protocol: str, stream: bool) -> tuple[str, list[str]]:
    """Ask for the slow answer; return its text and the last few SSE lines (if streamed)."""
    if not stream:
        if protocol == "openai":
            with _oai(url, key) as oai:
                reply = oai.chat.completions.create(model="sonnet", messages=_user(SLOW))
            return reply.choices[0].message.content or "", []
        with _ant(url, key) as ant:
            message = ant.messages.create(model="sonnet", max_tokens=100, messages=_user(SLOW))
        return "".join(b.text for b in message.content if b.type == "text"), []
    path = "/v1/chat/completions" if protocol == "openai" else "/v1/messages"
    body = {"model": "sonnet", "max_tokens": 100, "stream": True, "messages": _user(SLOW)}
    lines: list[str] = []
    with httpx.stream(
        "POST", url + path, json=body, headers={"authorization": f"Bearer {key}"}, timeout=60
    ) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
    text = ""
    for line in lines:
        if not line.startswith("data: {"):
            continue
        data = json.loads(line[len("data: ") :])
        if protocol == "openai":
            text += "".join(c["delta"].get("content") or "" for c in data.get("choices", []))
        elif data.get("type") == "content_block_delta":
            text += data["delta"].get("text", "")
    return text, lines[-4:]


@pytest.mark.parametrize(
    ("protocol", "stream"),
    [("openai", False), ("openai", True), ("anthropic", False), ("anthropic", True)],
)
def test_a_lock_taken_during_a_turn_delays_the_bookkeeping_not_the_answer(
    make_gateway: Callable[..., Gateway],
    model: ScriptedModel,
    data_dir: Path,
    protocol: str,
    stream: bool,
) -> None:
    gateway = _multi(make_gateway)
    made = _make_key(gateway.url)
    journal = data_dir / "journal.jsonl"
    thread, out = _in_thread(lambda: _answer(gateway.url, made["key"], protocol, stream))
    with contextlib.ExitStack() as held:
        # The turn is under way (admitted, its session bound); another process takes the lock.
        assert wait_until(lambda: bool(model.conversation_requests()), within=60)
        held.enter_context(_write_lock(data_dir))
        thread.join(timeout=60)
        [result] = out
        assert not isinstance(result, BaseException), result
        text, ending = result
        assert text == "You said: slowly"
        if stream and protocol == "openai":
            assert ending[-1] == "data: [DONE]"
            assert '"finish_reason":"stop"' in ending[-2]
        elif stream:
            assert ending[-2:] == ["event: message_stop", 'data: {"type":"message_stop"}']

        # While the lock is held, the turn's bookkeeping waits in the journal, private (the
        # settlement gets there behind the answer, once the database kept it waiting).
        def kinds() -> list[str]:
            return [json.loads(line)["kind"] for line in journal.read_text().splitlines()]

        assert wait_until(lambda: "settle" in kinds(), within=30)
        assert stat.S_IMODE(journal.stat().st_mode) == 0o600
        assert "session_turn" in kinds()
        assert _ledger(data_dir, made["id"]) == []
        assert len(_admissions(data_dir)) == 1
    # The lock gone, the journal is replayed: one row, the tokens charged, nothing owed.
    assert wait_until(lambda: bool(_ledger(data_dir, made["id"])), within=30)
    [row] = _ledger(data_dir, made["id"])
    assert row["status"] == "ok" and row["output_tokens"] > 0
    assert _counters(data_dir, made["id"]) == (1, _tokens(row))
    assert wait_until(lambda: _admissions(data_dir) == [] and journal.read_text() == "")
    # The session's turn was recorded too: the next request continues the conversation.
    sessions = _query(data_dir, "SELECT turns FROM sessions WHERE namespace = ?", made["id"])
    assert sessions == [(1,)]


def test_a_journal_left_by_a_stopped_gateway_is_replayed_at_start(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, data_dir: Path
) -> None:
    first = _multi(make_gateway)
    made = _make_key(first.url)
    thread, out = _in_thread(lambda: _answer(first.url, made["key"], "openai", False))
    assert wait_until(lambda: bool(model.conversation_requests()), within=60)
    with _write_lock(data_dir):
        thread.join(timeout=60)
        assert out[0][0] == "You said: slowly"
        first.stop()  # with the bookkeeping still in the journal
        assert _ledger(data_dir, made["id"]) == []
    second = _multi(make_gateway)
    # Replayed before the new gateway serves anything.
    [row] = _ledger(data_dir, made["id"])
    assert row["status"] == "ok"
    assert _counters(data_dir, made["id"]) == (1, _tokens(row))
    assert _admissions(data_dir) == []
    assert httpx.get(second.url + "/health").status_code == 200


def _loop_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """Read a loop turn's SSE events (pings dropped) to its final event."""
    events: list[tuple[str, dict[str, Any]]] = []
    name = None
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:") and name is not None and name != "ping":
            events.append((name, json.loads(line.removeprefix("data:"))))
            if name in ("done", "interrupted", "error"):
                break
    return events


def test_a_loop_turn_under_a_locked_database(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, data_dir: Path
) -> None:
    gateway = make_gateway(database_busy_timeout=BUSY)
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        made = client.post("/v1/loops", json={"title": "busy"})
        assert made.status_code == 201, made.text
        loop_id = made.json()["id"]
        path = f"/v1/loops/{loop_id}/messages"
        # Before the turn: refused in the Loop API's shape, nothing remembered or counted.
        with _write_lock(data_dir):
            refused = client.post(path, json={"content": "x"}, headers={"idempotency-key": "k0"})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "database_busy"
        assert _query(data_dir, "SELECT count(*) FROM loop_requests") == [(0,)]
        # During the turn: the stream ends with done; its records wait for the lock.
        with contextlib.ExitStack() as held:
            response = held.enter_context(
                client.stream(
                    "POST", path, json={"content": SLOW}, headers={"idempotency-key": "k1"}
                )
            )
            assert response.status_code == 200
            assert wait_until(lambda: bool(model.conversation_requests()), within=60)
            held.enter_context(_write_lock(data_dir))
            events = _loop_events(response)
            assert events[-1][0] == "done"
            text = "".join(data["text"] for name, data in events if name == "assistant_delta")
            assert text == "You said: slowly"
            # The turn's end is told before it is recorded: wait for its records in the journal.
            journal = data_dir / "journal.jsonl"

            def kept() -> set[str]:
                lines = journal.read_text().splitlines() if journal.exists() else []
                return {json.loads(line)["kind"] for line in lines}

            assert wait_until(lambda: {"settle", "loop_turn", "loop_finish"} <= kept())
            assert _ledger(data_dir, "local") == []
            # A retry with the same key replays the turn meanwhile (it is not in the store).
            with client.stream(
                "POST", path, json={"content": SLOW}, headers={"idempotency-key": "k1"}
            ) as again:
                assert _loop_events(again)[-1][0] == "done"
    assert wait_until(lambda: bool(_ledger(data_dir, "local")), within=30)
    [row] = _ledger(data_dir, "local")
    assert (row["endpoint"], row["status"], row["session_key"]) == (
        "/v1/loops/messages",
        "ok",
        loop_id,
    )
    assert wait_until(
        lambda: _query(data_dir, "SELECT turns FROM loops WHERE id = ?", loop_id) == [(1,)]
    )
    # The journal's entries are applied one by one (each in its own transaction): the
    # idempotency record may land a moment after the ledger row and the turn count.
    finished = "SELECT done, events FROM loop_requests WHERE key = 'k1'"
    assert wait_until(lambda: [d for d, _ in _query(data_dir, finished)] == [1], within=30)
    [(done, stored)] = _query(data_dir, finished)
    assert done == 1 and json.loads(stored)[-1]["event"] == "Done"
    assert len(model.conversation_requests()) == 1


# --- (c) kill -9 mid-turn: the next start writes the row -------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(demo_url: str, data_dir: Path, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCGATE_")}
    env["CCGATE_ADMIN_KEY"] = ADMIN_KEY
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ccgate",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--upstream-url",
            demo_url,
            "--upstream-api-key",
            "x",
            "--upstream-retries",
            "0",
            "--auth-mode",
            "multi",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_kill_9_mid_turn_leaves_exactly_one_interrupted_row(
    demo: DemoServer, model: ScriptedModel, data_dir: Path
) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve(demo.url, data_dir, port)
    try:
        assert wait_until(lambda: _up(url), within=60)
        made = _make_key(url)
        body = {
            "model": "sonnet",
            "stream": True,
            "messages": _user("a long answer [[demo: chunks=60 delay=0.5]]"),
        }

        def ask() -> None:
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(
                    url + "/v1/chat/completions",
                    json=body,
                    headers={"authorization": f"Bearer {made['key']}"},
                    timeout=120,
                )

        asker = threading.Thread(target=ask, daemon=True)
        asker.start()
        # Wait for a checkpoint that knows the turn's input and some of its output.
        assert wait_until(
            lambda: any(
                a["input_tokens"] > 0 and a["output_tokens"] > 0 for a in _admissions(data_dir)
            ),
            within=60,
        )
        [admission] = _admissions(data_dir)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        asker.join(timeout=30)
        assert wait_for_no_processes(data_dir) == []
        # Counted, not recorded: what the issue found. The admission is the trace.
        assert _counters(data_dir, made["id"])[0] == 1
        assert _ledger(data_dir, made["id"]) == []
        assert len(_admissions(data_dir)) == 1

        proc = _serve(demo.url, data_dir, port)
        assert wait_until(lambda: _up(url), within=60)
        [row] = _ledger(data_dir, made["id"])
        assert row["status"] == "interrupted"
        assert (row["endpoint"], row["model"]) == ("/v1/chat/completions", "claude-sonnet-5-5")
        assert row["input_tokens"] >= admission["input_tokens"] > 0
        assert row["output_tokens"] >= admission["output_tokens"] > 0
        assert row["cost_usd"] > 0 and row["session_key"]
        assert _admissions(data_dir) == []
        assert _counters(data_dir, made["id"]) == (1, _tokens(row))
        print(
            f"interrupted row: {row['input_tokens']} input, {row['output_tokens']} output "
            f"tokens, ${row['cost_usd']:.6f}, {row['duration_ms']:.0f} ms"
        )
        # The usage summary counts it as a failed request; a new request is recorded normally.
        usage = httpx.get(
            url + "/admin/usage",
            params={"group_by": "key"},
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
            timeout=30,
        ).json()
        [group] = usage["data"]
        assert (group["requests"], group["failed_requests"]) == (1, 1)
        with _oai(url, made["key"]) as oai:
            reply = oai.chat.completions.create(model="sonnet", messages=_user("again"))
        assert reply.choices[0].message.content == "You said: again"
        rows = _ledger_of(data_dir, made["id"], 2)
        assert [r["status"] for r in rows] == ["interrupted", "ok"]
        assert _counters(data_dir, made["id"]) == (2, sum(_tokens(r) for r in rows))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
