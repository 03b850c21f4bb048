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


def _blocks(section: str) -> list[tuple[str, list[str]]]:
    """Return each code block of ``section`` with the prose before it and its commands."""
    blocks = []
    for match in re.finditer(r"^```[^\n]*\n(.*?)^```", section, re.M | re.S):
        before = section[: match.start()].rsplit("```", 1)[-1]
        commands = [
            line.strip()
            for line in match.group(1).splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]
        blocks.append((before, commands))
    return blocks


def test_quickstart_has_two_commands_in_separate_blocks() -> None:
    """The gateway first, said to run in the foreground; the tests second, in a second terminal."""
    blocks = _blocks(_section(_readme(), "Quickstart"))
    assert len(blocks) >= 2, "the Quickstart section needs a block per command"
    (serve_prose, serve), (check_prose, check) = blocks[0], blocks[1]
    assert len(serve) == 1 and serve[0].endswith("ccgate serve --demo"), serve
    assert "foreground" in serve_prose.lower(), "say that the gateway keeps its terminal"
    assert check == [".ci/run"]
    assert "second terminal" in check_prose.lower()
