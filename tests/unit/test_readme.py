"""The README documents every setting and keeps its two-command Quickstart."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ccgate.config import Settings

README = Path(__file__).parents[2] / "README.md"


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def _section(text: str, title: str) -> str:
    """Return the body of the level-2 section ``title`` (up to the next level-2 heading)."""
    match = re.search(rf"^## {re.escape(title)}[ \t]*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match is not None, f"README has no '## {title}' section"
    return match.group(1)


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_readme_documents_every_setting(name: str) -> None:
    text = _readme()
    flag = "--" + name.replace("_", "-")
    env = "CCGATE_" + name.upper()
    assert f"`{name}`" in text, f"README does not mention the setting {name}"
    assert re.search(rf"{re.escape(flag)}(?![\w-])", text), f"README lacks the flag {flag}"
    assert re.search(rf"{re.escape(env)}(?!\w)", text), f"README lacks the env var {env}"


def test_quickstart_has_exactly_two_commands() -> None:
    section = _section(_readme(), "Quickstart")
    block = re.search(r"^```[^\n]*\n(.*?)^```", section, re.M | re.S)
    assert block is not None, "the Quickstart section has no code block"
    commands = [
        line.strip()
        for line in block.group(1).splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert len(commands) == 2, commands
    assert commands[1] == ".ci/run"
