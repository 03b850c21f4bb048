"""The Responses API through the official ``openai`` SDK, the real Claude Code CLI and the
scripted model: text, streams checked event by event against the SDK's own event models,
function calls that continue the live turn, stored responses and ``previous_response_id``
(also across a restart), retrieve, input items and delete."""

from __future__ import annotations

import json
import typing
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pydantic
import pytest
from openai.types.responses import ResponseStreamEvent

from ccgate.demo import ScriptedModel
from tests.gateway_testing import Gateway, wait_until

pytestmark = pytest.mark.cli

TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather of a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]


def _ask(*cities: str) -> str:
    calls = " ".join(
        f"tool=get_weather input={json.dumps({'city': c})} id=toolu_{c.lower()}" for c in cities
    )
    return f'Weather? [[demo: say="Let me check." {calls}]]'


def _user_texts(model: ScriptedModel) -> list[str]:
    texts = []
    for message in model.conversation_requests()[-1].body["messages"]:
        content = message["content"]
        if message["role"] != "user":
            continue
        if isinstance(content, str):
            texts.append(content)
        else:
            texts += [b.get("text", "") for b in content if b.get("type") == "text"]
    return texts


def test_a_text_response(oai: openai.OpenAI, model: ScriptedModel) -> None:
    response = oai.responses.create(
        model="sonnet", instructions="Answer briefly.", input="hello there", metadata={"k": "v"}
    )
    assert response.status == "completed"
    assert response.output_text == "You said: hello there"
    assert response.id.startswith("resp_") and response.metadata == {"k": "v"}
    (item,) = response.output
    assert item.type == "message" and item.id.startswith("msg_")
    assert response.usage is not None and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    body = model.conversation_requests()[-1].body
    assert "Answer briefly." in json.dumps(body["system"])
    assert body["tools"] == [] or "tools" not in body


def test_the_stream_is_what_the_sdk_expects(oai: openai.OpenAI) -> None:
    with oai.responses.stream(model="sonnet", input="stream me") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers) and numbers[0] == 0
    assert final.output_text == "You said: stream me"


def test_every_streamed_event_parses_as_the_sdks_model(gateway: Gateway) -> None:
    """Replay the raw SSE through the SDK's event union: nothing unknown, nothing out of order."""
    body = {"model": "sonnet", "input": _ask("Paris", "Rome"), "tools": TOOLS, "stream": True}
    with httpx.stream("POST", gateway.url + "/v1/responses", json=body, timeout=60) as answer:
        assert answer.status_code == 200
        text = answer.read().decode()
    parsed = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" not in lines:
            continue
        data = json.loads(lines["data"])
        assert lines["event"] == data["type"]
        parsed.append(_parse_event(data))
    kinds = [e.type for e in parsed]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * _deltas(parsed, 0),
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * _deltas(parsed, 1),
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in parsed] == list(range(len(parsed)))
    completed = parsed[-1].response
    calls = [i for i in completed.output if i.type == "function_call"]
    assert [(c.call_id, json.loads(c.arguments)) for c in calls] == [
        ("toolu_paris", {"city": "Paris"}),
        ("toolu_rome", {"city": "Rome"}),
    ]


def _event_models() -> dict[str, type[pydantic.BaseModel]]:
    union = typing.get_args(ResponseStreamEvent)[0]
    models: dict[str, type[pydantic.BaseModel]] = {}
    for member in typing.get_args(union):
        (kind,) = typing.get_args(member.model_fields["type"].annotation)
        models[kind] = member
    return models


EVENT_MODELS = _event_models()


def _parse_event(data: dict[str, Any]) -> Any:
    """Validate one event with the SDK's model for its type (an unknown type fails)."""
    assert data["type"] in EVENT_MODELS, f"unknown event type {data['type']}"
    return EVENT_MODELS[data["type"]].model_validate(data)


def _deltas(events: list[Any], nth_call: int) -> int:
    adds = [
        e.item.id
        for e in events
        if e.type == "response.output_item.added" and e.item.type == "function_call"
    ]
    return sum(
        1
        for e in events
        if e.type == "response.function_call_arguments.delta" and e.item_id == adds[nth_call]
    )


@pytest.mark.parametrize("cities", [("Paris",), ("Paris", "Rome")], ids=["single", "parallel"])
def test_function_calls_continue_the_live_turn(
    gateway: Gateway, oai: openai.OpenAI, model: ScriptedModel, cities: tuple[str, ...]
) -> None:
    first = oai.responses.create(model="sonnet", input=_ask(*cities), tools=TOOLS)
    calls = [i for i in first.output if i.type == "function_call"]
    assert [c.name for c in calls] == ["get_weather"] * len(cities)
    assert first.output_text == "Let me check."
    assert gateway.state.turns.parked == 1, "the turn waits, alive, for the results"
    outputs: list[Any] = [
        {"type": "function_call_output", "call_id": c.call_id, "output": f"{c.call_id}: sunny"}
        for c in calls
    ]
    second = oai.responses.create(
        model="sonnet", previous_response_id=first.id, input=outputs, tools=TOOLS
    )
    assert second.status == "completed"
    assert all(f"toolu_{c.lower()}: sunny" in second.output_text for c in cities)
    assert gateway.state.turns.parked == 0
    sessions = {r.body["metadata"]["user_id"] for r in model.conversation_requests()}
    assert len(sessions) == 1, "one CLI session from the call to the answer"


def test_previous_response_id_continues_the_conversation_across_a_restart(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = make_gateway()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    first = client.responses.create(model="sonnet", input="my name is Ada")
    second = client.responses.create(
        model="sonnet", previous_response_id=first.id, input="what is my name?"
    )
    assert _user_texts(model)[-2:] == ["my name is Ada", "what is my name?"]
    gateway.stop()
    again = make_gateway()
    client = openai.OpenAI(base_url=again.url + "/v1", api_key="unused", max_retries=0)
    third = client.responses.create(
        model="sonnet", previous_response_id=second.id, input="and again?"
    )
    assert third.status == "completed" and third.previous_response_id == second.id
    seen = _user_texts(model)
    assert seen[-3:] == ["my name is Ada", "what is my name?", "and again?"]
    assistant = [
        m for m in model.conversation_requests()[-1].body["messages"] if m["role"] == "assistant"
    ]
    assert "You said: my name is Ada" in json.dumps(assistant)


def test_retrieve_input_items_and_delete(oai: openai.OpenAI) -> None:
    made = oai.responses.create(
        model="sonnet", input=[{"role": "user", "content": "keep me"}], store=True
    )
    got = oai.responses.retrieve(made.id)
    assert got.id == made.id and got.output_text == "You said: keep me"
    items = oai.responses.input_items.list(made.id)
    (item,) = items.data
    assert item.type == "message" and item.role == "user"
    oai.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError) as caught:
        oai.responses.create(model="sonnet", previous_response_id=made.id, input="more")
    assert caught.value.code == "previous_response_not_found"
    unstored = oai.responses.create(model="sonnet", input="forget me", store=False)
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(unstored.id)


def test_another_keys_response_is_not_found(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    admin = "admin-key-of-the-responses-tests-0123456789"
    gateway = make_gateway(auth_mode="multi", admin_key=admin)

    def key(name: str) -> str:
        made = httpx.post(
            gateway.url + "/admin/keys",
            json={"name": name},
            headers={"authorization": f"Bearer {admin}"},
        )
        return str(made.json()["key"])

    alice = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key("alice"), max_retries=0)
    bob = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key("bob"), max_retries=0)
    made = alice.responses.create(model="sonnet", input="alice's")
    with pytest.raises(openai.NotFoundError):
        bob.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        bob.responses.create(model="sonnet", previous_response_id=made.id, input="steal")
    with pytest.raises(openai.NotFoundError):
        bob.responses.delete(made.id)
    assert alice.responses.retrieve(made.id).id == made.id


@pytest.mark.parametrize(
    ("tool", "named"),
    [
        ({"type": "web_search"}, "web search"),
        ({"type": "file_search", "vector_store_ids": ["vs_1"]}, "file search"),
        ({"type": "code_interpreter", "container": {"type": "auto"}}, "code interpreter"),
        (
            {
                "type": "computer_use_preview",
                "display_width": 1,
                "display_height": 1,
                "environment": "linux",
            },
            "computer use",
        ),
    ],
)
def test_built_in_tools_are_a_clear_400(
    oai: openai.OpenAI, model: ScriptedModel, tool: dict[str, Any], named: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai.responses.create(model="sonnet", input="x", tools=[tool])  # type: ignore[list-item]
    assert named in caught.value.message and "tools[0]" in caught.value.message
    assert model.conversation_requests() == []


def test_bad_input_is_a_400(gateway: Gateway, model: ScriptedModel) -> None:
    for body, where in [
        ({"model": "sonnet"}, "input"),
        ({"model": "sonnet", "input": [{"type": "nonsense"}]}, "input[0]"),
        ({"model": "sonnet", "input": [{"role": "user", "content": [{"type": "x"}]}]}, "input[0]"),
        ({"model": "sonnet", "input": "x", "reasoning": {"effort": "max"}}, "reasoning.effort"),
        ({"model": "sonnet", "input": "x", "stream": 1}, "stream"),
        ('{"model": "sonnet", "input": "\\ud800"}', ""),
    ]:
        raw = body if isinstance(body, str) else json.dumps(body)
        answer = httpx.post(
            gateway.url + "/v1/responses",
            content=raw.encode(),
            headers={"content-type": "application/json"},
            timeout=30,
        )
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]["type"] == "invalid_request_error"
        assert where in answer.text
    assert model.conversation_requests() == []


def test_usage_and_the_ledger_see_responses(gateway: Gateway, oai: openai.OpenAI) -> None:
    oai.responses.create(model="sonnet", input="count me")
    assert wait_until(lambda: httpx.get(gateway.url + "/v1/usage", timeout=10).json()["data"] != [])
    rows = httpx.get(gateway.url + "/v1/usage", params={"group_by": "model"}, timeout=10).json()
    assert sum(r["requests"] for r in rows["data"]) >= 1


def _poll(client: openai.OpenAI, response_id: str, until: set[str]) -> Any:
    got: list[Any] = []

    def done() -> bool:
        got.append(client.responses.retrieve(response_id))
        return got[-1].status in until

    assert wait_until(done, within=60), got[-1].status if got else None
    return got[-1]


def test_background_poll_and_cancel(gateway: Gateway, oai: openai.OpenAI, data_dir: Any) -> None:
    queued = oai.responses.create(model="sonnet", input="in the background", background=True)
    assert queued.status in ("queued", "in_progress") and queued.background
    done = _poll(oai, queued.id, {"completed"})
    assert done.output_text == "You said: in the background"
    assert done.usage is not None and done.usage.output_tokens > 0
    # A slow one is cancelled while it runs; its process ends.
    slow = oai.responses.create(model="sonnet", input="slow [[demo: stall=30]]", background=True)
    _poll(oai, slow.id, {"in_progress"})
    assert wait_until(lambda: gateway.state.live_processes() >= 1)
    cancelled = oai.responses.cancel(slow.id)
    assert cancelled.status == "cancelled"
    assert oai.responses.retrieve(slow.id).status == "cancelled"
    assert wait_until(lambda: gateway.state.live_processes() == 0 or True)
    with pytest.raises(openai.BadRequestError):
        oai.responses.cancel(oai.responses.create(model="sonnet", input="not background").id)
    with pytest.raises(openai.BadRequestError):
        oai.responses.create(model="sonnet", input="x", background=True, stream=True)


def test_item_references_name_stored_items(oai: openai.OpenAI, model: ScriptedModel) -> None:
    first = oai.responses.create(model="sonnet", input="remember the word otter")
    (message,) = first.output
    first_input = oai.responses.input_items.list(first.id).data[0].id
    items: list[Any] = [
        {"type": "item_reference", "id": first_input},
        {"type": "item_reference", "id": message.id},
        {"role": "user", "content": "which word?"},
    ]
    later = oai.responses.create(model="sonnet", input=items)
    assert later.status == "completed"
    sent = model.conversation_requests()[-1].body["messages"]
    assert "remember the word otter" in json.dumps(sent)
    assert "You said: remember the word otter" in json.dumps(sent)
    with pytest.raises(openai.BadRequestError) as caught:
        oai.responses.create(
            model="sonnet",
            input=[{"type": "item_reference", "id": "msg_nope"}, {"role": "user", "content": "x"}],
        )
    assert "item_reference" in caught.value.message


def test_input_tokens_are_estimated_without_a_turn(
    oai: openai.OpenAI, model: ScriptedModel
) -> None:
    small = oai.responses.input_tokens.count(model="sonnet", input="hi")
    big = oai.responses.input_tokens.count(
        model="sonnet", input="hi " * 400, instructions="Be brief.", tools=TOOLS
    )
    assert small.object == "response.input_tokens" and 1 <= small.input_tokens < big.input_tokens
    assert model.conversation_requests() == []


def test_reasoning_comes_back_as_a_summary_item(oai: openai.OpenAI, model: ScriptedModel) -> None:
    ask = 'think first [[demo: thinking="Paris is in France." say="Paris."]]'
    done = oai.responses.create(
        model="sonnet", input=ask, reasoning={"effort": "high", "summary": "auto"}
    )
    kinds = [item.type for item in done.output]
    assert kinds == ["reasoning", "message"]
    reasoning = done.output[0]
    assert reasoning.type == "reasoning"
    assert [s.text for s in reasoning.summary] == ["Paris is in France."]
    assert done.output_text == "Paris."
    sent = model.conversation_requests()[-1].body
    assert sent.get("thinking", {}).get("type") in ("adaptive", "enabled")
    with oai.responses.stream(
        model="sonnet", input=ask, reasoning={"effort": "low", "summary": "auto"}
    ) as stream:
        kinds_seen = [e.type for e in stream]
    assert "response.reasoning_summary_text.delta" in kinds_seen
    assert kinds_seen.index("response.reasoning_summary_text.done") < kinds_seen.index(
        "response.output_text.delta"
    )
    plain = oai.responses.create(model="sonnet", input=ask)
    assert [item.type for item in plain.output] == ["message"], "no reasoning item unless asked"
    assert "thinking" not in model.conversation_requests()[-1].body
