"""The console in a real browser (Debian's Chromium through Playwright): sign-in and out with
each kind of key, a key made and shown once, the live feed of a request made with the official
OpenAI SDK, hostile text shown as text; on every page no CSP violation, no script error and no
serious accessibility violation (axe-core). Screenshots at 1280×800 and 390×844 go to the
artefact folder (conftest.py)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from ccgate.config import load_settings
from ccgate.testing import ScriptedRunner
from tests.console.conftest import DESK, PHONE, Page
from tests.gateway_testing import Gateway, start_gateway

ADMIN = "admin-Tq3vJ9xZr2LmP8wKd4NcYb6HsF1gUe7A"

Browse = Callable[..., Page]


@pytest.fixture
def scripted(tmp_path: Path) -> Iterator[Gateway]:
    """A real ccgate server (multi, admin key) on the scripted runner: no Claude Code CLI."""
    settings = load_settings(
        {"data_dir": tmp_path / "data", "auth_mode": "multi", "admin_key": ADMIN}, {}
    )
    gateway = start_gateway(settings, ScriptedRunner())
    try:
        yield gateway
    finally:
        gateway.stop()


def _make_key(gateway: Gateway, name: str) -> str:
    made = httpx.post(
        gateway.url + "/admin/keys",
        json={"name": name},
        headers={"authorization": f"Bearer {ADMIN}"},
    )
    assert made.status_code == 201, made.text
    key: str = made.json()["key"]
    return key


def _sign_in(page: Page, url: str, key: str) -> None:
    page.page.goto(url + "/")
    page.page.get_by_label("Key").fill(key)
    page.page.get_by_role("button", name="Sign in").click()


def _clean(page: Page, what: str) -> None:
    assert page.problems() == [], f"{what}: {page.problems()}"
    assert page.axe() == [], f"{what}: accessibility"


@pytest.mark.server
def test_admin_signs_in_makes_a_key_sees_it_once_and_signs_out(
    scripted: Gateway, browse: Browse
) -> None:
    for viewport, size in ((DESK, "desk"), (PHONE, "phone")):
        page = browse(viewport)
        p = page.page
        p.goto(scripted.url + "/")
        assert p.url.endswith("/console/signin")
        _clean(page, "sign-in page")
        page.shot(f"signin-{size}")
        p.get_by_label("Key").fill("not-a-key")
        p.get_by_role("button", name="Sign in").click()
        assert p.get_by_role("alert").inner_text().startswith("Invalid API key")
        p.get_by_label("Key").fill(ADMIN)
        p.get_by_role("button", name="Sign in").click()
        p.wait_for_url(scripted.url + "/")
        assert p.get_by_role("heading", name="Overview").is_visible()
        _clean(page, "overview")
        page.shot(f"overview-{size}")
        p.get_by_role("link", name="Keys").click()
        p.get_by_label("Name", exact=False).last.fill(f"phone-{size}")
        p.get_by_role("button", name="Make key").click()
        shown = p.locator("#new-key").input_value()
        assert re.fullmatch(r"ccg_[A-Za-z0-9_-]{43}", shown)
        _clean(page, "keys page with a new key")
        width = p.evaluate("() => document.documentElement.scrollWidth")
        assert width <= viewport["width"], "the page is wider than the screen"
        page.shot(f"keys-{size}")
        p.get_by_role("link", name="Keys").click()  # the list again: the key is not in it
        assert p.locator("#new-key").count() == 0
        assert shown not in p.content()
        p.get_by_role("button", name="Sign out").click()
        p.wait_for_url(re.compile(r".*/console/signin$"))
        p.goto(scripted.url + "/console/keys")
        assert p.url.endswith("/console/signin")


@pytest.mark.server
def test_a_client_key_sees_its_own_requests_and_not_the_keys(
    scripted: Gateway, browse: Browse
) -> None:
    alice, bob = _make_key(scripted, "alice"), _make_key(scripted, "bob")
    for key in (alice, bob):
        httpx.post(
            scripted.url + "/v1/chat/completions",
            json={"model": "sonnet", "messages": [{"role": "user", "content": "hello"}]},
            headers={"authorization": f"Bearer {key}"},
        ).raise_for_status()
    page = browse(PHONE)
    _sign_in(page, scripted.url, alice)
    p = page.page
    p.wait_for_url(scripted.url + "/")
    assert p.get_by_role("heading", name="Requests of alice").is_visible()
    assert p.locator("#feed tbody tr").count() == 1
    assert p.get_by_role("link", name="Keys").count() == 0
    _clean(page, "a client's overview")
    response = p.goto(scripted.url + "/console/keys")
    assert response is not None and response.status == 403
    assert "admin key" in p.get_by_role("alert").inner_text()


@pytest.mark.server
def test_hostile_text_shows_as_text(scripted: Gateway, browse: Browse) -> None:
    hostile = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
    key = _make_key(scripted, hostile)
    page = browse()
    dialogs: list[str] = []

    def dismiss(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.page.on("dialog", dismiss)
    _sign_in(page, scripted.url, ADMIN)
    page.page.wait_for_url(scripted.url + "/")
    httpx.post(  # arrives live, through the feed's stream
        scripted.url + "/v1/chat/completions",
        json={"model": "sonnet", "messages": [{"role": "user", "content": hostile}]},
        headers={"authorization": f"Bearer {key}"},
    ).raise_for_status()
    cell = page.page.locator("#feed tbody tr td:nth-child(2)").first
    cell.wait_for()
    assert cell.inner_text() == hostile
    assert page.page.locator("#feed img").count() == 0
    page.page.goto(scripted.url + "/console/keys")
    assert page.page.get_by_role("rowheader", name=hostile).is_visible()
    assert dialogs == [] and page.problems() == []


@pytest.mark.cli
def test_a_request_from_the_openai_sdk_appears_live_and_updates_when_it_ends(
    make_gateway: Callable[..., Gateway], model: Any, browse: Browse
) -> None:
    gateway = make_gateway()  # auth none: the console is open on loopback
    page = browse()
    p = page.page
    p.goto(gateway.url + "/")
    p.locator("#feed-state", has_text="live").wait_for()
    answer: list[str] = []

    def ask() -> None:
        with openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0) as oai:
            stream = oai.chat.completions.create(
                model="sonnet",
                messages=[{"role": "user", "content": "slowly [[demo: chunks=4 delay=0.8]]"}],
                stream=True,
            )
            answer.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))

    asker = threading.Thread(target=ask)
    asker.start()
    row = p.locator("#feed tbody tr").first
    row.locator("td:nth-child(5)", has_text="running").wait_for(timeout=30_000)
    assert row.locator("td:nth-child(3)").inner_text() == "openai"
    page.shot("overview-live-running")
    row.locator("td:nth-child(5)", has_text="ok").wait_for(timeout=60_000)
    asker.join(60)
    assert answer and answer[0]
    assert re.search(r"\d+ / \d+", row.locator("td:nth-child(7)").inner_text())
    assert row.locator("td:nth-child(6)").inner_text().endswith("ms")
    assert page.problems() == []


@pytest.mark.server
def test_every_page_is_clean_and_fits_a_phone(scripted: Gateway, browse: Browse) -> None:
    alice = _make_key(scripted, "alice")
    httpx.post(
        scripted.url + "/v1/chat/completions",
        json={"model": "sonnet", "messages": [{"role": "user", "content": "hello"}]},
        headers={"authorization": f"Bearer {alice}", "x-session-id": "alice-first-chat"},
    ).raise_for_status()
    for viewport, size in ((DESK, "desk"), (PHONE, "phone")):
        page = browse(viewport)
        _sign_in(page, scripted.url, ADMIN)
        page.page.wait_for_url(scripted.url + "/")
        pages = (
            ("/console/sessions", "sessions"),
            ("/console/settings", "settings"),
            ("/console/usage", "usage"),
            ("/console/loops", "loops"),
        )
        for path, name in pages:
            page.page.goto(scripted.url + path)
            _clean(page, name)
            width = page.page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= viewport["width"], f"{name} is wider than the screen"
            if name == "usage":
                page.page.locator("figure.chart canvas").first.wait_for()
            page.shot(f"{name}-{size}")
            if name == "sessions":
                assert page.page.get_by_role("rowheader", name="alice-first-chat").is_visible()


@pytest.mark.server
def test_usage_charts_totals_equal_the_ledger_and_export_as_csv(
    scripted: Gateway, browse: Browse
) -> None:
    keys = {"alice": _make_key(scripted, "alice"), "bob": _make_key(scripted, "bob")}
    for name, count in (("alice", 3), ("bob", 2)):
        for i in range(count):
            httpx.post(
                scripted.url + "/v1/chat/completions",
                json={"model": "sonnet", "messages": [{"role": "user", "content": f"n{i}"}]},
                headers={"authorization": f"Bearer {keys[name]}"},
            ).raise_for_status()
    page = browse()
    _sign_in(page, scripted.url, ADMIN)
    p = page.page
    p.wait_for_url(scripted.url + "/")
    p.get_by_role("link", name="Usage").click()
    p.get_by_label("Split by").select_option("key")
    p.get_by_role("button", name="Show").click()
    p.locator("figure.chart canvas").first.wait_for()
    assert p.locator("figure.chart canvas").count() == 7
    _clean(page, "usage page")
    page.shot("usage-desk")
    totals = p.locator("#totals")
    since, until = totals.get_attribute("data-since"), totals.get_attribute("data-until")
    ledger = httpx.get(
        scripted.url + "/admin/usage",
        params={"group_by": "key", "since": since, "until": until},
        headers={"authorization": f"Bearer {ADMIN}"},
    ).json()["data"]
    expected = {
        row["name"]: [
            row["requests"],
            row["input_tokens"],
            row["output_tokens"],
            f"{row['cost_usd']}",
        ]
        for row in ledger
    }
    shown = {}
    for row in totals.locator("tbody tr").all():
        cells = row.locator("td").all_inner_texts()
        cost = row.locator("td[data-usd]").get_attribute("data-usd")
        shown[row.locator("th").inner_text()] = [int(cells[0]), int(cells[3]), int(cells[4]), cost]
    assert shown == expected and set(shown) == {"alice", "bob"}
    with p.expect_download() as download:
        p.get_by_role("link", name="Download CSV").click()
    text = Path(download.value.path()).read_text(encoding="utf-8")
    lines = text.strip().splitlines()
    assert lines[0].startswith("start,group,requests")
    per_key: dict[str, int] = {}
    for line in lines[1:]:
        cells = line.split(",")
        per_key[cells[1]] = per_key.get(cells[1], 0) + int(cells[2])
    assert per_key == {"alice": 3, "bob": 2}


@pytest.mark.server
def test_the_feed_starts_with_what_happened_before_it_connected(scripted: Gateway) -> None:
    """A page rendered before a request, whose stream connects after it, still gets its row."""
    alice = _make_key(scripted, "alice")
    with httpx.Client(base_url=scripted.url, timeout=30) as http:
        signed = http.post("/console/signin", data={"key": ADMIN})
        assert signed.status_code == 303
        http.post(
            "/v1/chat/completions",
            json={"model": "sonnet", "messages": [{"role": "user", "content": "early"}]},
            headers={"authorization": f"Bearer {alice}"},
        ).raise_for_status()
        with http.stream("GET", "/console/feed") as stream:
            for line in stream.iter_lines():
                if line.startswith("data: ") and 'id="req-r' in line:
                    assert 'class="done"' in line and "alice" in line
                    break
            else:
                raise AssertionError("the feed did not start with the earlier request")
