"""The live feed: requests as they start and end, per namespace, with a bounded backlog."""

from __future__ import annotations

import asyncio

import pytest

from ccgate.access.feed import Entry, Feed, Notice, front_door

pytestmark = pytest.mark.unit


def _start(feed: Feed, namespace: str = "ns", endpoint: str = "/v1/chat/completions") -> str:
    return feed.start(namespace=namespace, key_name="k", endpoint=endpoint, model="claude-x")


def _end(feed: Feed, feed_id: str, status: str = "ok") -> None:
    feed.end(
        feed_id,
        status=status,
        ttft_ms=12.0,
        duration_ms=40.0,
        input_tokens=5,
        output_tokens=7,
        cache_tokens=0,
        cost_usd=0.001,
        cached=False,
    )


def test_a_request_shows_running_then_how_it_ended() -> None:
    feed = Feed()
    feed_id = _start(feed)
    (entry,) = feed.recent()
    assert entry.running and entry.status == "running" and entry.door == "openai"
    _end(feed, feed_id)
    (entry,) = feed.recent()
    assert not entry.running
    assert (entry.status, entry.input_tokens, entry.output_tokens) == ("ok", 5, 7)


def test_recent_is_newest_first_bounded_and_per_namespace() -> None:
    feed = Feed(kept=3)
    for namespace in ("a", "b", "a", "b"):
        _start(feed, namespace)
    assert [e.id for e in feed.recent()] == ["r4", "r3", "r2"]
    assert [e.id for e in feed.recent("a")] == ["r3"]
    _end(feed, "r1")  # no longer kept: nothing comes back
    assert all(e.id != "r1" for e in feed.recent())


def test_front_doors() -> None:
    assert front_door("/v1/chat/completions") == "openai"
    assert front_door("/v1/messages") == "anthropic"
    assert front_door("/v1/loops/messages") == "loop"


async def test_a_watcher_sees_changes_of_its_namespace_only() -> None:
    feed = Feed()
    watch = feed.watch("mine")
    _start(feed, "theirs")
    feed_id = _start(feed, "mine")
    _end(feed, feed_id)
    first = await watch.next(1)
    second = await watch.next(1)
    assert isinstance(first, Entry) and isinstance(second, Entry)
    assert (first.status, second.status) == ("running", "ok")
    assert await watch.next(0.05) is None  # nothing more: a timeout, not an end
    watch.close()
    assert feed.watchers == 0


async def test_a_watcher_that_falls_behind_is_dropped_not_kept() -> None:
    feed = Feed(backlog=10)
    slow = feed.watch()
    for _ in range(50):
        _start(feed)
    assert feed.watchers == 0 and feed.dropped == 1
    with pytest.raises(StopAsyncIteration):
        while True:
            await slow.next(1)


async def test_closing_the_feed_ends_every_watch() -> None:
    feed = Feed()
    watch = feed.watch()
    waiting = asyncio.ensure_future(watch.next(5))
    await asyncio.sleep(0)
    feed.close()
    with pytest.raises(StopAsyncIteration):
        await waiting


async def test_a_notice_reaches_the_watchers_of_its_namespace_and_is_not_kept() -> None:
    feed = Feed()
    mine, theirs = feed.watch("mine"), feed.watch("theirs")
    feed.tell(Notice("mine", "loop: allow?", "write a.txt", "/console/loops/loop_1"))
    assert await mine.next(1) == Notice(
        "mine", "loop: allow?", "write a.txt", "/console/loops/loop_1"
    )
    assert await theirs.next(0.05) is None
    assert feed.recent() == []
