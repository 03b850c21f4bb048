"""Three replicas behind HAProxy (round robin, no affinity) behave as one gateway.

Each test makes its own key and checks, at its end, that the ledger has exactly one
row per turn it caused, whichever replica ran it (the killed replica's included).
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest

from ccgate.demo import ScriptedModel
from tests.gateway_testing import wait_until
from tests.replicas.conftest import Cluster

pytestmark = [pytest.mark.cli, pytest.mark.postgres]

LEDGER = "SELECT status FROM usage_records WHERE namespace = :key ORDER BY created_at"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture(scope="module")
def cluster_settings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A response cache, and one loops dir every replica mounts (a loop taken over keeps
    its files)."""
    return {
        "CCGATE_CACHE_TTL": "120",
        "CCGATE_LOOPS_DIR": str(tmp_path_factory.mktemp("shared-loops")),
    }


def _ledger(cluster: Cluster, name: str, expected: int) -> list[str]:
    """Wait for ``expected`` ledger rows of key ``name``; return their statuses."""
    key_id = cluster.keys[name]["id"]
    wait_until(lambda: len(cluster.query(LEDGER, key=key_id)) >= expected, within=30)
    time.sleep(0.5)  # nothing more arrives late
    return [row["status"] for row in cluster.query(LEDGER, key=key_id)]


def _user_texts(body: Any) -> list[str]:
    """Return the text of every user message the model received, in order."""
    texts = []
    for message in body.get("messages", []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        texts.append(" ".join(b.get("text", "") for b in blocks if b.get("type") == "text"))
    return texts


def _served(cluster: Cluster) -> list[int]:
    return [replica.health()["requests"] for replica in cluster.replicas]


def _bound(cluster: Cluster) -> int:
    """Count the sessions built from scratch (or from the client's history) on any replica."""
    return sum(
        replica.log.read_text().count('"continued": "false"') for replica in cluster.replicas
    )


# --- conversations ------------------------------------------------------------------------


def test_a_conversation_spread_over_replicas_resumes_its_session_every_turn(
    cluster: Cluster, model: ScriptedModel
) -> None:
    key = cluster.create_key("conversation")
    before, bound = _served(cluster), _bound(cluster)
    history: list[Any] = []
    with cluster.openai(key) as client:
        for n in range(10):
            history.append({"role": "user", "content": f"turn-{n:02d}"})
            reply = client.chat.completions.create(model="sonnet", messages=history)
            text = reply.choices[0].message.content
            assert text == f"You said: turn-{n:02d}"
            history.append({"role": "assistant", "content": text})
            # The model saw every earlier turn once, in order, and this one last.
            seen = _user_texts(model.conversation_requests()[-1].body)
            mine = [t for t in seen if t.startswith("turn-")]
            assert mine == [f"turn-{k:02d}" for k in range(n + 1)], seen
    served = [b - a for a, b in zip(before, _served(cluster), strict=True)]
    assert sum(1 for s in served if s) == 3, served  # round robin: every replica took turns
    # One session, bound once (its first turn); every later turn, on whichever replica,
    # resumed it from the shared transcript instead of rebuilding it.
    assert _bound(cluster) - bound == 1
    assert _ledger(cluster, "conversation", 10) == ["ok"] * 10


def test_a_conversation_goes_on_after_its_replica_is_killed(
    cluster: Cluster, model: ScriptedModel
) -> None:
    key = cluster.create_key("killed")
    history: list[Any] = [{"role": "user", "content": "first-turn"}]
    with cluster.openai(key) as client:
        reply = client.chat.completions.create(model="sonnet", messages=history)
        history.append({"role": "assistant", "content": reply.choices[0].message.content})
        history.append({"role": "user", "content": "slow-turn [[demo: chunks=40 delay=0.25]]"})
        stream = client.chat.completions.create(model="sonnet", messages=history, stream=True)
        first = next(iter(stream))
        assert first is not None
        running = [r for r in cluster.replicas if r.health()["turns"]["active"]]
        assert len(running) == 1
        victim = running[0]
        victim.kill()  # kill -9, mid-answer
        with pytest.raises((openai.APIError, httpx.HTTPError)):
            for _ in stream:
                pass
        # The client retries its turn; another replica continues the conversation.
        history[-1] = {"role": "user", "content": "after-the-kill"}
        reply = client.chat.completions.create(model="sonnet", messages=history)
        assert reply.choices[0].message.content == "You said: after-the-kill"
        seen = _user_texts(model.conversation_requests()[-1].body)
        assert [t for t in seen if t in ("first-turn", "after-the-kill")] == [
            "first-turn",
            "after-the-kill",
        ]
    # The killed replica's turn is recorded as interrupted by a replica still alive.
    statuses = _ledger(cluster, "killed", 3)
    assert sorted(statuses) == ["interrupted", "ok", "ok"], statuses
    cluster.start(victim.index)
    assert wait_until(victim.alive, within=5)


# --- live turns across replicas ---------------------------------------------------------------


def test_tool_results_sent_to_another_replica_continue_the_waiting_turn(
    cluster: Cluster,
) -> None:
    key = cluster.create_key("tools")
    ask = 'weather? [[demo: tool=get_weather input={"city":"Oslo"} id=toolu_replicas1]]'
    messages: list[Any] = [{"role": "user", "content": ask}]
    with cluster.replica_openai(0, key) as first, cluster.replica_openai(2, key) as other:
        reply = first.chat.completions.create(model="sonnet", messages=messages, tools=[WEATHER])  # type: ignore[list-item]
        call = reply.choices[0].message
        assert call.tool_calls and call.tool_calls[0].id == "toolu_replicas1"
        assert cluster.replicas[0].health()["turns"]["waiting_for_tools"] == 1
        messages.append(call.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": "toolu_replicas1", "content": "sunny"})
        raw = other.chat.completions.with_raw_response.create(
            model="sonnet",
            messages=messages,
            tools=[WEATHER],  # type: ignore[list-item]
        )
    assert raw.headers.get("x-ccgate-forwarded-by")  # replica 2 handed it to replica 0
    assert raw.parse().choices[0].message.content == "Tool results: toolu_replicas1=sunny"
    assert "turn_continued" in cluster.replicas[0].log.read_text()
    assert cluster.replicas[0].health()["turns"]["waiting_for_tools"] == 0
    # One turn in two requests: a ledger row for each (the first ended calling the tool).
    assert _ledger(cluster, "tools", 2) == ["tool_use", "ok"]


def _loop_client(cluster: Cluster, i: int, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=cluster.replicas[i].url,
        headers={"authorization": f"Bearer {key}"},
        timeout=60,
    )


def _events(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    name = None
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:") and name is not None:
            if name != "ping":
                yield name, json.loads(line.removeprefix("data:"))
            name = None


@contextmanager
def _watching(client: httpx.Client, loop_id: str) -> Iterator[list[str]]:
    """Watch a loop in the background; yield the names of the events seen so far."""
    seen: list[str] = []

    def watch() -> None:
        with client.stream("GET", f"/v1/loops/{loop_id}/events") as response:
            assert response.status_code == 200, response.read()
            for name, _ in _events(response):
                seen.append(name)
                if name in ("done", "error"):
                    return

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(watch)
        try:
            yield seen
        finally:
            future.result(timeout=60)


def test_a_loop_runs_on_one_replica_and_is_answered_and_watched_from_others(
    cluster: Cluster,
) -> None:
    key = cluster.create_key("loops")
    with (
        _loop_client(cluster, 0, key) as owner,
        _loop_client(cluster, 1, key) as chooser,
        _loop_client(cluster, 2, key) as watcher,
    ):
        loop = owner.post("/v1/loops", json={"title": "replicated"})
        assert loop.status_code == 201, loop.text
        loop_id = loop.json()["id"]
        first = owner.post(f"/v1/loops/{loop_id}/messages", json={"content": "hello"})
        assert first.status_code == 200 and "event: done" in first.text  # replica 0 owns it
        command = {"command": "echo from-a-replica > made.txt", "description": "run it"}
        content = f"please [[demo: tool=Bash input={json.dumps(command)}]]"
        names: list[str] = []
        with _watching(watcher, loop_id) as watched:
            time.sleep(1.0)  # the watch is open (forwarded to replica 0)
            with owner.stream(
                "POST", f"/v1/loops/{loop_id}/messages", json={"content": content}
            ) as response:
                assert response.status_code == 200
                for name, data in _events(response):
                    names.append(name)
                    if name == "requires_choice":
                        # The choice is answered through another replica.
                        answer = chooser.post(
                            f"/v1/loops/{loop_id}/choices/{data['choice_id']}",
                            json={"allow": True},
                        )
                        assert answer.status_code == 202, answer.text
                        assert answer.headers.get("x-ccgate-forwarded-by")
                    if name in ("done", "error"):
                        break
        assert names[-1] == "done", names
        assert "choice_resolved" in names and "tool_result" in names
        # The watcher on replica 2 saw every event of the turn on replica 0, in order.
        assert [n for n in watched if n != "snapshot"] == names
    assert _ledger(cluster, "loops", 2) == ["ok", "ok"]


# --- shared counters, cache and keys ------------------------------------------------------


def test_a_rate_limit_is_exact_across_replicas(cluster: Cluster) -> None:
    key = cluster.create_key("limited", requests_per_minute=5)

    def ask(n: int) -> int:
        with cluster.openai(key) as client:
            try:
                client.chat.completions.create(
                    model="sonnet", messages=[{"role": "user", "content": f"rate-{n}"}]
                )
            except openai.RateLimitError:
                return 429
        return 200

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(ask, range(20)))
    assert statuses.count(200) == 5 and statuses.count(429) == 15, statuses
    assert _ledger(cluster, "limited", 5) == ["ok"] * 5


def test_an_answer_cached_on_one_replica_is_a_hit_on_the_others(
    cluster: Cluster, model: ScriptedModel
) -> None:
    key = cluster.create_key("cached")
    question = [{"role": "user", "content": "cache this answer"}]
    outcomes = []
    for i in (0, 1, 2):
        with cluster.replica_openai(i, key) as client:
            raw = client.chat.completions.with_raw_response.create(
                model="sonnet",
                messages=question,  # type: ignore[arg-type]
            )
            assert raw.parse().choices[0].message.content == "You said: cache this answer"
            outcomes.append(raw.headers.get("x-ccgate-cache"))
    assert outcomes == ["miss", "hit", "hit"]
    asked = [r for r in model.conversation_requests() if "cache this answer" in str(r.body)]
    assert len(asked) == 1  # one turn upstream for three answers
    assert _ledger(cluster, "cached", 3) == ["ok"] * 3


def test_a_key_revoked_on_one_replica_is_refused_by_all_within_a_second(
    cluster: Cluster,
) -> None:
    key = cluster.create_key("revoked")
    headers = {"authorization": f"Bearer {key}"}
    for replica in cluster.replicas:  # every replica has the key cached now
        assert httpx.get(replica.url + "/v1/models", headers=headers).status_code == 200
    key_id = cluster.keys["revoked"]["id"]
    admin = {"authorization": f"Bearer {cluster.admin_key}"}
    revoked = httpx.delete(cluster.replicas[0].url + f"/admin/keys/{key_id}", headers=admin)
    assert revoked.status_code == 200, revoked.text
    started = time.monotonic()
    refused_after: dict[int, float] = {}
    while len(refused_after) < len(cluster.replicas) and time.monotonic() - started < 5:
        for replica in cluster.replicas:
            if replica.index in refused_after:
                continue
            status = httpx.get(replica.url + "/v1/models", headers=headers).status_code
            if status == 401:
                refused_after[replica.index] = time.monotonic() - started
        time.sleep(0.01)
    print(f"refused after (s): {refused_after}")
    assert len(refused_after) == len(cluster.replicas), refused_after
    assert max(refused_after.values()) <= 1.0, refused_after


def test_a_loop_whose_replica_died_is_taken_over_with_its_session(
    cluster: Cluster, model: ScriptedModel
) -> None:
    key = cluster.create_key("takeover")
    with _loop_client(cluster, 1, key) as owner, _loop_client(cluster, 2, key) as heir:
        made = owner.post("/v1/loops", json={"title": "heirloom"})
        assert made.status_code == 201, made.text
        loop_id = made.json()["id"]
        headers = {"idempotency-key": "first-message"}
        first = owner.post(
            f"/v1/loops/{loop_id}/messages", json={"content": "remember-me"}, headers=headers
        )
        assert first.status_code == 200 and "event: done" in first.text
        # The same message with the same key, sent to another replica, replays the turn.
        again = heir.post(
            f"/v1/loops/{loop_id}/messages", json={"content": "remember-me"}, headers=headers
        )
        assert again.status_code == 200
        assert again.headers["x-turn-id"] == first.headers["x-turn-id"]
        assert again.text.count("event: done") == 1
        cluster.kill(1)  # the loop's replica dies (kill -9)
        after = heir.post(f"/v1/loops/{loop_id}/messages", json={"content": "still-there?"})
        assert after.status_code == 200, after.text
        assert "event: done" in after.text and "You said: still-there?" in after.text
    # Replica 2 resumed the loop's session: the model saw the turn run on replica 1.
    seen = _user_texts(model.conversation_requests()[-1].body)
    mine = [w for t in seen for w in ("remember-me", "still-there?") if w in t]
    assert mine == ["remember-me", "still-there?"], seen
    assert "lease_taken_over" in cluster.replicas[2].log.read_text()
    assert _ledger(cluster, "takeover", 2) == ["ok", "ok"]
    cluster.start(1)
    assert wait_until(cluster.replicas[1].alive, within=5)


def test_max_concurrent_counts_what_runs_on_every_replica(cluster: Cluster) -> None:
    key = cluster.create_key("concurrent", max_concurrent=2)

    def ask(n: int) -> int:
        with cluster.openai(key) as client:
            try:
                client.chat.completions.create(
                    model="sonnet",
                    messages=[
                        {"role": "user", "content": f"slow-{n} [[demo: chunks=4 delay=0.5]]"}
                    ],
                )
            except openai.RateLimitError as exc:
                assert "max_concurrent" in str(exc)
                return 429
        return 200

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(ask, range(6)))
    # Six at once over three replicas: two run, four are told to retry.
    assert statuses.count(200) == 2 and statuses.count(429) == 4, statuses
    assert _ledger(cluster, "concurrent", 2) == ["ok", "ok"]


def test_an_interrupt_sent_to_another_replica_stops_the_loop_turn(cluster: Cluster) -> None:
    key = cluster.create_key("interrupt")
    with _loop_client(cluster, 0, key) as owner, _loop_client(cluster, 1, key) as other:
        made = owner.post("/v1/loops", json={"title": "stoppable"})
        assert made.status_code == 201, made.text
        loop_id = made.json()["id"]
        names: list[str] = []
        content = "long answer [[demo: chunks=40 delay=0.25]]"
        with owner.stream(
            "POST", f"/v1/loops/{loop_id}/messages", json={"content": content}
        ) as response:
            assert response.status_code == 200
            for name, _ in _events(response):
                names.append(name)
                if name == "assistant_delta" and names.count(name) == 1:
                    stopped = other.post(f"/v1/loops/{loop_id}/interrupt")
                    assert stopped.status_code == 202, stopped.text
                    assert stopped.json()["interrupted"] is True
                    assert stopped.headers.get("x-ccgate-forwarded-by")
                if name in ("done", "interrupted", "error"):
                    break
    assert names[-1] == "interrupted", names
    assert names.count("assistant_delta") < 40
    assert _ledger(cluster, "interrupt", 1) == ["interrupted"]
