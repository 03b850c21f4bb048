"""A loop driven from the console at a phone's size (390×844), in Debian's Chromium, with the
real Claude Code CLI against the scripted model: make a loop, allow a file write from the page
(the file appears in the workspace), answer a question (the answer reaches the model), reload
mid-turn (the turn is restored and goes on), hostile text shown as text, interrupt."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ccgate.demo.model import ScriptedModel
from tests.console.conftest import PHONE, Page
from tests.gateway_testing import Gateway

pytestmark = pytest.mark.cli

COLOR = {
    "question": "Color?",
    "header": "c",
    "options": [{"label": "Blue", "description": "b"}, {"label": "Red", "description": "r"}],
    "multiSelect": False,
}


#: Stands in for the browser's notifications, granted, recording what is raised.
NOTIFICATIONS = """
window.__notes = [];
window.Notification = class {
  constructor(title) { window.__notes.push(title); }
  addEventListener() {}
  static get permission() { return "granted"; }
  static requestPermission() { return Promise.resolve("granted"); }
};
"""


def _tool(name: str, tool_input: dict[str, Any], lead: str = "please") -> str:
    return f"{lead} [[demo: tool={name} input={json.dumps(tool_input)}]]"


def _say(page: Page, text: str) -> None:
    page.page.get_by_label("Message", exact=True).fill(text)
    page.page.get_by_role("button", name="Send").click()


def _ends(page: Page, count: int) -> None:
    page.page.locator("#log .end").nth(count - 1).wait_for(timeout=60_000)


def test_a_loop_from_a_phone(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, browse: Callable[..., Page]
) -> None:
    gateway = make_gateway()
    page = browse(PHONE)
    p = page.page
    p.goto(gateway.url + "/console/loops")
    p.get_by_label("Title").fill("phone loop")
    p.get_by_role("button", name="Make loop").click()
    p.wait_for_url("**/console/loops/loop_*")
    loop_id = p.url.rsplit("/", 1)[1]
    workspace = gateway.settings.loops_path / loop_id / "workspace"

    # An overview open elsewhere is told when the loop asks (a notice and a notification).
    overview = browse()
    overview.page.add_init_script(NOTIFICATIONS)
    overview.page.goto(gateway.url + "/")
    overview.page.locator("#feed-state", has_text="live").wait_for()
    elsewhere = browse(PHONE)  # a page without a feed of its own hears it too
    elsewhere.page.add_init_script(NOTIFICATIONS)
    elsewhere.page.goto(gateway.url + "/console/sessions")

    # 1. A file write waits for the person; allowed from the page, the file appears.
    target = workspace / "from-phone.txt"
    _say(page, _tool("Write", {"file_path": str(target), "content": "written from a phone"}))
    choice = p.locator('#log .choice[data-choice="permission"]')
    choice.wait_for(timeout=60_000)
    assert "Allow Write?" in choice.inner_text()
    told = overview.page.locator("#notices .notice").first
    told.wait_for(timeout=30_000)
    assert told.inner_text().startswith("phone loop: allow?")
    assert told.get_by_role("link").get_attribute("href") == f"/console/loops/{loop_id}"
    assert overview.page.evaluate("() => window.__notes") == ["ccgate: phone loop: allow?"]
    elsewhere.page.locator("#notices .notice").first.wait_for(timeout=30_000)
    assert elsewhere.page.evaluate("() => window.__notes") == ["ccgate: phone loop: allow?"]
    _clean_phone(page, "a pending permission")
    page.shot("loop-permission-phone")
    choice.get_by_role("button", name="Allow").click()
    _ends(page, 1)
    assert p.locator("#log .end").nth(0).inner_text().startswith("Done")
    assert Path(target).read_text() == "written from a phone"
    assert "done" in p.locator("#log .tool .tool-state").first.inner_text()

    # 2. A question answered from the page reaches the model.
    _say(page, _tool("AskUserQuestion", {"questions": [COLOR]}, "ask me"))
    question = p.locator('#log .choice[data-choice="question"]')
    question.wait_for(timeout=60_000)
    question.get_by_label("Red").check()
    page.shot("loop-question-phone")
    question.get_by_role("button", name="Answer").click()
    _ends(page, 2)
    results = model.conversation_requests()[-1].body["messages"][-1]["content"]
    answered = json.dumps(results)
    assert "Color?" in answered and "Red" in answered

    # 3. A reload mid-turn restores the turn, which goes on to its end.
    _say(page, "tell me slowly [[demo: chunks=6 delay=0.7]]")
    p.locator("#log .assistant").last.wait_for(timeout=60_000)
    p.reload()
    p.locator("#log .msg", has_text="tell me slowly").wait_for(timeout=30_000)
    _ends(page, 3)
    assert p.locator("#log .msg", has_text="tell me slowly").count() == 1
    assert p.locator("#log .assistant").last.inner_text().strip() != ""

    # 4. Hostile text in a message, and in the answer that repeats it, shows as text.
    hostile = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
    dialogs: list[str] = []
    p.on("dialog", lambda dialog: dialogs.append(dialog.message))
    _say(page, hostile)
    _ends(page, 4)
    assert p.locator("#log .msg").last.inner_text() == hostile
    assert hostile in p.locator("#log .assistant").last.inner_text()
    assert p.locator("#log img").count() == 0 and dialogs == []
    p.reload()  # rendered by the server this time
    p.locator("#log .msg", has_text="onerror").wait_for()
    assert p.locator("#log img").count() == 0 and dialogs == []

    # 5. Interrupt stops a long turn.
    _say(page, "a long one [[demo: chunks=20 delay=1]]")
    p.locator("#log .note", has_text="Working").last.wait_for(timeout=60_000)
    p.get_by_role("button", name="Interrupt").click()
    p.locator("#log .end", has_text="Interrupted").wait_for(timeout=60_000)
    _clean_phone(page, "the loop page after five turns")
    page.shot("loop-phone")
    desk = browse()
    desk.page.goto(p.url)
    desk.page.locator("#log .end", has_text="Interrupted").wait_for()
    assert desk.problems() == [] and desk.axe() == []
    desk.shot("loop-desk")


def _clean_phone(page: Page, what: str) -> None:
    assert page.problems() == [], f"{what}: {page.problems()}"
    assert page.axe() == [], f"{what}: accessibility"
    width = page.page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{what}: wider than the phone"
