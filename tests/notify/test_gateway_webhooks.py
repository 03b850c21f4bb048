"""The gateway's webhooks end to end (the real Claude Code CLI, the scripted model, a real
receiver): a loop's permission is ``choice.pending``, a failed request ``turn.failed``, a key
over its limit ``quota.exceeded``; each signed with the webhook secret."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from ccgate.demo.model import ScriptedModel
from ccgate.notify.webhooks import sign
from tests.gateway_testing import Gateway
from tests.receiver import Received, Receiver

pytestmark = pytest.mark.cli

SECRET = "hook-secret-Vq7Lm2Xc9Rt4Kb8Nw3Jd6Hf1"
ADMIN = "admin-Tq3vJ9xZr2LmP8wKd4NcYb6HsF1gUe7A"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    served = Receiver()
    yield served
    served.close()


def _events(receiver: Receiver, kind: str, within: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = [_checked(r) for r in list(receiver.received)]
        if any(body["type"] == kind for body in found):
            return [body for body in found if body["type"] == kind]
        time.sleep(0.05)
    raise AssertionError(f"no {kind} arrived: {[r.headers for r in receiver.received]}")


def _checked(got: Received) -> dict[str, Any]:
    stamp = int(got.headers["x-ccgate-timestamp"])
    assert got.headers["x-ccgate-signature"] == sign(SECRET, stamp, got.body)
    assert abs(time.time() - stamp) < 300
    body: dict[str, Any] = json.loads(got.body)
    return body


def test_a_loop_waiting_for_a_person_is_a_signed_choice_pending(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, receiver: Receiver
) -> None:
    gateway = make_gateway(webhook_urls=receiver.url, webhook_secret=SECRET)
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        loop = client.post("/v1/loops", json={"title": "hooked"}).json()
        workspace = gateway.settings.loops_path / loop["id"] / "workspace"
        target = workspace / "hooked.txt"
        tool_input = json.dumps({"file_path": str(target), "content": "x"})
        text = f"write it [[demo: tool=Write input={tool_input}]]"
        with client.stream(
            "POST", f"/v1/loops/{loop['id']}/messages", json={"content": text}
        ) as stream:
            for line in stream.iter_lines():
                if line.startswith("event: requires_choice"):
                    (pending,) = _events(receiver, "choice.pending")
                    data = pending["data"]
                    assert (data["loop_id"], data["loop_title"]) == (loop["id"], "hooked")
                    assert (data["kind"], data["tool"]) == ("permission", "Write")
                    assert "hooked.txt" in data["summary"]
                    answered = client.post(
                        f"/v1/loops/{loop['id']}/choices/{data['choice_id']}",
                        json={"allow": False, "message": "not now"},
                    )
                    assert answered.status_code == 202
                if line.startswith("event: done"):
                    break
        client.delete(f"/v1/loops/{loop['id']}")
    assert not target.exists()


def test_failures_and_quota_refusals_are_told(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, receiver: Receiver
) -> None:
    gateway = make_gateway(
        webhook_urls=receiver.url,
        webhook_secret=SECRET,
        auth_mode="multi",
        admin_key=ADMIN,
    )
    made = httpx.post(
        gateway.url + "/admin/keys",
        json={"name": "tight", "quota": {"requests_per_minute": 2}},
        headers={"authorization": f"Bearer {ADMIN}"},
    ).json()
    headers = {"authorization": f"Bearer {made['key']}"}
    failed = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={
            "model": "sonnet",
            "messages": [{"role": "user", "content": "x [[demo: error=500]]"}],
        },
        headers=headers,
        timeout=60,
    )
    assert failed.status_code >= 500
    (turn_failed,) = _events(receiver, "turn.failed")
    assert turn_failed["data"]["key"] == "tight" and turn_failed["data"]["door"] == "openai"
    statuses = [
        httpx.post(
            gateway.url + "/v1/chat/completions",
            json={"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]},
            headers=headers,
            timeout=60,
        ).status_code
        for _ in range(2)
    ]
    assert statuses[-1] == 429
    (exceeded,) = _events(receiver, "quota.exceeded")
    assert exceeded["data"]["key"] == "tight" and "per minute" in exceeded["data"]["message"]
    assert SECRET not in json.dumps([r.body.decode() for r in receiver.received])
