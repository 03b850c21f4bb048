"""The model catalogue: aliases, ids passed to the CLI, the CLI's own list."""

from __future__ import annotations

import pytest

from ccgate.claude.models import parse_cli_models
from ccgate.engine.models import Catalogue, CliModel, Price
from ccgate.errors import NotFound

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.load()


@pytest.mark.parametrize(
    ("name", "model_id"),
    [
        ("sonnet", "claude-sonnet-5-5"),
        ("opus", "claude-opus-5-5"),
        ("haiku", "claude-haiku-5-5"),
        ("fable", "claude-fable-5-2"),
        ("default", "claude-opus-5-5"),
        ("claude-opus-5-5", "claude-opus-5-5"),
        ("claude-sonnet-4.5", "claude-sonnet-4-5"),
        ("anthropic/claude-sonnet-4.5", "claude-sonnet-4-5"),
        ("us.anthropic.claude-opus-5-5", "claude-opus-5-5"),
        ("anthropic.claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("sonnet-4-5", "claude-sonnet-4-5"),
        ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("anthropic/claude-opus-4-5-20251101", "claude-opus-4-5"),
        ("Claude-Sonnet-4-5", "claude-sonnet-4-5"),
        ("ANTHROPIC/CLAUDE-HAIKU-4-5", "claude-haiku-4-5"),
        ("SONNET", "claude-sonnet-5-5"),
        ("  sonnet ", "claude-sonnet-5-5"),
        ("claude-opus-latest", "claude-opus-5-5"),
    ],
)
def test_resolve(catalogue: Catalogue, name: str, model_id: str) -> None:
    model = catalogue.resolve(name)
    assert model.id == model_id
    assert model.known


def test_the_cli_receives_the_resolved_id_or_the_dated_one_asked_for(catalogue: Catalogue) -> None:
    assert catalogue.resolve("sonnet").cli == "claude-sonnet-5-5"
    dated = catalogue.resolve("claude-opus-5-5-20261101")
    assert (dated.id, dated.cli) == ("claude-opus-5-5", "claude-opus-5-5-20261101")


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("claude-sonnet-9", "sonnet"),
        ("claude-opus-6-1-20270101", "opus"),
        ("claude-zeta-1", "zeta"),
    ],
)
def test_an_unknown_claude_id_is_passed_to_the_cli(
    catalogue: Catalogue, name: str, family: str
) -> None:
    model = catalogue.resolve(name)
    assert (model.id, model.cli, model.known, model.family) == (name, name, False, family)
    assert model.price.output > 0  # priced like its family's current model, or the default


@pytest.mark.parametrize(
    "name", ["gpt-4o", "anthropic/gpt-4o", "", "claude sonnet", "claude-\ud800", "x" * 300]
)
def test_unknown_model(catalogue: Catalogue, name: str) -> None:
    with pytest.raises(NotFound) as info:
        catalogue.resolve(name)
    assert info.value.code == "model_not_found"
    assert info.value.param == "model"
    assert info.value.status == 404
    assert len(info.value.message) < 400


def test_the_cli_s_list_wins_and_comes_first() -> None:
    catalogue = Catalogue.load()
    catalogue.adopt(
        [
            CliModel("default", "claude-sonnet-6-0", "Claude Sonnet 6", Price.of(3, 15)),
            CliModel("sonnet", "claude-sonnet-6-0", "Claude Sonnet 6", Price.of(3, 15)),
            CliModel("haiku", "claude-haiku-5-5", "Claude Haiku 5.5", None),
        ],
        seen_at=1_800_000_000,
    )
    sonnet = catalogue.resolve("sonnet")
    assert (sonnet.id, sonnet.current, sonnet.price.input, sonnet.created) == (
        "claude-sonnet-6-0",
        True,
        3,
        1_800_000_000,
    )
    assert catalogue.resolve("default").id == "claude-sonnet-6-0"
    assert catalogue.resolve("haiku").price == Price.of(0.1, 0.5)  # kept: the CLI gave none
    listed = [listed for listed, _ in catalogue.listing()]
    assert listed[:2] == ["claude-haiku-5-5", "claude-sonnet-6-0"] or listed[:2] == [
        "claude-sonnet-6-0",
        "claude-haiku-5-5",
    ]
    assert {"sonnet", "haiku"} <= set(listed[2:4])
    # A model the CLI no longer offers stays reachable by its id, not as current.
    old = catalogue.resolve("claude-sonnet-5-5")
    assert old.known and not old.current
    assert "sonnet" not in old.aliases


def test_the_cli_s_model_list_is_parsed() -> None:
    raw = [
        {
            "value": "opus",
            "resolvedModel": "claude-opus-5-5",
            "displayName": "Opus",
            "description": "Opus 5.5 · Best for everyday, complex tasks · $4/$20 per Mtok",
        },
        {
            "value": "haiku",
            "resolvedModel": "claude-haiku-5-5",
            "description": "Haiku 5.5 · Fastest · $0.10/$0.50 per Mtok ($0.50/$2.50 over 100k)",
        },
        {"value": "broken"},
        "not a model",
    ]
    opus, haiku = parse_cli_models(raw)
    assert (opus.value, opus.resolved, opus.display_name) == (
        "opus",
        "claude-opus-5-5",
        "Claude Opus 5.5",
    )
    assert opus.price == Price.of(4, 20)
    assert haiku.price == Price.of(0.1, 0.5)
    assert parse_cli_models(None) == []


def test_catalogue_entries_are_sane(catalogue: Catalogue) -> None:
    ids = [m.id for m in catalogue.models]
    assert len(ids) == len(set(ids))
    for model in catalogue.models:
        assert model.cli
        assert model.context_window > 0
        assert model.max_output > 0
        assert model.price.output >= model.price.input > 0
