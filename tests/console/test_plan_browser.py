"""The Plan card and the accounts page in a real browser (Debian's Chromium through
Playwright): a window at a warning, the card kept current by the overview's stream, a cooldown
ended with the accounts page's button; no CSP violation, no script error and no serious
accessibility violation (axe-core), on a desk and on a phone."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ccgate.accounts.meter import Cooldown, PlanState
from ccgate.accounts.plan import Reading, Status, Window
from ccgate.config import load_settings
from ccgate.console import overview
from ccgate.testing import ScriptedRunner
from tests.console.conftest import DESK, PHONE, Page
from tests.gateway_testing import Gateway, start_gateway

ADMIN = "admin-Tq3vJ9xZr2LmP8wKd4NcYb6HsF1gUe7A"

Browse = Callable[..., Page]


@pytest.fixture
def scripted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    """A real ccgate server (multi, admin key) on the scripted runner, its Plan card sent
    again every half second."""
    monkeypatch.setattr(overview, "PLAN_EVERY", 0.5)
    settings = load_settings(
        {"data_dir": tmp_path / "data", "auth_mode": "multi", "admin_key": ADMIN}, {}
    )
    gateway = start_gateway(settings, ScriptedRunner())
    try:
        yield gateway
    finally:
        gateway.stop()


def _plan(five: float, status: Status, cooldown: Cooldown | None = None) -> PlanState:
    now = time.time()
    windows = (
        Window("five_hour", five, now + 2 * 3600 + 630, status, 0.75),
        Window("seven_day", 0.31, now + 4 * 86_400, "allowed"),
    )
    reading = Reading(observed_at=now, source="answer", status="allowed", windows=windows)
    return PlanState(reading=reading, cooldown=cooldown)


def _clean(page: Page, what: str) -> None:
    assert page.problems() == [], f"{what}: {page.problems()}"
    assert page.axe() == [], f"{what}: accessibility"


@pytest.mark.server
def test_the_admin_sees_the_plan_card_live_and_resets_a_cooldown(
    scripted: Gateway, browse: Browse
) -> None:
    accounts = scripted.state.accounts
    default = accounts.records()[0]
    # Loaded from this thread: the meter's dict is only read by the server's.
    accounts.meter.load(default.id, _plan(0.82, "warning"))
    for viewport, size in ((DESK, "desk"), (PHONE, "phone")):
        page = browse(viewport)
        p = page.page
        p.goto(scripted.url + "/")
        p.get_by_label("Key").fill(ADMIN)
        p.get_by_role("button", name="Sign in").click()
        p.wait_for_url(scripted.url + "/")
        card = p.locator("#plan")
        assert p.get_by_role("heading", name="Plan", exact=True).is_visible()
        five = card.locator(".window").first
        assert five.locator(".w-label").inner_text() == "5-hour"
        assert five.locator(".w-used").inner_text() == "82 % used"
        assert five.locator(".w-status").inner_text() == "warning"
        assert re.fullmatch(r"resets in 2 h 10 min", five.locator(".w-reset").inner_text())
        assert (five.locator("time").get_attribute("title") or "").endswith(" UTC")
        meter = f"5-hour window of {default.name}: 82 % used"
        assert p.get_by_role("meter", name=meter).is_visible()
        _clean(page, f"overview with the Plan card ({size})")
        width = p.evaluate("() => document.documentElement.scrollWidth")
        assert width <= viewport["width"], "the overview is wider than the screen"
        page.shot(f"plan-card-{size}")
    # The stream sends the card again: a new reading shows without a reload.
    paused = Cooldown(time.time() + 900, "its 5-hour window is used up", "plan_window")
    accounts.meter.load(default.id, _plan(1.0, "rejected", paused))
    card.locator(".w-status", has_text="rejected").first.wait_for(timeout=10_000)
    assert card.locator(".w-used").first.inner_text() == "100 % used"
    assert "Cooling down" in card.inner_text()
    assert page.problems() == []
    p.get_by_role("link", name="Accounts", exact=True).click()
    p.wait_for_url(scripted.url + "/console/accounts")
    assert p.get_by_role("heading", name=default.name).is_visible()
    _clean(page, "accounts page (phone)")
    width = p.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], "the accounts page is wider than the screen"
    page.shot("accounts-phone")
    p.get_by_role("button", name=f"Reset cooldown of {default.name}").click()
    p.wait_for_url(scripted.url + "/console/accounts")
    p.get_by_role("heading", name="Accounts", exact=True).wait_for()
    assert p.get_by_role("button", name=re.compile("^Reset cooldown")).count() == 0
    assert "Cooling down" not in p.locator("main").inner_text()
    assert accounts.meter.state(default.id).cooldown is None
    assert page.problems() == []
