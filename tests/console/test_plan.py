"""The console's Plan card (on the overview) and the accounts page, in-process on a scripted
runner: each window's percentage, status and reset; who sees it (the operator all of it, a
key holder only percentages and reset times, and only with usage_shows_plan); who used an
account in its 5-hour window; hostile text escaped; disable, enable and reset behind CSRF."""

from __future__ import annotations

import datetime as dt
import html
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccgate.access.feed import Notice
from ccgate.access.signins import Viewer
from ccgate.accounts.meter import Cooldown, PlanState
from ccgate.accounts.plan import Overage, Reading, Window
from ccgate.app import create_app
from ccgate.config import load_settings
from ccgate.console import overview
from ccgate.gateway import Gateway
from ccgate.store.records import UsageRecord
from ccgate.testing import ScriptedRunner

pytestmark = pytest.mark.unit

ADMIN = "admin-Tq3vJ9xZr2LmP8wKd4NcYb6HsF1gUe7A"
SHARED = "shared-Wm5Qx8Rt2Lp9Kd3Vn7Bz4Hj6Fc1Gy0Ns"
TOKEN = "sk-ant-oat01-Plan7Card3Test9Token5Secret1Value8Xq"
HOSTILE = '<script>alert("plan")</script><img src=x onerror="alert(1)">'

Client = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def client(tmp_path: Path) -> Client:
    @asynccontextmanager
    async def make(**flags: Any) -> AsyncIterator[httpx.AsyncClient]:
        settings = load_settings({"data_dir": tmp_path / "data", **flags}, {})
        # An empty environment: the settings' account is a login, whatever this one holds.
        app = create_app(settings, runner=ScriptedRunner(), environ={})
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://localhost"
            ) as http,
        ):
            http.app = app  # type: ignore[attr-defined]
            yield http

    return make


def _gateway(http: httpx.AsyncClient) -> Gateway:
    gateway: Gateway = http.app.state.ccgate  # type: ignore[attr-defined]
    return gateway


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page) or re.search(
        r'data-csrf="([^"]+)"', page
    )
    assert found, "no CSRF token on the page"
    return found.group(1)


def _text(page: str) -> str:
    """Return a page's text as a person reads it: no tags, entities decoded, spaces folded."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def _card(page: str) -> str:
    """Return the Plan card's HTML."""
    start = page.index('id="plan"')
    return page[start : page.index("</section>", start)]


async def _sign_in(http: httpx.AsyncClient, key: str) -> None:
    signed = await http.post("/console/signin", data={"key": key})
    assert signed.status_code == 303, signed.text


async def _sign_out(http: httpx.AsyncClient) -> None:
    page = await http.get("/")
    await http.post("/console/signout", data={"csrf": _csrf(page.text)})


async def _make_key(http: httpx.AsyncClient, name: str) -> tuple[str, str]:
    made = await http.post(
        "/admin/keys", json={"name": name}, headers={"authorization": f"Bearer {ADMIN}"}
    )
    assert made.status_code == 201, made.text
    body = made.json()
    return body["key"], body["id"]


def _plan(now: float, *, five: float = 0.82, cooldown: Cooldown | None = None) -> PlanState:
    """A plan whose 5-hour window is ``five`` used (a warning) and resets in 2 h 10 min."""
    windows = (
        Window("seven_day", 0.4, now + 3 * 86_400 + 600, "allowed"),
        Window("five_hour", five, now + 2 * 3600 + 10 * 60 + 30, "warning", 0.75),
        Window("seven_day_opus", None, now + 86_400, "rejected"),
    )
    reading = Reading(
        observed_at=now - 90,
        source="answer",
        status="warning",
        binding="five_hour",
        resets_at=now + 2 * 3600 + 10 * 60 + 30,
        windows=windows,
        overage=Overage("rejected", None, "out_of_credits"),
    )
    return PlanState(reading=reading, cooldown=cooldown, last_success=now - 90)


async def _accounts(gateway: Gateway, now: float) -> tuple[str, str]:
    """Add a subscription with a plan (``max-one``) and an API key (``metered``)."""
    sub = await gateway.accounts.add("max-one", "oauth_token", secret=TOKEN)
    key = await gateway.accounts.add("metered", "api_key", secret="sk-ant-api03-" + "k" * 40)
    gateway.accounts.meter.load(sub.id, _plan(now))
    return sub.id, key.id


async def test_the_operator_sees_each_window_with_its_use_status_and_reset(
    client: Client,
) -> None:
    async with client(auth_mode="multi", admin_key=ADMIN) as http:
        now = time.time()
        sub, _ = await _accounts(_gateway(http), now)
        await _sign_in(http, ADMIN)
        page = await http.get("/")
        assert page.status_code == 200
        card = _card(page.text)
        text = _text(card)
        assert "max-one OAuth token" in text and "metered API key" in text
        assert "default Claude login" in text and "no plan reading yet" in text
        assert "API key: billed per token, no plan" in text
        # the 5-hour window first, then 7-day, then the per-model one (use not reported)
        assert re.search(
            r"5-hour 82 % 82 % used warning resets in 2 h 10 min "
            r"7-day 40 % 40 % used allowed resets in 3 d 0 h "
            r"7-day Opus use not reported rejected resets in (23 h 59 min|1 d 0 h)",
            text,
        ), text
        reset = dt.datetime.fromtimestamp(now + 2 * 3600 + 10 * 60 + 30, dt.UTC)
        iso = reset.replace(microsecond=0).isoformat().replace("+00:00", "Z")
        assert (
            f'<time datetime="{iso}" title="{reset:%Y-%m-%d %H:%M} UTC">2 h 10 min</time>' in card
        )
        assert 'value="82" aria-label="5-hour window of max-one: 82 % used"' in card
        assert "Extra usage: rejected (off: out_of_credits)" in text
        assert "Plan read 1 min ago." in text
        assert TOKEN not in page.text and TOKEN[-4:] not in card  # no secret hint on the card
        assert 'href="/console/accounts"' in card
        # the operator's page has it all, the hint of the secret too
        accounts = await http.get("/console/accounts")
        assert accounts.status_code == 200
        whole = _text(accounts.text)
        assert TOKEN not in accounts.text and f"secret {TOKEN[:13]}…{TOKEN[-4:]}" in whole
        assert "82 % used warning resets in 2 h 10 min" in whole
        assert f'id="account-{sub}"' in accounts.text
        assert 'aria-current="page">Accounts<' in accounts.text


async def test_the_card_counts_who_used_each_account_since_its_5_hour_window_began(
    client: Client,
) -> None:
    async with client(auth_mode="multi", admin_key=ADMIN) as http:
        gateway = _gateway(http)
        now = time.time()
        sub, metered = await _accounts(gateway, now)
        _, alice = await _make_key(http, "alice")
        _, bob = await _make_key(http, "bob")
        began = now + 2 * 3600 + 10 * 60 + 30 - 5 * 3600  # the window's reset minus 5 h

        async def spent(namespace: str, account: str | None, at: float, cost: float) -> None:
            await gateway.ledger.record(
                UsageRecord(
                    namespace=namespace,
                    endpoint="/v1/chat/completions",
                    model="sonnet",
                    status="ok",
                    duration_ms=10.0,
                    input_tokens=100,
                    output_tokens=20,
                    cost_usd=cost,
                    created_at=at,
                    account=account,
                )
            )

        await spent(alice, sub, began + 60, 0.5)
        await spent(alice, sub, now - 30, 1.25)
        await spent(bob, sub, now - 10, 0.1)
        await spent(bob, sub, began - 60, 9.0)  # before the window: not counted
        await spent(bob, metered, now - 20, 0.3)  # another account
        await spent(alice, None, now - 5, 7.0)  # ran on no account (a cached answer)
        await _sign_in(http, ADMIN)
        page = await http.get("/")
        card = _card(page.text)
        start = card.index(f'id="plan-account-{sub}"')
        mine = _text(card[start : card.index("</table>", start)])
        assert "Who used it since" in mine and "(its 5-hour window)" in mine
        assert "alice 2 240 $1.75" in mine and "bob 1 120 $0.1000" in mine
        assert mine.index("alice") < mine.index("bob")  # the biggest spender first
        assert "9.00" not in mine and "7.00" not in mine
        start = card.index(f'id="plan-account-{metered}"')
        theirs = _text(card[start : card.index("</table>", start)])
        assert "(the last 5 hours)" in theirs and "bob 1 120 $0.3000" in theirs
        assert "alice" not in theirs


async def test_key_holders_see_no_plan_unless_usage_shows_plan(client: Client) -> None:
    async with client(auth_mode="multi", admin_key=ADMIN) as http:
        await _accounts(_gateway(http), time.time())
        alice, _ = await _make_key(http, "alice")
        await _sign_in(http, alice)
        page = await http.get("/")
        assert page.status_code == 200
        assert 'id="plan"' not in page.text and "max-one" not in page.text
        assert "/console/accounts" not in page.text  # no link in the navigation
        refused = await http.get("/console/accounts")
        assert refused.status_code == 403 and "max-one" not in refused.text


async def test_the_shared_key_sees_no_plan_unless_usage_shows_plan(client: Client) -> None:
    async with client(auth_mode="shared", api_key=SHARED) as http:
        await _accounts(_gateway(http), time.time())
        await _sign_in(http, SHARED)
        page = await http.get("/")
        assert 'id="stats"' in page.text  # the shared key sees the gauges…
        assert 'id="plan"' not in page.text and "max-one" not in page.text  # …not the plan
        assert (await http.get("/console/accounts")).status_code == 403


@pytest.mark.parametrize("mode", ["multi", "shared"])
async def test_with_usage_shows_plan_key_holders_see_percentages_and_resets_only(
    client: Client, mode: str
) -> None:
    flags = {"auth_mode": mode, "admin_key": ADMIN, "usage_shows_plan": True}
    if mode == "shared":
        flags["api_key"] = SHARED
    async with client(**flags) as http:
        gateway = _gateway(http)
        now = time.time()
        sub, _ = await _accounts(gateway, now)
        paused = Cooldown(now + 630, f"its 5-hour window is used up {HOSTILE}", "plan_window")
        gateway.accounts.meter.load(sub, _plan(now, cooldown=paused))
        off = await gateway.accounts.add("spare", "oauth_token", secret=TOKEN + "2")
        await gateway.accounts.update(off.id, enabled=False)
        alice, alice_id = await _make_key(http, "alice")
        await gateway.ledger.record(
            UsageRecord(
                namespace=alice_id,
                endpoint="/v1/messages",
                model="sonnet",
                status="ok",
                duration_ms=1.0,
                cost_usd=2.5,
                created_at=now - 10,
                account=sub,
            )
        )
        await _sign_in(http, SHARED if mode == "shared" else alice)
        page = await http.get("/")
        card = _card(page.text)
        text = _text(card)
        # the enabled accounts, by place: default (priority 0), max-one (0), metered (100)
        assert "Account 1" in text and "Account 2" in text and "Account 3" in text
        assert "Account 4" not in text  # the disabled one is not shown
        assert "82 % used warning resets in 2 h 10 min" in text
        assert "40 % used allowed resets in 3 d 0 h" in text
        assert "Not taking requests until" in text and "(in 10 min)" in text
        assert "no plan reading" in text
        for hidden in (
            "max-one",
            "metered",
            "default",
            "spare",
            "OAuth token",
            "API key",
            "Claude login",
            TOKEN[:12],
            TOKEN[-4:],
            "used up",  # the cooldown's reason
            "alert",
            "out_of_credits",
            "Extra usage",
            "alice",
            "2.50",
            "Who used",
            sub,
        ):
            assert hidden not in card, hidden
        assert "/console/accounts" not in page.text
        assert (await http.get("/console/accounts")).status_code == 403


async def test_hostile_text_in_a_plan_is_escaped(client: Client) -> None:
    async with client(auth_mode="multi", admin_key=ADMIN) as http:
        gateway = _gateway(http)
        now = time.time()
        sub, _ = await _accounts(gateway, now)
        reading = Reading(
            observed_at=now,
            source="answer",
            windows=(Window(HOSTILE, 0.5, now + 3600, "allowed"),),
            overage=Overage("allowed", None, HOSTILE),
        )
        cooldown = Cooldown(now + 600, HOSTILE, HOSTILE)
        gateway.accounts.meter.load(sub, PlanState(reading=reading, cooldown=cooldown))
        _, alice = await _make_key(http, HOSTILE)
        await gateway.ledger.record(
            UsageRecord(
                namespace=alice,
                endpoint="/v1/messages",
                model="sonnet",
                status="ok",
                duration_ms=1.0,
                created_at=now - 10,
                account=sub,
            )
        )
        await _sign_in(http, ADMIN)
        for path in ("/", "/console/accounts"):
            page = await http.get(path)
            assert page.status_code == 200
            assert "<script>alert" not in page.text and "<img src=x" not in page.text
            escaped = "&lt;script&gt;alert(&#34;plan&#34;)&lt;/script&gt;"
            # the window's name, the cooldown's reason and limit, extra usage's, the key's name
            assert page.text.count(escaped) >= 5, path


async def test_disable_enable_and_reset_need_the_csrf_token(client: Client) -> None:
    async with client(auth_mode="multi", admin_key=ADMIN) as http:
        gateway = _gateway(http)
        now = time.time()
        sub, _ = await _accounts(gateway, now)
        paused = Cooldown(now + 900, "its 5-hour window is used up", "plan_window")
        gateway.accounts.meter.load(sub, _plan(now, cooldown=paused))
        await _sign_in(http, ADMIN)
        page = await http.get("/console/accounts")
        token = _csrf(page.text)
        assert f'action="/console/accounts/{sub}/reset"' in page.text
        assert "Cooling down" in _text(page.text)
        for action, data in (("enabled", {"enabled": "false"}), ("reset", {})):
            forged = await http.post(f"/console/accounts/{sub}/{action}", data=data)
            assert forged.status_code == 403 and "stale" in forged.text
            wrong = await http.post(
                f"/console/accounts/{sub}/{action}", data={**data, "csrf": token + "x"}
            )
            assert wrong.status_code == 403
        assert gateway.accounts.find(sub).enabled
        assert gateway.accounts.meter.state(sub).cooldown is not None
        off = await http.post(
            f"/console/accounts/{sub}/enabled", data={"enabled": "false", "csrf": token}
        )
        assert off.status_code == 303 and off.headers["location"] == "/console/accounts"
        assert not gateway.accounts.find(sub).enabled
        page = await http.get("/console/accounts")
        assert 'Enable<span class="sr-only"> max-one</span>' in page.text
        on = await http.post(
            f"/console/accounts/{sub}/enabled", data={"enabled": "true", "csrf": token}
        )
        assert on.status_code == 303 and gateway.accounts.find(sub).enabled
        odd = await http.post(
            f"/console/accounts/{sub}/enabled", data={"enabled": "maybe", "csrf": token}
        )
        assert odd.status_code == 400 and "Enabled: true or false." in odd.text
        reset = await http.post(f"/console/accounts/{sub}/reset", data={"csrf": token})
        assert reset.status_code == 303
        state = gateway.accounts.meter.state(sub)
        assert state.cooldown is None and state.reading is not None
        assert all(w.status == "allowed" for w in state.reading.windows)
        page = await http.get("/console/accounts")
        assert "Cooling down" not in page.text
        assert f'action="/console/accounts/{sub}/reset"' not in page.text
        missing = await http.post("/console/accounts/acc_nope/reset", data={"csrf": token})
        assert missing.status_code == 404 and "no such account" in missing.text


async def test_a_client_key_may_not_change_an_account(client: Client) -> None:
    async with client(auth_mode="multi", admin_key=ADMIN, usage_shows_plan=True) as http:
        gateway = _gateway(http)
        sub, _ = await _accounts(gateway, time.time())
        alice, _ = await _make_key(http, "alice")
        await _sign_in(http, alice)
        token = _csrf((await http.get("/")).text)
        for action, data in (("enabled", {"enabled": "false"}), ("reset", {})):
            refused = await http.post(
                f"/console/accounts/{sub}/{action}", data={**data, "csrf": token}
            )
            assert refused.status_code == 403 and "admin key" in refused.text
        assert gateway.accounts.find(sub).enabled


async def test_with_no_auth_the_local_operator_has_the_accounts_page(client: Client) -> None:
    async with client() as http:
        await _accounts(_gateway(http), time.time())
        page = await http.get("/")
        assert 'href="/console/accounts">Accounts</a>' in page.text
        assert "max-one OAuth token" in _text(_card(page.text))
        accounts = await http.get("/console/accounts")
        assert accounts.status_code == 200 and "max-one" in accounts.text


def test_an_accounts_plan_news_is_told_only_to_the_operator() -> None:
    news = Notice(namespace="", title="Plan: max-one", body="cools down", link="/console/accounts")
    loop = Notice(namespace="", title="A loop asks", body="?", link="/console/loops/l1")
    for role, told in (("admin", True), ("local", True), ("shared", False), ("client", False)):
        viewer = Viewer(role, role, None, role, "csrf")
        assert overview._for(viewer, news) is told, role
        assert overview._for(viewer, loop)
