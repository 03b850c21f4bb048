"""Chromium for the console's browser tests: Debian's, driven by Playwright (no download).

``scripts/install-browser`` installs it; ``CCGATE_CHROMIUM`` names another binary. Without
it the browser tests skip, saying so. Every page a test opens collects Content-Security-Policy
violations and script errors, and the test fails on any. Screenshots go to
``tests/console/artifacts/`` (``CCGATE_ARTIFACTS`` names another folder).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("CCGATE_CHROMIUM", "/usr/bin/chromium"))
AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = Path(os.environ.get("CCGATE_ARTIFACTS", Path(__file__).parent / "artifacts"))
PHONE = {"width": 390, "height": 844}
DESK = {"width": 1280, "height": 800}

#: Collects CSP violations before any page script runs.
_WATCH = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
  e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));
"""


class Page:
    """A Playwright page with what went wrong on it (CSP violations, script errors)."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on(
            "console",
            lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None,
        )
        page.add_init_script(_WATCH)

    def problems(self) -> list[str]:
        """Return CSP violations and script errors so far."""
        csp: list[str] = self.page.evaluate("() => window.__csp || []")
        # A sign-in refused answers 401/429 on purpose; the browser logs those as errors.
        errors = [e for e in self.errors if "status of 401" not in e and "status of 429" not in e]
        return [*csp, *errors]

    def axe(self) -> list[tuple[str, str, list[Any]]]:
        """Run axe-core on the page; return its serious and critical violations."""
        if not AXE.exists():
            pytest.skip(f"axe-core is not installed at {AXE} (npm ci --prefix tests/console)")
        self.page.evaluate(AXE.read_text(encoding="utf-8"))
        result = self.page.evaluate(
            "() => axe.run(document, {resultTypes: ['violations'], runOnly: {type: 'tag',"
            " values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})"
        )
        return [
            (v["id"], v["help"], [n["target"] for n in v["nodes"]])
            for v in result["violations"]
            if v["impact"] in ("serious", "critical")
        ]

    def shot(self, name: str) -> Path:
        """Save a full-page screenshot as ``<name>.png`` in the artefact folder."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Return Debian's Chromium, launched headless by Playwright.

    Per module, not per session: Playwright's sync API runs an event loop in this thread
    while it is open, and the async tests of later modules need the thread's loop free.
    """
    if not CHROMIUM.exists():
        pytest.skip(
            f"no Chromium at {CHROMIUM}: run scripts/install-browser (or set CCGATE_CHROMIUM)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browse(chromium: Any) -> Iterator[Any]:
    """Return a factory of fresh browser pages (own cookies each): ``browse(viewport)``."""
    contexts: list[Any] = []

    def make(viewport: dict[str, int] | None = None) -> Page:
        context = chromium.new_context(viewport=viewport or DESK)
        contexts.append(context)
        return Page(context.new_page())

    yield make
    for context in contexts:
        context.close()
