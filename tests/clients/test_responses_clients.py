"""Real clients of ``POST /v1/responses``: the Codex CLI, the OpenAI Agents SDK, the Vercel AI SDK.

Each runs against a real gateway (in a thread) whose Claude Code CLI asks the scripted model.
The prompt carries ``[[demo: tool=NAME input={...} id=ID]]``, so the model calls a tool of the
client's own; the client runs it and sends the result back, and the model answers
``Tool results: ID=<output>``, so the client's final text shows what the model got.

The Node clients come from ``tests/clients/package.json`` (locked; ``npm ci --prefix
tests/clients``, which ``.ci/run`` does); without them their tests skip, saying so. The Agents
SDK is the ``openai-agents`` package of the ``test`` extra.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agents import (
    Agent,
    Runner,
    function_tool,
    set_default_openai_client,
    set_tracing_disabled,
)
from agents.models import _openai_shared
from openai import AsyncOpenAI

from ccgate.demo import ScriptedModel
from tests.gateway_testing import Exchange, Gateway, Recorder, wait_until

pytestmark = pytest.mark.cli

HERE = Path(__file__).parent
NODE_MODULES = HERE / "node_modules"
CODEX = NODE_MODULES / ".bin" / "codex"
AISDK_SCRIPT = HERE / "aisdk.mjs"
INSTALL = "npm ci --prefix tests/clients (.ci/run does it)"

#: A bound on one client run (a tool loop takes a few seconds); a hung client fails the test.
CLIENT_TIMEOUT = 120.0


def _run(
    args: list[str], cwd: Path, env: dict[str, str], what: str
) -> subprocess.CompletedProcess[str]:
    """Run a client with stdin closed; kill it (and its children) if it hangs."""
    proc = subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=CLIENT_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{what} did not end: {out[-2000:]} {err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _processes_with(variable: str, value: Path) -> list[int]:
    """Return pids of live processes whose environment sets ``variable`` to ``value``."""
    marker = f"{variable}={value}".encode()
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            status = (entry / "status").read_text()
        except OSError:
            continue
        if "State:\tZ" not in status and marker in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def recorder() -> Recorder:
    """Return a recorder of the requests the gateway receives."""
    return Recorder()


@pytest.fixture
def gateway(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, recorder: Recorder
) -> Gateway:
    """Return a running gateway (auth_mode none) whose requests ``recorder`` records."""
    return make_gateway(recorder=recorder)


def _responses_calls(recorder: Recorder) -> list[Exchange]:
    return [e for e in recorder.exchanges if e.method == "POST" and e.path == "/v1/responses"]


def _tool_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the tool_result blocks of the last message of a model request."""
    content = body["messages"][-1]["content"]
    return [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]


def _assistant_texts(body: dict[str, Any]) -> list[str]:
    """Return the text blocks of the assistant messages of a model request."""
    return [
        b["text"]
        for m in body["messages"]
        if m["role"] == "assistant" and isinstance(m["content"], list)
        for b in m["content"]
        if b.get("type") == "text"
    ]


def _result_text(block: dict[str, Any]) -> str:
    content = block["content"]
    if isinstance(content, str):
        return content
    return "".join(str(b.get("text", "")) for b in content)


# -- the Codex CLI ---------------------------------------------------------------------------

#: Codex 0.171 for a local Responses server (checked with --strict-config): its multi-agent
#: namespace tool and hosted web search left out (ccgate refuses hosted tools with a 400),
#: no retries (a failure shows at once), nothing sent anywhere but the gateway.
CODEX_CONFIG = """\
model = "sonnet"
model_provider = "ccgate"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false
web_search = "disabled"

[analytics]
enabled = false

[feedback]
enabled = false

[otel]
exporter = "none"

[model_providers.ccgate]
name = "ccgate"
base_url = "{base_url}"
env_key = "CCGATE_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0

[features]
plugins = false
apps = false

[agents]
enabled = false
"""


@pytest.fixture
def codex_home(tmp_path: Path) -> Iterator[Path]:
    """Return an empty CODEX_HOME; no process run with it outlives the test.

    It lies under pytest's temporary folder, in /tmp: Codex then warns that it does not make
    its helper links there, which only its workspace-write sandbox needs (not used here).
    """
    if not CODEX.exists():
        pytest.skip(f"the Codex CLI is not installed at {CODEX}: {INSTALL}")
    home = tmp_path / "codex-home"
    home.mkdir()
    yield home
    wait_until(lambda: not _processes_with("CODEX_HOME", home), within=15)
    left = _processes_with("CODEX_HOME", home)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"Codex processes outlived the test: {left}"


def test_codex_exec_runs_its_shell_tool_for_the_model(
    gateway: Gateway,
    recorder: Recorder,
    model: ScriptedModel,
    codex_home: Path,
    tmp_path: Path,
) -> None:
    (codex_home / "config.toml").write_text(CODEX_CONFIG.format(base_url=gateway.url + "/v1"))
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    call = json.dumps({"cmd": "echo hello-from-codex > out.txt && cat out.txt"})
    prompt = f"write the file [[demo: tool=exec_command input={call} id=call_codex_1]]"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),
        "CODEX_HOME": str(codex_home),
        "CCGATE_KEY": "unused",
    }
    args = [str(CODEX), "exec", "--skip-git-repo-check", "--json", prompt]
    result = _run(args, workspace, env, "codex exec")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    # Codex ran its own tool in its working directory.
    assert (workspace / "out.txt").read_text() == "hello-from-codex\n"
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    done = [e["item"] for e in events if e["type"] == "item.completed"]
    (command,) = [i for i in done if i["type"] == "command_execution"]
    assert command["status"] == "completed" and command["exit_code"] == 0
    assert "echo hello-from-codex > out.txt" in command["command"]
    assert command["aggregated_output"].strip() == "hello-from-codex"
    # Its final message is the model's answer to the command's output.
    message = [i for i in done if i["type"] == "agent_message"][-1]
    assert message["text"].startswith("Tool results: call_codex_1=")
    assert "hello-from-codex" in message["text"]
    assert events[-1]["type"] == "turn.completed"

    # Two requests on the wire, both answered: the call, then the call's output.
    asked, answered = _responses_calls(recorder)
    assert (asked.status, answered.status) == (200, 200)
    assert asked.body["stream"] is True and asked.body["store"] is False
    assert "exec_command" in [t["name"] for t in asked.body["tools"]]
    (output,) = [i for i in answered.body["input"] if i["type"] == "function_call_output"]
    assert output["call_id"] == "call_codex_1"
    assert "hello-from-codex" in output["output"]
    # The model got the command's output as the result of its own tool call.
    first, last = model.conversation_requests()
    assert "exec_command" in [t["name"] for t in first.body["tools"]]
    (tool_result,) = _tool_results(last.body)
    assert tool_result["tool_use_id"] == "call_codex_1"
    assert "hello-from-codex" in _result_text(tool_result)


# -- the OpenAI Agents SDK -------------------------------------------------------------------

WEATHER = "Sunny in {city}, 21 C"
ASK = 'Weather in {city}? [[demo: tool=get_weather input={{"city": "{city}"}} id=call_{city}]]'


@pytest.fixture
async def agents_client(gateway: Gateway) -> AsyncIterator[AsyncOpenAI]:
    """Point the Agents SDK's default client at the gateway; put the previous one back after.

    The default client is global state of the SDK; tracing (which would upload to OpenAI)
    stays off for the rest of the run.
    """
    set_tracing_disabled(True)
    previous = _openai_shared.get_default_openai_client()
    client = AsyncOpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    set_default_openai_client(client, use_for_tracing=False)
    try:
        yield client
    finally:
        _openai_shared._default_openai_client = previous
        await client.close()


def _weather_agent(ran: list[str]) -> Agent[Any]:
    @function_tool
    def get_weather(city: str) -> str:
        """Return the weather for a city."""
        ran.append(city)
        return WEATHER.format(city=city)

    # No model client named: the SDK's default (its Responses model, on the default client).
    return Agent(
        name="Assistant", instructions="Answer briefly.", model="sonnet", tools=[get_weather]
    )


async def test_agents_sdk_runs_its_function_tool_for_the_model(
    agents_client: AsyncOpenAI, model: ScriptedModel, recorder: Recorder
) -> None:
    ran: list[str] = []
    agent = _weather_agent(ran)
    result = await Runner.run(agent, ASK.format(city="Paris"))
    assert ran == ["Paris"]
    assert result.final_output == f"Tool results: call_Paris={WEATHER.format(city='Paris')}"
    (tool_result,) = _tool_results(model.conversation_requests()[-1].body)
    assert tool_result["tool_use_id"] == "call_Paris"
    assert _result_text(tool_result) == WEATHER.format(city="Paris")

    # A second turn after the stored response: the model sees the first turn, once.
    again = await Runner.run(agent, "And tomorrow?", previous_response_id=result.last_response_id)
    assert again.final_output == "You said: And tomorrow?"
    assert ran == ["Paris"]
    # On the wire: the call, its output with the whole history, then the stored response named.
    asked, answered, continued = _responses_calls(recorder)
    assert all(c.status == 200 for c in (asked, answered, continued))
    assert [i.get("type") for i in answered.body["input"]][1:] == [
        "function_call",
        "function_call_output",
    ]
    assert continued.body["previous_response_id"] == result.last_response_id
    assert continued.body["input"] == [{"role": "user", "content": "And tomorrow?"}]
    last = model.conversation_requests()[-1].body
    assert _assistant_texts(last) == [f"Tool results: call_Paris={WEATHER.format(city='Paris')}"]


async def test_agents_sdk_streamed_runs_its_function_tool_for_the_model(
    agents_client: AsyncOpenAI, model: ScriptedModel, recorder: Recorder
) -> None:
    ran: list[str] = []
    result = Runner.run_streamed(_weather_agent(ran), ASK.format(city="Rome"))
    kinds: set[str] = set()
    deltas: list[str] = []
    async for event in result.stream_events():
        kinds.add(event.type)
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
            deltas.append(event.data.delta)
    expected = f"Tool results: call_Rome={WEATHER.format(city='Rome')}"
    assert ran == ["Rome"]
    assert result.final_output == expected
    assert "".join(deltas) == expected
    assert {"raw_response_event", "run_item_stream_event"} <= kinds
    calls = _responses_calls(recorder)
    assert [(c.status, c.body.get("stream")) for c in calls] == [(200, True), (200, True)]
    (tool_result,) = _tool_results(model.conversation_requests()[-1].body)
    assert _result_text(tool_result) == WEATHER.format(city="Rome")


# -- the Vercel AI SDK -----------------------------------------------------------------------


@pytest.fixture
def aisdk(gateway: Gateway, tmp_path: Path) -> Callable[[str], dict[str, Any]]:
    """Return a runner of ``aisdk.mjs MODE`` against the gateway; it returns the JSON printed."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH (the Vercel AI SDK tests need Node.js 18+)")
    if not (NODE_MODULES / "ai").exists():
        pytest.skip(f"the Vercel AI SDK is not installed in {NODE_MODULES}: {INSTALL}")

    def run(mode: str) -> dict[str, Any]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
        result = _run(
            [node, str(AISDK_SCRIPT), gateway.url + "/v1", mode], HERE, env, f"aisdk.mjs {mode}"
        )
        assert result.returncode == 0, textwrap.shorten(result.stderr, 3000)
        summary: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
        return summary

    return run


def test_ai_sdk_generate_text_runs_its_tool_for_the_model(
    aisdk: Callable[[str], dict[str, Any]], model: ScriptedModel
) -> None:
    out = aisdk("generate")
    assert out["executed"] == ["Paris"]
    assert out["toolCalls"] == [["call_Paris", "get_weather", {"city": "Paris"}]]
    assert out["steps"] == 2 and out["finishReason"] == "stop"
    assert out["text"] == f"Tool results: call_Paris={WEATHER.format(city='Paris')}"
    (tool_result,) = _tool_results(model.conversation_requests()[-1].body)
    assert tool_result["tool_use_id"] == "call_Paris"
    assert _result_text(tool_result) == WEATHER.format(city="Paris")


def test_ai_sdk_stream_text_runs_its_tool_for_the_model(
    aisdk: Callable[[str], dict[str, Any]], model: ScriptedModel, recorder: Recorder
) -> None:
    out = aisdk("stream")
    assert out["errors"] == []
    assert out["executed"] == ["Rome"]
    assert out["toolCalls"] == [["call_Rome", "get_weather", {"city": "Rome"}]]
    assert out["steps"] == 2 and out["finishReason"] == "stop"
    assert {"tool-call", "tool-result", "text-delta", "finish"} <= set(out["parts"])
    assert out["text"] == f"Tool results: call_Rome={WEATHER.format(city='Rome')}"
    calls = _responses_calls(recorder)
    assert [(c.status, c.body.get("stream")) for c in calls] == [(200, True), (200, True)]


@pytest.mark.parametrize(
    ("mode", "references"),
    [("multiturn", 1), ("multiturn-unstored", 0)],
    ids=["stored", "store-false"],
)
def test_ai_sdk_second_turn_sees_the_first(
    aisdk: Callable[[str], dict[str, Any]],
    model: ScriptedModel,
    recorder: Recorder,
    mode: str,
    references: int,
) -> None:
    out = aisdk(mode)
    answer = f"Tool results: call_Oslo={WEATHER.format(city='Oslo')}"
    assert out["executed"] == ["Oslo"]
    assert out["first"]["text"] == answer
    assert out["second"]["text"] == "You said: And tomorrow?"
    # Stored (the default), the SDK names the first answer by an item_reference; not stored,
    # it sends it in full. Either way the model saw the first turn once, then the new message.
    *_, continued = _responses_calls(recorder)
    assert continued.status == 200
    kinds = [i.get("type") for i in continued.body["input"]]
    assert kinds.count("item_reference") == references
    assert continued.body.get("store", True) is (references == 1)
    last = model.conversation_requests()[-1].body
    assert _assistant_texts(last) == [answer]
    assert ScriptedModel.last_user_text(last) == "And tomorrow?"
