"""The plan meter, the routing choice and the secret box, without any process."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ccgate.accounts.meter import PlanMeter
from ccgate.accounts.plan import UNKNOWN_RESET, Overage, Reading, Window, family_of
from ccgate.accounts.routing import Candidate, choose
from ccgate.accounts.secrets import KEY_FILE, SecretBox, hint
from ccgate.claude.plan import reading_of
from ccgate.errors import ConfigError

pytestmark = pytest.mark.unit

#: The frame Claude Code 2.1.337 emitted for a subscription (research notes, scenario A).
FRAME = {
    "status": "allowed_warning",
    "resetsAt": 1796539916,
    "rateLimitType": "five_hour",
    "utilization": 0.85,
    "overageStatus": "allowed",
    "overageResetsAt": 1796795516,
    "isUsingOverage": False,
    "surpassedThreshold": 0.75,
    "unifiedWindows": {
        "five_hour": {
            "utilization": 0.85,
            "resetsAt": 1796539916,
            "status": "allowed_warning",
            "surpassedThreshold": 0.75,
        },
        "seven_day": {"utilization": 0.4, "resetsAt": 1796795516, "status": "allowed"},
    },
}


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def five_hour(used: float, resets_at: float, status: str = "allowed") -> Reading:
    window = Window("five_hour", used, resets_at, status)  # type: ignore[arg-type]
    return Reading(
        observed_at=resets_at - 3600,
        source="answer",
        status=status,  # type: ignore[arg-type]
        binding="five_hour",
        resets_at=resets_at,
        windows=(window,),
    )


def test_claude_codes_frame_reads_as_windows_status_and_overage() -> None:
    reading = reading_of(FRAME, now=1796530000.0)
    assert reading.status == "warning" and reading.binding == "five_hour"
    five = reading.window("five_hour")
    seven = reading.window("seven_day")
    assert five == Window("five_hour", 0.85, 1796539916.0, "warning", 0.75)
    assert seven is not None and seven.utilization == 0.4 and seven.status == "allowed"
    assert reading.overage == Overage("allowed", 1796795516.0, None, False)
    assert not reading.billed_as_extra_usage
    assert reading.utilization() == 0.85


def test_a_per_model_window_reported_only_as_the_binding_claim() -> None:
    raw = {"status": "rejected", "resetsAt": 2000.0, "rateLimitType": "seven_day_opus"}
    reading = reading_of(raw, now=1000.0)
    assert reading.refuses("opus") is not None
    assert reading.refuses("sonnet") is None
    meter = PlanMeter(clock=Clock(1000.0))
    meter.observe("a", reading)
    assert not meter.verdict("a", "opus").usable
    assert meter.verdict("a", "sonnet").usable, "an Opus refusal leaves Sonnet alone"


def test_a_refusal_cools_down_until_the_reset_and_never_longer() -> None:
    clock = Clock()
    news: list[tuple[str, tuple[str, ...]]] = []
    meter = PlanMeter(clock=clock, on_change=lambda a, s, n: news.append((a, n)))
    meter.observe("a", five_hour(1.0, clock.now + 600, "rejected"))
    verdict = meter.verdict("a")
    assert not verdict.usable and verdict.until == clock.now + 600
    assert verdict.limit == "plan_window" and "5-hour window is used up" in (verdict.reason or "")
    assert news[-1] == ("a", ("rejected",))
    # A success seen while the plan still says "used up" (an answer from before) changes nothing.
    meter.succeeded("a")
    assert not meter.verdict("a").usable
    clock.now += 601
    assert meter.verdict("a").usable
    state = meter.state("a")
    assert state.reading is not None and state.reading.status == "allowed"
    window = state.reading.window("five_hour")
    assert window is not None and window.utilization == 0.0 and window.status == "allowed"


def test_a_refusal_without_a_reset_time_does_not_stay_forever() -> None:
    clock = Clock()
    meter = PlanMeter(clock=clock)
    raw = {"status": "rejected", "rateLimitType": "five_hour"}
    meter.observe("a", reading_of(raw, now=clock.now))
    assert not meter.verdict("a").usable
    clock.now += UNKNOWN_RESET + 1
    assert meter.verdict("a").usable


def test_extra_usage_is_a_refusal_unless_allowed() -> None:
    clock = Clock()
    billed = Reading(
        observed_at=clock.now,
        source="answer",
        status="rejected",
        binding="five_hour",
        resets_at=clock.now + 900,
        windows=(Window("five_hour", 1.02, clock.now + 900, "rejected"),),
        overage=Overage("allowed", clock.now + 86400, None, True),
    )
    news: list[tuple[str, ...]] = []
    guarded = PlanMeter(clock=clock, on_change=lambda a, s, n: news.append(n))
    guarded.observe("a", billed)
    assert news == [("extra_usage",)]
    verdict = guarded.verdict("a")
    assert not verdict.usable and verdict.limit == "extra_usage"
    assert "allow_extra_usage" in (verdict.reason or "") and verdict.until == clock.now + 900
    allowed = PlanMeter(allow_extra_usage=True, clock=clock)
    allowed.observe("a", billed)
    assert allowed.verdict("a").usable


def test_a_reset_by_a_person_ends_the_cooldown_and_the_refusal() -> None:
    clock = Clock()
    meter = PlanMeter(clock=clock)
    meter.observe("a", five_hour(1.0, clock.now + 3600, "rejected"))
    meter.reset("a")
    assert meter.verdict("a").usable
    assert meter.state("a").reset_at == clock.now


def test_routing_new_sticky_moving_priority_and_last_resort() -> None:
    clock = Clock()
    meter = PlanMeter(clock=clock)
    a, b, c = Candidate("a", "a"), Candidate("b", "b"), Candidate("key", "key", priority=100)
    meter.observe("a", five_hour(0.6, clock.now + 3600))
    meter.observe("b", five_hour(0.2, clock.now + 3600))
    accounts = [a, b, c]
    assert choose(accounts, meter, None).account == b, "most headroom among priority 0"
    assert choose(accounts, meter, None, current="a").account == a, "a conversation stays"
    assert choose(accounts, meter, None, order="priority").account == a
    meter.observe("b", five_hour(1.0, clock.now + 1200, "rejected"))
    moved = choose(accounts, meter, None, current="b")
    assert moved.account == a and moved.moved
    meter.observe("a", five_hour(1.0, clock.now + 600, "rejected"))
    assert choose(accounts, meter, None).account == c, "the API key is the fallback"
    none = choose([a, b], meter, None)
    assert none.account is None and none.until == clock.now + 600
    assert "account 'a'" in none.reason and "account 'b'" in none.reason
    # An account cooling for a reason other than its plan is a last resort, not a refusal.
    meter.refused(
        "key", until=clock.now + 60, reason="the upstream's rate limit", limit="rate_limit"
    )
    last = choose(accounts, meter, None)
    assert last.account == c and last.last_resort


def test_model_families() -> None:
    assert family_of("claude-opus-5-5") == "opus"
    assert family_of("claude-sonnet-5-5") == "sonnet"
    assert family_of("claude-haiku-4-5") == "haiku"
    assert family_of("gpt") is None


def test_the_secret_box_encrypts_with_its_key_only(tmp_path: Path) -> None:
    box = SecretBox.from_data_dir(tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / KEY_FILE).st_mode) == 0o600
    sealed = box.seal("sk-ant-oat01-secret-value-123456")
    assert "secret-value" not in sealed and sealed.startswith("v1:")
    assert sealed != box.seal("sk-ant-oat01-secret-value-123456"), "a fresh nonce every time"
    assert SecretBox.from_data_dir(tmp_path).open(sealed) == "sk-ant-oat01-secret-value-123456"
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        SecretBox.from_setting("another key").open(sealed)
    assert hint("sk-ant-oat01-secret-value-123456") == "sk-ant-oat01-…3456"
    assert "secret" not in hint("a-short-one")
