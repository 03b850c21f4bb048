"""The catalogue follows the real CLI: its models, their aliases, and ids passed on to it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import anthropic
import openai
import pytest

from ccgate.demo import ScriptedModel
from tests.gateway_testing import Gateway, wait_until

pytestmark = pytest.mark.cli


def test_the_catalogue_is_what_the_cli_offers_current_models_first(
    make_gateway: Callable[..., Gateway], data_dir: Path, model: ScriptedModel
) -> None:
    shutil.rmtree(data_dir / "cache")  # no cached answer: the gateway asks the CLI itself
    gateway = make_gateway()
    cache = data_dir / "cache" / "cli-models.json"
    assert wait_until(cache.exists, within=60)
    offered = json.loads(cache.read_text())["models"]
    resolved = list(dict.fromkeys(m["resolvedModel"] for m in offered))
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0) as client:
        assert wait_until(lambda: client.models.retrieve("fable").id in resolved, within=10)
        listed = [m.id for m in client.models.list()]
    assert listed[: len(resolved)] == resolved
    aliases = {m["value"] for m in offered} - {"default"}
    assert aliases <= set(listed)
    assert not [r for r in model.requests if r.is_model_request]  # asking cost no model call


@pytest.mark.parametrize(
    ("name", "sent"),
    [
        ("claude-opus-5-5", "claude-opus-5-5"),
        ("opus", "claude-opus-5-5"),
        ("anthropic/claude-sonnet-5.5", "claude-sonnet-5-5"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-opus-5-5-20261101", "claude-opus-5-5-20261101"),
        ("claude-sonnet-6-0", "claude-sonnet-6-0"),
    ],
)
def test_names_reach_the_cli_as_ids_it_decides_on(
    oai: openai.OpenAI, model: ScriptedModel, name: str, sent: str
) -> None:
    reply = oai.chat.completions.create(
        model=name, messages=[{"role": "user", "content": "which model?"}]
    )
    assert reply.model == name  # the client's own name is echoed
    assert model.conversation_requests()[-1].body["model"] == sent


def test_a_model_the_upstream_does_not_know_is_model_not_found(
    oai: openai.OpenAI, ant: anthropic.Anthropic, model: ScriptedModel
) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        oai.chat.completions.create(
            model="claude-nonexistent-9", messages=[{"role": "user", "content": "hi"}]
        )
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "model_not_found"
    assert error["param"] == "model"
    with pytest.raises(anthropic.NotFoundError) as refused:
        ant.messages.create(
            model="claude-nonexistent-9",
            max_tokens=50,
            messages=[{"role": "user", "content": "hi"}],
        )
    assert refused.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


def test_a_name_that_is_not_a_claude_model_is_refused_without_a_turn(
    oai: openai.OpenAI, model: ScriptedModel
) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert "claude-opus-5-5" in info.value.message
    assert not model.conversation_requests()
