"""Client tool round trips: results that continue the live turn versus a rebuilt turn.

A client that uses tools sends two requests per round: the question (answered with
tool calls) and the tool results (answered with the model's final reply). This script
plays such rounds through two real ``python -m ccgate serve`` subprocesses pointed at
the scripted model (``ccgate.demo``, in a thread of this process):

* ``live``    -- the defaults: the turn that made the calls waits, alive, and the
  results request continues it in the same Claude Code process;
* ``rebuilt`` -- ``CCGATE_TOOL_RESULT_TIMEOUT=0.05``: the waiting turn is dropped
  before the results arrive (the script waits for ``/health`` to show no waiting
  turn), so the results request rebuilds the session from the client's history and
  a new CLI process finishes the call (what happens after a restart or a timeout);

and, as the baseline of the same run, a plain one-request turn (``cold``: a new
conversation without tools, one cold CLI process).

Each round uses a new conversation with two parallel calls (OpenAI Chat Completions,
non-streamed, httpx). The rounds alternate between the modes so they share the
machine's noise. Printed: median / p90 / min of each request's latency per mode, the
ratio rebuilt/live of the results request, and per mode how many CLI sessions the
scripted model saw per round (1 = the results continued the calling process). It
stops the servers with SIGTERM and checks that no CLI process is left. Timings are
reported, never asserted.

Usage (from the project root, with the project's venv)::

    python -m bench.tools              # 10 rounds per mode
    python -m bench.tools --rounds 20
    python -m bench.tools --quick      # 2 rounds per mode: a smoke test only
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.procs import check_leftovers
from bench.report import fmt_summary, print_environment, print_table, ratio, summary_ms
from bench.serve import Gateway, base_env
from ccgate.demo import DemoServer, ScriptedModel

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
TIMEOUT = 60.0


def _question(n: int) -> str:
    return (
        f'round {n}: weather in Oslo and Rome? [[demo: say="Checking." '
        'tool=get_weather input={"city":"Oslo"} tool=get_weather input={"city":"Rome"}]]'
    )


def _post(client: httpx.Client, url: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    response = client.post(url + "/v1/chat/completions", json=body, timeout=TIMEOUT)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
    answer: dict[str, Any] = response.json()
    return elapsed, answer


def _wait_no_waiting_turn(client: httpx.Client, url: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if client.get(url + "/health").json()["turns"]["waiting_for_tools"] == 0:
            return
        time.sleep(0.02)
    raise RuntimeError("the waiting turn was not dropped")


def tool_round(
    client: httpx.Client, gateway: Gateway, model: ScriptedModel, n: int, *, drop: bool
) -> tuple[float, float, int]:
    """Play one round; return (calls latency, results latency, CLI sessions seen)."""
    before = len(model.conversation_requests())
    messages: list[dict[str, Any]] = [{"role": "user", "content": _question(n)}]
    body = {"model": "sonnet", "messages": messages, "tools": TOOLS}
    calls_s, answer = _post(client, gateway.url, body)
    message = answer["choices"][0]["message"]
    if answer["choices"][0]["finish_reason"] != "tool_calls":
        raise RuntimeError(f"expected tool calls, got {message}")
    messages.append(message)
    for call in message["tool_calls"]:
        city = json.loads(call["function"]["arguments"])["city"]
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": f"sun in {city}"})
    if drop:
        _wait_no_waiting_turn(client, gateway.url)
    results_s, final = _post(client, gateway.url, body)
    text = final["choices"][0]["message"]["content"]
    if "sun in Oslo" not in text or "sun in Rome" not in text:
        raise RuntimeError(f"the results did not reach the model: {text!r}")
    sessions = {
        r.headers.get("x-claude-code-session-id") for r in model.conversation_requests()[before:]
    }
    return calls_s, results_s, len(sessions)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its report."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.tools", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--rounds", type=int, default=10, help="rounds per mode (default 10)")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke test: 2 rounds per mode, 1 warm-up round"
    )
    args = parser.parse_args(argv)
    warmups = 1 if args.quick else 2
    if args.quick:
        args.rounds = 2
    print("ccgate tool round trips")
    print_environment([("plan", f"{args.rounds} rounds per mode, after {warmups} warm-up(s)")])
    model = ScriptedModel()
    tmp = Path(tempfile.mkdtemp(prefix="ccgate-bench-tools-")).resolve()
    results: dict[str, list[tuple[float, float, int]]] = {"live": [], "rebuilt": []}
    cold: list[float] = []
    try:
        with DemoServer(model) as demo, httpx.Client(trust_env=False) as client:
            env = base_env()
            live = Gateway(demo.url, tmp / "live", env)
            rebuilt = Gateway(
                demo.url, tmp / "rebuilt", env, extra_env={"CCGATE_TOOL_RESULT_TIMEOUT": "0.05"}
            )
            try:
                live.wait_healthy(client)
                rebuilt.wait_healthy(client)
                for warm in range(warmups):
                    tool_round(client, live, model, -1 - warm, drop=False)
                    tool_round(client, rebuilt, model, -1 - warm, drop=True)
                for n in range(args.rounds):
                    results["live"].append(tool_round(client, live, model, n, drop=False))
                    results["rebuilt"].append(tool_round(client, rebuilt, model, n, drop=True))
                    plain = {
                        "model": "sonnet",
                        "messages": [{"role": "user", "content": f"hi {n}"}],
                    }
                    cold.append(_post(client, live.url, plain)[0])
            finally:
                print(f"live gateway stop: {live.stop()}")
                print(f"rebuilt gateway stop: {rebuilt.stop()}")
        check_leftovers([tmp])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"{args.rounds} rounds per mode; latency in ms")
    rows = [["cold turn (no tools)", *fmt_summary(summary_ms(cold))]]
    for mode, got in results.items():
        rows.append(
            [f"{mode}: question -> tool calls", *fmt_summary(summary_ms([r[0] for r in got]))]
        )
        rows.append(
            [f"{mode}: results -> final answer", *fmt_summary(summary_ms([r[1] for r in got]))]
        )
    print_table(["request", "median", "p90", "min"], rows)
    live_med = statistics.median(r[1] for r in results["live"])
    rebuilt_med = statistics.median(r[1] for r in results["rebuilt"])
    print()
    print(f"results request, rebuilt / live (medians): {ratio(rebuilt_med, live_med)}")
    for mode, got in results.items():
        counts = sorted({r[2] for r in got})
        print(f"CLI sessions per round, {mode}: {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
