"""The documentation site is current: generated references, every setting, README, changelog."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
from cogapp import Cog  # type: ignore[import-untyped]

from ccgate.config import ENV_PREFIX, Settings

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
GENERATED = sorted((DOCS / "reference").glob("*.md"))
REGENERATE = "cog -r docs/reference/*.md"


def _pages() -> dict[str, str]:
    """Return every page of the site by its path under docs/, with its text."""
    return {
        str(page.relative_to(DOCS)): page.read_text(encoding="utf-8")
        for page in sorted(DOCS.rglob("*.md"))
    }


@pytest.mark.server  # the generators run `python -m ccgate.demo --help` in a subprocess
def test_generated_references_are_current() -> None:
    """The cog blocks of docs/reference/ hold what the code generates today."""
    assert GENERATED, "docs/reference/ has no pages"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        status = Cog().main(["cog", "--check", "--verbosity=1", *map(str, GENERATED)])
    assert status == 0, (
        f"the generated references are stale; regenerate them with `{REGENERATE}` "
        f"(from the repository root) and commit the result.\n{out.getvalue()}"
    )


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_settings_reference_lists_every_setting(name: str) -> None:
    text = (DOCS / "reference" / "settings.md").read_text(encoding="utf-8")
    flag = "--" + name.replace("_", "-")
    env = ENV_PREFIX + name.upper()
    assert f"`{name}`" in text, f"the settings reference lacks {name}: run `{REGENERATE}`"
    assert re.search(rf"`{re.escape(flag)}`", text), f"the settings reference lacks {flag}"
    assert re.search(rf"`{re.escape(env)}`", text), f"the settings reference lacks {env}"


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_explained_beyond_the_reference(name: str) -> None:
    """A setting is told about where its subject is, not only in the generated table."""
    pages = [
        page
        for page, text in _pages().items()
        if not page.startswith("reference/") and f"`{name}`" in text
    ]
    assert pages, f"no page but the reference mentions `{name}`: say what it does where it belongs"


@pytest.mark.unit
def test_api_overview_names_every_path() -> None:
    """The hand-written endpoints table of the API reference covers the OpenAPI document."""
    text = (DOCS / "reference" / "api.md").read_text(encoding="utf-8")
    overview = text.split("<!-- [[[cog", 1)[0]
    generated = re.findall(r"^### `[A-Z]+ (\S+)`$", text, re.M)
    assert generated, f"the API reference has no operations: run `{REGENERATE}`"

    def shape(path: str) -> str:
        return re.sub(r"\{[^}]*\}", "{}", path)

    listed = {shape(p) for p in re.findall(r"`(?:[A-Z]+ )?(/[^`\s]*)`", overview)}
    missing = sorted({p for p in generated if shape(p) not in listed})
    assert not missing, f"the endpoints table of docs/reference/api.md lacks {missing}"


@pytest.mark.unit
def test_every_page_is_in_the_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    missing = [page for page in _pages() if page not in nav]
    assert not missing, f"mkdocs.yml's nav lacks {missing}"


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def _section(text: str, title: str) -> str:
    """Return the body of the level-2 section ``title`` (up to the next level-2 heading)."""
    match = re.search(rf"^## {re.escape(title)}[ \t]*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match is not None, f"README has no '## {title}' section"
    return match.group(1)


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


@pytest.mark.unit
def test_quickstart_has_two_commands_in_separate_blocks() -> None:
    """The gateway first, said to run in the foreground; the tests second, in a second terminal."""
    blocks = _blocks(_section(_readme(), "Quickstart"))
    assert len(blocks) >= 2, "the Quickstart section needs a block per command"
    (serve_prose, serve), (check_prose, check) = blocks[0], blocks[1]
    assert len(serve) == 1 and serve[0].endswith("ccgate serve --demo"), serve
    assert "foreground" in serve_prose.lower(), "say that the gateway keeps its terminal"
    assert check == [".ci/run"]
    assert "second terminal" in check_prose.lower()


def _missing_links(path: Path) -> list[str]:
    """Return the relative links of ``path`` whose files do not exist."""
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8"))
    return [link for link in links if "://" not in link and not (path.parent / link).exists()]


@pytest.mark.unit
def test_readme_is_short_and_links_into_the_docs() -> None:
    text = _readme()
    assert len(text.splitlines()) <= 150, "keep the README short: the docs site holds the rest"
    assert "](docs/" in text, "link the README into docs/"


@pytest.mark.unit
@pytest.mark.parametrize("name", ["README.md", "CHANGELOG.md"])
def test_links_resolve(name: str) -> None:
    missing = _missing_links(ROOT / name)
    assert not missing, f"{name} links to missing files: {missing}"
