"""What the gateway still adds to a request, in tokens, compared with the client's own request.

Runs a few client requests through a real ccgate (in this process, the real
Claude Code CLI, the scripted model of ``ccgate.demo`` as upstream) and compares
what the client sent with what reached the model (the scripted model's record):

* ``before``: the CLI left to itself (the fidelity levers of
  ``ccgate.claude.fidelity`` blanked), as ccgate ran until this change;
* ``after``: ccgate as it runs now;

each with an API key and with an OAuth token (a subscription), since Claude
Code's minimal mode takes only API keys.

Tokens are estimated as characters / 4 over the text the model reads (system
blocks, message text, tool inputs and results, tool definitions), the same
estimate on both sides, so the difference is what the gateway adds. Each added
piece is named; request parameters the client did not ask for (``thinking``,
``output_config``) are listed too.

    .venv/bin/python -m bench.fidelity           # every scenario
    .venv/bin/python -m bench.fidelity --quick   # one scenario: a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
import uvicorn

from bench.procs import check_leftovers
from bench.report import print_table
from ccgate.app import create_app
from ccgate.claude import ClaudeRunner, RunnerConfig
from ccgate.config import load_settings
from ccgate.demo import DemoServer, RecordedRequest, ScriptedModel

#: Blanking these turns the fidelity levers off (the CLI reads an empty value as unset).
LEVERS_OFF = {
    "CLAUDE_CODE_SIMPLE": "",
    "CLAUDE_CODE_DISABLE_THINKING": "",
    "CLAUDE_CODE_EFFORT_LEVEL": "",
    "CLAUDE_CODE_TOTAL_TOKENS_REMINDER": "",
}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up in the dictionary",
            "parameters": {
                "type": "object",
                "properties": {"word": {"type": "string"}},
                "required": ["word"],
            },
        },
    }
]


def tokens(chars: int) -> int:
    """Estimate tokens as characters / 4, rounded up."""
    return (chars + 3) // 4


def _text(node: Any) -> int:
    """Count the characters the model reads in a content value."""
    if isinstance(node, str):
        return len(node)
    if isinstance(node, list):
        return sum(_text(item) for item in node)
    if not isinstance(node, dict):
        return 0
    kind = node.get("type")
    if kind == "tool_use":
        return len(str(node.get("name", ""))) + len(json.dumps(node.get("input", {})))
    if kind == "tool_result":
        return _text(node.get("content"))
    return _text(node.get("text")) + _text(node.get("content"))


def client_chars(request: dict[str, Any]) -> int:
    """Characters of an OpenAI chat request the model is meant to read."""
    total = 0
    for message in request["messages"]:
        total += _text(message.get("content"))
        for call in message.get("tool_calls") or []:
            total += len(call["function"]["name"]) + len(call["function"]["arguments"])
    for tool in request.get("tools") or []:
        fn = tool["function"]
        total += len(fn["name"]) + len(fn.get("description", ""))
        total += len(json.dumps(fn.get("parameters", {})))
    return total


def upstream_chars(body: dict[str, Any]) -> int:
    """Characters of an upstream Messages request the model reads."""
    total = _text(body.get("system")) + _text(body.get("messages"))
    for tool in body.get("tools") or []:
        total += len(tool.get("name", "")) + len(tool.get("description", ""))
        total += len(json.dumps(tool.get("input_schema", {})))
    return total


def added_pieces(body: dict[str, Any], client_texts: set[str]) -> list[tuple[str, int]]:
    """Name what reached the model that the client did not write, with its tokens."""
    pieces: list[tuple[str, int]] = []
    for block in body.get("system") or []:
        text = block.get("text", "")
        if text in client_texts:
            continue
        pieces.append((f"system block {text[:40]!r}", tokens(len(text))))
    for message in body.get("messages") or []:
        if message["role"] == "system":
            label = "inline system message (# Environment ...)"
            pieces.append((label, tokens(_text(message["content"]))))
            continue
        content = message.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        for block in blocks:
            inner = block.get("content") if block.get("type") == "tool_result" else [block]
            for part in inner if isinstance(inner, list) else [{"type": "text", "text": inner}]:
                text = part.get("text", "") if isinstance(part, dict) else ""
                if "<total_tokens>" in text:
                    pieces.append(
                        ("<total_tokens> reminder after a tool result", tokens(len(text)))
                    )
                elif "<system-reminder>" in text:
                    label = "<system-reminder> in a message (# Environment ...)"
                    pieces.append((label, tokens(len(text))))
    for name in ("thinking", "output_config", "context_management"):
        if name in body:
            pieces.append((f"parameter {name}={json.dumps(body[name])}", 0))
    return pieces


# --------------------------------------------------------------------------- scenarios


def plain(client: openai.OpenAI) -> list[dict[str, Any]]:
    request: dict[str, Any] = {
        "model": MODEL[0],
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Name three primes."},
        ],
    }
    client.chat.completions.create(**request)
    return [request]


def conversation(client: openai.OpenAI) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are terse."}]
    sent = []
    for text in ("first question", "second question", "third question"):
        messages.append({"role": "user", "content": text})
        request: dict[str, Any] = {"model": MODEL[0], "messages": list(messages)}
        reply = client.chat.completions.create(**request)
        messages.append({"role": "assistant", "content": reply.choices[0].message.content})
        sent.append(request)
    return sent


def tool_call(client: openai.OpenAI) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": 'Define "gateway" [[demo: tool=lookup input={"word":"gateway"}]]',
        }
    ]
    first: dict[str, Any] = {"model": MODEL[0], "messages": list(messages), "tools": TOOLS}
    reply = client.chat.completions.create(**first)
    message = reply.choices[0].message
    call = (message.tool_calls or [])[0]
    messages += [
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "a point of entry"},
    ]
    second: dict[str, Any] = {"model": MODEL[0], "messages": list(messages), "tools": TOOLS}
    client.chat.completions.create(**second)
    return [first, second]


#: The model every scenario asks for (``--model``).
MODEL = ["claude-opus-5-5"]

SCENARIOS: dict[str, Callable[[openai.OpenAI], list[dict[str, Any]]]] = {
    "plain": plain,
    "conversation (3 turns)": conversation,
    "client tool call + result": tool_call,
}


# --------------------------------------------------------------------------- gateway


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:
        pass


@contextmanager
def gateway(demo: DemoServer, data_dir: Path, *, credential: str, levers: bool) -> Iterator[str]:
    """Serve a ccgate in this process; yield its URL."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CCGATE_")}
    environ.pop("ANTHROPIC_API_KEY", None)
    key: str | None = "bench-api-key"
    if credential == "oauth":
        environ["CLAUDE_CODE_OAUTH_TOKEN"] = "sk-ant-oat01-bench"
        key = None
    flags: dict[str, Any] = {
        "data_dir": data_dir,
        "upstream_url": demo.url,
        "upstream_api_key": key,
        "upstream_retries": 0,
        "pool_max_processes": 0,
    }
    settings = load_settings(flags, {})
    config = RunnerConfig(
        data_dir=settings.data_path,
        upstream_url=demo.url,
        upstream_api_key=key,
        upstream_retries=0,
        session_keepalive=settings.session_keepalive,
        environ=environ,
        extra_env={} if levers else dict(LEVERS_OFF),
    )
    runner = ClaudeRunner(config)
    app = create_app(settings, runner=runner, environ=environ)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = _Server(uvicorn.Config(app, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def measure(
    demo: DemoServer, root: Path, scenario: str, credential: str, levers: bool
) -> tuple[int, int, list[tuple[str, int]]]:
    """Run one scenario; return client tokens, upstream tokens and the added pieces (summed)."""
    model: ScriptedModel = demo.model
    model.reset()
    data_dir = root / f"{scenario.split()[0]}-{credential}-{'on' if levers else 'off'}"
    with (
        gateway(demo, data_dir, credential=credential, levers=levers) as url,
        openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as client,
    ):
        sent = SCENARIOS[scenario](client)
    received: list[RecordedRequest] = model.conversation_requests()
    client_total = sum(tokens(client_chars(r)) for r in sent)
    upstream_total = sum(tokens(upstream_chars(r.body)) for r in received)
    texts = {m["content"] for r in sent for m in r["messages"] if isinstance(m.get("content"), str)}
    pieces: dict[str, int] = {}
    for request in received:
        for name, count in added_pieces(request.body, texts):
            pieces[name] = pieces.get(name, 0) + count
    return client_total, upstream_total, sorted(pieces.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one scenario (a smoke test)")
    parser.add_argument("--model", default=MODEL[0], help="the model the requests name")
    args = parser.parse_args()
    MODEL[0] = args.model
    scenarios = ["plain"] if args.quick else list(SCENARIOS)
    demo = DemoServer(ScriptedModel()).start_in_thread()
    rows: list[list[str]] = []
    details: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ccgate-fidelity-") as tmp:
        root = Path(tmp)
        try:
            for scenario in scenarios:
                for credential in ("api-key", "oauth"):
                    results = {}
                    for levers in (False, True):
                        results[levers] = measure(demo, root, scenario, credential, levers)
                    client, before, removed = results[False]
                    _, after, pieces = results[True]
                    rows.append(
                        [
                            scenario,
                            credential,
                            str(client),
                            f"{before - client:+d}",
                            f"{after - client:+d}",
                        ]
                    )
                    for label, found in (("before", removed), ("after", pieces)):
                        details.append(f"{scenario} / {credential}, {label}:")
                        details += [f"    {name}: {count} tokens" for name, count in found] or [
                            "    nothing"
                        ]
        finally:
            demo.stop()
            check_leftovers([root])
    print("Tokens the model reads beyond the client's own request (estimate: characters / 4)")
    print_table(["scenario", "credential", "client tokens", "added before", "added after"], rows)
    print()
    print("What the model read beyond the client's request, summed over the scenario's requests:")
    for line in details:
        print(line)


if __name__ == "__main__":
    main()
