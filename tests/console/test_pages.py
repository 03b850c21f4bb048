"""The console's pages in-process (a scripted runner): sign-in, cookies, CSRF, who sees what,
the headers, escaping. The browser tests (test_browser.py) drive the same pages in Chromium."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccgate.app import create_app
from ccgate.config import load_settings
from ccgate.console.web import COOKIE
from ccgate.testing import ScriptedRunner

pytestmark = pytest.mark.unit

ADMIN = "admin-Tq3vJ9xZr2LmP8wKd4NcYb6HsF1gUe7A"
SHARED = "shared-Wm5Qx8Rt2Lp9Kd3Vn7Bz4Hj6Fc1Gy0Ns"

Client = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def client(tmp_path: Path) -> Client:
    @asynccontextmanager
    async def make(**flags: Any) -> AsyncIterator[httpx.AsyncClient]:
        settings = load_settings({"data_dir": tmp_path / "data", **flags}, {})
        app = create_app(settings, runner=ScriptedRunner())
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://localhost"
            ) as http,
        ):
            http.app = app  # type: ignore[attr-defined]
            yield http

    return make


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html) or re.search(
        r'data-csrf="([^"]+)"', html
    )
    assert found, "no CSRF token on the page"
    return found.group(1)


async def _sign_in(http: httpx.AsyncClient, key: str) -> httpx.Response:
    return await http.post("/console/signin", data={"key": key})


async def _make_key(http: httpx.AsyncClient, name: str) -> str:
    made = await http.post(
        "/admin/keys", json={"name": name}, headers={"authorization": f"Bearer {ADMIN}"}
    )
    assert made.status_code == 201, made.text
    key: str = made.json()["key"]
    return key


async def test_with_no_auth_the_console_is_open_and_says_so_in_its_headers(client: Client) -> None:
    async with client() as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert "<h1>Overview</h1>" in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "unsafe-inline" not in csp
        assert "unsafe-eval" not in csp and "frame-ancestors 'none'" in csp
        assert page.headers["x-frame-options"] == "DENY"
        cookie = page.headers["set-cookie"]
        assert f"{COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        # the APIs keep their own headers: no CSP on JSON
        health = await http.get("/health")
        assert "content-security-policy" not in health.headers
        assert (await http.get("/console/static/console.js")).status_code == 200


async def test_multi_needs_a_key_and_refuses_a_wrong_one(client: Client) -> None:
    async with client(auth_mode="multi", admin_key=ADMIN) as http:
        first = await http.get("/")
        assert first.status_code == 303 and first.headers["location"] == "/console/signin"
        wrong = await _sign_in(http, "ccg_" + "x" * 43)
        assert wrong.status_code == 401 and "Invalid API key." in wrong.text
        assert COOKIE not in wrong.headers.get("set-cookie", "")
        ok = await _sign_in(http, ADMIN)
        assert ok.status_code == 303 and ok.headers["location"] == "/"
        assert "Max-Age=43200" in ok.headers["set-cookie"]
        page = await http.get("/")
        assert page.status_code == 200 and ">admin<" in page.text


async def test_failed_sign_ins_are_braked_per_address(client: Client) -> None:
    async with client(auth_mode="multi", admin_key=ADMIN) as http:
        for _ in range(5):
            assert (await _sign_in(http, "wrong")).status_code == 401
        braked = await _sign_in(http, ADMIN)  # even the right key waits now
        assert braked.status_code == 429
        assert 0 < int(braked.headers["retry-after"]) <= 60
        assert "Too many failed sign-ins" in braked.text


async def test_every_form_needs_the_csrf_token(client: Client) -> None:
    async with client(auth_mode="multi", admin_key=ADMIN) as http:
        await _sign_in(http, ADMIN)
        page = await http.get("/console/keys")
        token = _csrf(page.text)
        forged = await http.post("/console/keys", data={"name": "sneaky"})
        assert forged.status_code == 403 and "stale" in forged.text
        wrong = await http.post("/console/keys", data={"name": "sneaky", "csrf": token + "x"})
        assert wrong.status_code == 403
        keys = await http.get("/admin/keys", headers={"authorization": f"Bearer {ADMIN}"})
        assert keys.json()["data"] == []
        made = await http.post("/console/keys", data={"name": "laptop", "csrf": token})
        assert made.status_code == 200
        raw = re.search(r'id="new-key"[^>]*value="(ccg_[^"]+)"', made.text)
        assert raw, "the new key is shown once"
        again = await http.get("/console/keys")
        assert raw.group(1) not in again.text and "laptop" in again.text
        signout = await http.post("/console/signout", data={"csrf": token})
        assert signout.status_code == 303
        assert (await http.get("/")).status_code == 303  # the sign-in is gone


async def test_a_client_key_sees_its_own_and_not_the_keys(client: Client) -> None:
    async with client(auth_mode="multi", admin_key=ADMIN) as http:
        alice = await _make_key(http, "alice")
        bob = await _make_key(http, "bob")
        for key in (alice, bob):
            done = await http.post(
                "/v1/chat/completions",
                json={"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]},
                headers={"authorization": f"Bearer {key}"},
            )
            assert done.status_code == 200, done.text
        await _sign_in(http, alice)
        page = await http.get("/")
        assert "Requests of alice" in page.text
        assert page.text.count('<tr id="req-') == 1  # alice's, not bob's
        assert "bob" not in page.text
        assert 'id="stats"' not in page.text  # the gateway's gauges are the operator's
        keys = await http.get("/console/keys")
        assert keys.status_code == 403
        token = _csrf(page.text)
        refused = await http.post("/console/keys", data={"name": "mine", "csrf": token})
        assert refused.status_code == 403


async def test_revoking_a_key_ends_its_console_sign_in(client: Client) -> None:
    async with client(auth_mode="multi", admin_key=ADMIN) as http:
        alice = await _make_key(http, "alice")
        await _sign_in(http, alice)
        assert (await http.get("/")).status_code == 200
        listed = await http.get("/admin/keys", headers={"authorization": f"Bearer {ADMIN}"})
        key_id = listed.json()["data"][0]["id"]
        await http.delete(f"/admin/keys/{key_id}", headers={"authorization": f"Bearer {ADMIN}"})
        assert (await http.get("/")).status_code == 303


async def test_shared_key_signs_in_and_sees_everything(client: Client) -> None:
    async with client(auth_mode="shared", api_key=SHARED) as http:
        assert (await _sign_in(http, "not-it")).status_code == 401
        assert (await _sign_in(http, SHARED)).status_code == 303
        page = await http.get("/")
        assert 'id="stats"' in page.text


async def test_text_from_users_is_escaped(client: Client) -> None:
    hostile = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
    async with client(auth_mode="multi", admin_key=ADMIN) as http:
        key = await _make_key(http, hostile)
        await http.post(
            "/v1/chat/completions",
            json={"model": "sonnet", "messages": [{"role": "user", "content": hostile}]},
            headers={"authorization": f"Bearer {key}"},
        )
        await _sign_in(http, ADMIN)
        for path in ("/", "/console/keys"):
            page = await http.get(path)
            assert "<script>alert" not in page.text and "<img src=x" not in page.text
            assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page.text


async def test_the_console_can_be_turned_off(client: Client) -> None:
    async with client(console=False) as http:
        assert (await http.get("/")).status_code == 404
        assert (await http.get("/console/static/console.js")).status_code == 404


async def _chat(http: httpx.AsyncClient, key: str, session: str) -> None:
    done = await http.post(
        "/v1/chat/completions",
        json={"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {key}", "x-session-id": session},
    )
    assert done.status_code == 200, done.text


async def test_sessions_are_each_callers_own(client: Client) -> None:
    async with client(auth_mode="multi", admin_key=ADMIN) as http:
        alice, bob = await _make_key(http, "alice"), await _make_key(http, "bob")
        await _chat(http, alice, "alice-one")
        await _chat(http, alice, "alice-two")
        await _chat(http, bob, "bob-one")
        await _sign_in(http, alice)
        page = await http.get("/console/sessions")
        assert "alice-one" in page.text and "alice-two" in page.text
        assert "bob-one" not in page.text
        token = _csrf(page.text)
        listed = await http.get("/admin/keys", headers={"authorization": f"Bearer {ADMIN}"})
        bob_id = next(k["id"] for k in listed.json()["data"] if k["name"] == "bob")
        theirs = await http.post(
            "/console/sessions/delete", data={"csrf": token, "namespace": bob_id, "key": "bob-one"}
        )
        assert theirs.status_code == 403
        mine = await http.post(
            "/console/sessions/delete",
            data={
                "csrf": token,
                "namespace": page.text and _namespace_of(page.text),
                "key": "alice-one",
            },
        )
        assert mine.status_code == 303
        after = await http.get("/console/sessions")
        assert "alice-one" not in after.text and "alice-two" in after.text
        await http.post("/console/signout", data={"csrf": token})
        await _sign_in(http, ADMIN)
        everyone = await http.get("/console/sessions")
        assert "bob-one" in everyone.text and "alice-two" in everyone.text


def _namespace_of(html: str) -> str:
    found = re.search(r'name="namespace" value="([^"]+)"', html)
    assert found
    return found.group(1)


async def test_settings_show_no_secret_and_are_the_operators(client: Client) -> None:
    upstream = "sk-ant-upstream-Zq8Lm3Nv5Bx7Kc2Jd9Wf4Hg6"
    async with client(
        auth_mode="multi",
        admin_key=ADMIN,
        metrics_token=SHARED,
        upstream_api_key=upstream,
        upstream_url="https://user:pw@upstream.example:8443/base?token=abc",
    ) as http:
        alice = await _make_key(http, "alice")
        await _sign_in(http, ADMIN)
        page = await http.get("/console/settings")
        assert page.status_code == 200
        for secret in (ADMIN, SHARED, upstream, "pw@", "token=abc", alice):
            assert secret not in page.text
        assert "set (hidden)" in page.text and "https://upstream.example:8443/base" in page.text
        assert "data dir" in page.text and "claude cli" in page.text
        token = _csrf(page.text)
        await http.post("/console/signout", data={"csrf": token})
        await _sign_in(http, alice)
        assert (await http.get("/console/settings")).status_code == 403


async def test_a_client_key_is_refused_another_keys_loop(client: Client) -> None:
    hostile = "<script>alert('loop')</script>"
    async with client(auth_mode="multi", admin_key=ADMIN) as http:
        alice, bob = await _make_key(http, "alice"), await _make_key(http, "bob")
        made = await http.post(
            "/v1/loops", json={"title": hostile}, headers={"authorization": f"Bearer {alice}"}
        )
        assert made.status_code == 201, made.text
        loop_id = made.json()["id"]
        await _sign_in(http, bob)
        listing = await http.get("/console/loops")
        token = _csrf(listing.text)
        assert loop_id not in listing.text
        page = await http.get(f"/console/loops/{loop_id}")
        assert page.status_code == 404 and "alert('loop')" not in page.text
        events = await http.get(f"/console/loops/{loop_id}/events")
        assert events.status_code == 404
        for action, data in (
            ("messages", {"content": "hi"}),
            ("choices/choice_x", {"allow": "true"}),
            ("interrupt", {}),
            ("archive", {}),
        ):
            refused = await http.post(
                f"/console/loops/{loop_id}/{action}",
                data={"csrf": token, **data},
                headers={"x-requested-with": "fetch"},
            )
            assert refused.status_code == 404, (action, refused.text)
        assert (
            await http.get(f"/v1/loops/{loop_id}", headers={"authorization": f"Bearer {alice}"})
        ).json()["archived_at"] is None
        await http.post("/console/signout", data={"csrf": token})
        await _sign_in(http, ADMIN)
        mine = await http.get(f"/console/loops/{loop_id}")
        assert mine.status_code == 200
        assert "&lt;script&gt;alert(&#39;loop&#39;)&lt;/script&gt;" in mine.text
        assert hostile not in mine.text


async def test_usage_takes_a_range_of_dates_and_a_client_sees_only_its_own(
    client: Client,
) -> None:
    async with client(auth_mode="multi", admin_key=ADMIN) as http:
        alice, bob = await _make_key(http, "alice"), await _make_key(http, "bob")
        await _chat(http, alice, "a1")
        await _chat(http, bob, "b1")
        await _chat(http, bob, "b2")
        await _sign_in(http, alice)
        today = dt.datetime.now(dt.UTC).date().isoformat()
        page = await http.get("/console/usage", params={"from": today, "to": today})
        assert "Usage of alice" in page.text
        totals = re.findall(r'<td class="num">(\d+)</td>', page.text.split('id="totals"')[1])
        assert totals[0] == "1"  # alice's one request, not bob's two
        old = await http.get("/console/usage", params={"from": "2020-01-01", "to": "2020-01-02"})
        assert "Nothing was recorded in this range." in old.text
        csv = await http.get("/console/usage.csv", params={"split": "key"})
        assert csv.headers["content-type"].startswith("text/csv")
        lines = csv.text.strip().splitlines()
        assert (
            len(lines) == 2 and ",1," in lines[1]
        )  # one bucket, alice's (by model: split=key is the operator's)


async def test_an_unknown_console_address_is_a_page_not_json(client: Client) -> None:
    async with client() as http:
        missing = await http.get("/console/<b>nope</b>")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("text/html")
        assert "<b>nope</b>" not in missing.text and "Back to the console" in missing.text
        assert "script-src 'self'" in missing.headers["content-security-policy"]
        wrong = await http.put("/")
        assert wrong.status_code == 405 and "GET" in wrong.headers["allow"]
        assert wrong.headers["content-type"].startswith("text/html")
        api = await http.get("/v1/nope")  # the APIs keep their own shapes
        assert api.json()["error"]["code"] == "route_not_found"
