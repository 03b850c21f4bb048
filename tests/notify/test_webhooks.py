"""Webhooks against a real local receiver: signed, retried, given up, never in the way."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Iterator

import pytest

from ccgate.notify.webhooks import Webhooks, sign
from tests.receiver import Received, Receiver

pytestmark = pytest.mark.server

SECRET = "hook-secret-Vq7Lm2Xc9Rt4Kb8Nw3Jd6Hf1"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    served = Receiver()
    yield served
    served.close()


def _verified(got: Received, secret: str = SECRET) -> dict[str, object]:
    """Check a delivery as a receiver should; return its body."""
    stamp = int(got.headers["x-ccgate-timestamp"])
    expected = sign(secret, stamp, got.body)
    assert hmac.compare_digest(got.headers["x-ccgate-signature"], expected)
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + got.body, "sha256").hexdigest()
    assert expected == "sha256=" + mac  # the documented recipe
    body: dict[str, object] = json.loads(got.body)
    assert got.headers["x-ccgate-event"] == body["type"]
    assert got.headers["x-ccgate-delivery"] == body["id"]
    return body


async def _until(predicate: object, within: float = 10.0) -> None:
    for _ in range(int(within / 0.02)):
        if callable(predicate) and predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


async def test_an_event_arrives_signed_at_every_url(receiver: Receiver) -> None:
    other = Receiver()
    try:
        hooks = Webhooks([receiver.url, other.url], SECRET)
        await hooks.start()
        hooks.emit("choice.pending", {"loop_id": "loop_1", "text": "café <b>"})
        await _until(lambda: receiver.received and other.received)
        await hooks.aclose()
    finally:
        other.close()
    body = _verified(receiver.received[0])
    assert body["type"] == "choice.pending"
    assert body["data"] == {"loop_id": "loop_1", "text": "café <b>"}
    assert _verified(other.received[0])["id"] == body["id"]
    assert [d.status for d in hooks.deliveries] == ["delivered", "delivered"]


async def test_a_failing_receiver_is_retried_with_the_same_id(receiver: Receiver) -> None:
    receiver.statuses = [500, 503]
    hooks = Webhooks([receiver.url], SECRET, delays=(0.05, 0.05, 0.05, 0.05))
    await hooks.start()
    hooks.emit("turn.failed", {"status": "cli_crashed"})
    await _until(lambda: hooks.deliveries and hooks.deliveries[0].status == "delivered")
    await hooks.aclose()
    ids = {json.loads(r.body)["id"] for r in receiver.received}
    assert len(receiver.received) == 3 and len(ids) == 1
    assert hooks.deliveries[0].attempts == 3 and hooks.failed == 0


async def test_a_receiver_that_never_answers_well_is_given_up_and_counted(
    receiver: Receiver,
) -> None:
    receiver.statuses = [500] * 10
    hooks = Webhooks([receiver.url], SECRET, delays=(0.02, 0.02))
    await hooks.start()
    hooks.emit("quota.exceeded", {"key": "alice"})
    await _until(lambda: hooks.failed == 1)
    await hooks.aclose()
    (delivery,) = hooks.deliveries
    assert (delivery.status, delivery.attempts, delivery.detail) == ("failed", 3, "HTTP 500")


async def test_emit_never_waits_even_for_a_dead_address() -> None:
    hooks = Webhooks(["http://127.0.0.1:9/nobody"], SECRET, delays=(0.01,), timeout=1)
    await hooks.start()
    for _ in range(100):
        hooks.emit("turn.failed", {})  # a plain call: nothing is awaited
    assert not hooks.deliveries  # queued, not one sent inline
    await _until(lambda: hooks.failed == 100, within=20)
    await hooks.aclose()
    assert all(d.detail == "ConnectError" for d in hooks.deliveries)


async def test_without_urls_nothing_is_sent_or_started() -> None:
    hooks = Webhooks([], None)
    await hooks.start()
    hooks.emit("turn.failed", {})
    await hooks.aclose()
    assert not hooks.on and not hooks.deliveries
