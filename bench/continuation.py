"""Upstream input of a 20-turn chat: ccgate with session continuation versus without.

An OpenAI client sends the whole conversation on every request. This script plays
such a client against two real ``python -m ccgate serve`` subprocesses, both pointed
at the scripted model (``ccgate.demo``) running in a thread of this process:

* ``on``  -- the default settings (``session_continuation`` true): a request whose
  earlier messages match the conversation's last recorded state resumes that
  conversation's Claude Code session;
* ``off`` -- the same, with ``CCGATE_SESSION_CONTINUATION=false`` in the server's
  environment: every request gets a fresh Claude Code session rebuilt from the
  history the client sent.

Each run has its own data dir. Both runs send the same 20 user messages
(``turn N: <filler>``) plus a short system message to ``POST /v1/chat/completions``
(non-streamed, httpx), appending the assistant's answer to the history each time.

What is measured, per turn, from the requests the scripted model recorded (the
Messages API bodies the Claude Code CLI sent upstream; side calls excluded):

* input characters = the characters of every text string in ``system`` and
  ``messages`` (``text`` fields and string ``content``), summed over the
  conversation request(s) the turn caused. The length of ``json.dumps`` of the two
  fields (compact separators, cache markers included) is printed as a total too;
* the CLI session (header ``x-claude-code-session-id``): how many distinct ones the
  run has used so far, and whether the turn reused the previous turn's session
  ("resumed") or used a new one ("rebuilt");
* the shared prefix: how many leading characters of the previous turn's request
  recur verbatim at the start of this turn's request (``system`` and ``messages``
  serialised with ``cache_control`` removed and string ``content`` spelled as one text
  block) -- the part a prompt cache keyed on the prefix could reuse; whether the
  previous request's prompt up to its last message-level ``cache_control`` marker
  recurs unchanged; and, in the last request, where the markers and the CLI's own
  ``role: system`` messages sit;
* the client-side latency of each request (median per mode). Timings are reported,
  never asserted.

The gateway is stopped with SIGTERM, and at the end ``/proc`` is scanned for any
process whose ``CLAUDE_CONFIG_DIR`` lies under the benchmark's temporary directory.

Usage (from the project root, with the project's venv)::

    python -m bench.continuation
    python -m bench.continuation --turns 10
    python -m bench.continuation --quick        # 3 turns: a smoke test only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.procs import check_leftovers
from bench.report import clip, print_environment, print_table
from bench.serve import Gateway, base_env
from ccgate.demo import DemoServer, RecordedRequest, ScriptedModel

DEFAULT_TURNS = 20
QUICK_TURNS = 3
DEFAULT_MODEL = "sonnet"
FILLER_CHARS = 200
SYSTEM_MESSAGE = "You are a concise assistant. Answer in one sentence."
RUN_TIMEOUT = 120.0
SESSION_HEADER = "x-claude-code-session-id"
FILLER_TEXT = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua ut enim ad minim veniam quis nostrud "
)

ON = "on"
OFF = "off"
MODES = (ON, OFF)


@dataclass(frozen=True)
class Turn:
    """What one client request caused upstream, and how long it took."""

    number: int
    latency: float | None
    text_chars: int
    json_chars: int
    requests: int
    cli_sessions: tuple[str, ...]
    shared_prefix: int
    previous_chars: int
    breakpoint_kept: bool | None
    markers: str
    system_messages: str
    reply: str = ""
    error: str | None = None


@dataclass
class Run:
    """One mode's conversation."""

    mode: str
    turns: list[Turn] = field(default_factory=list)
    stop: str = ""
    ccgate_sessions: set[str] = field(default_factory=set)

    def sessions_so_far(self, upto: int) -> int:
        """Return how many distinct CLI sessions turns 1..upto used."""
        seen: set[str] = set()
        for turn in self.turns[:upto]:
            seen.update(turn.cli_sessions)
        return len(seen)


# --------------------------------------------------------------------------- measuring


def text_chars(value: Any, key: str = "text") -> int:
    """Return the characters of every text string in a Messages API fragment.

    Counts ``text`` fields and string ``content`` (the shapes text takes in ``system``
    and ``messages``, tool results included); ids, roles, types, signatures and cache
    markers are not text.
    """
    if isinstance(value, str):
        return len(value) if key in ("text", "content") else 0
    if isinstance(value, list):
        return sum(text_chars(v, key) for v in value)
    if isinstance(value, dict):
        return sum(text_chars(v, k) for k, v in value.items())
    return 0


def normalised(value: Any) -> Any:
    """Return a copy of a JSON value without ``cache_control`` keys and with every string
    ``content`` spelled as one text block (the two spellings are the same prompt)."""
    if isinstance(value, list):
        return [normalised(v) for v in value]
    if isinstance(value, dict):
        out = {k: normalised(v) for k, v in value.items() if k != "cache_control"}
        if isinstance(out.get("content"), str):
            out["content"] = [{"type": "text", "text": out["content"]}]
        return out
    return value


def prompt_text(body: dict[str, Any]) -> str:
    """Serialise ``system`` then ``messages`` (normalised) for prefix comparison."""
    system = json.dumps(normalised(body.get("system")), ensure_ascii=False)
    messages = json.dumps(normalised(body.get("messages")), ensure_ascii=False)
    # Leave the closing bracket off so a conversation that only grew stays a prefix.
    return system + "\n" + messages[:-1]


def marker_positions(body: dict[str, Any]) -> str:
    """Describe where the ``cache_control`` markers sit: ``s<i>`` system, ``m<i>`` message."""
    found: list[str] = []
    system = body.get("system")
    if isinstance(system, list):
        for i, block in enumerate(system):
            if isinstance(block, dict) and "cache_control" in block:
                found.append(f"s{i}")
    for i, message in enumerate(body.get("messages") or []):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(
            isinstance(b, dict) and "cache_control" in b for b in content
        ):
            found.append(f"m{i}")
    return ",".join(found) or "-"


def system_message_positions(body: dict[str, Any]) -> str:
    """Describe the ``role: system`` messages the CLI put in ``messages``: ``m<i>(chars)``."""
    found: list[str] = []
    for i, message in enumerate(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "system":
            found.append(f"m{i}({text_chars(message.get('content'), 'content')})")
    return ",".join(found) or "-"


def breakpoint_kept(previous: dict[str, Any], current: dict[str, Any]) -> bool | None:
    """Tell whether the previous request's prompt, up to its last message-level
    ``cache_control`` marker, recurs unchanged at the start of the current request
    (``None`` when the previous request had no marker in ``messages``)."""
    old = normalised(previous.get("messages") or [])
    marked = [
        i
        for i, message in enumerate(previous.get("messages") or [])
        if isinstance(message, dict)
        and isinstance(message.get("content"), list)
        and any(isinstance(b, dict) and "cache_control" in b for b in message["content"])
    ]
    if not marked:
        return None
    end = marked[-1] + 1
    new = normalised(current.get("messages") or [])
    same_system = normalised(previous.get("system")) == normalised(current.get("system"))
    return bool(same_system and old[:end] == new[:end])


def common_prefix(a: str, b: str) -> int:
    """Return the length of the longest common prefix of two strings."""
    return len(os.path.commonprefix([a, b]))


def filler(turn: int) -> str:
    """Return the deterministic 200-character filler of one user message."""
    offset = (turn * 17) % len(FILLER_TEXT)
    repeated = FILLER_TEXT * (FILLER_CHARS // len(FILLER_TEXT) + 2)
    return repeated[offset : offset + FILLER_CHARS].strip()


def user_messages(turns: int) -> list[str]:
    """Return the user messages both runs send."""
    return [f"turn {n}: {filler(n)}" for n in range(1, turns + 1)]


def chat(
    client: httpx.Client, url: str, model: str, history: list[dict[str, str]]
) -> tuple[str | None, float, str | None, str | None]:
    """Send one non-streamed chat completion; return (reply, seconds, ccgate session, error)."""
    start = time.perf_counter()
    try:
        response = client.post(
            f"{url}/v1/chat/completions",
            json={"model": model, "max_tokens": 256, "messages": history},
        )
    except httpx.HTTPError as exc:
        return None, time.perf_counter() - start, None, f"{type(exc).__name__}: {exc}"
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        return None, elapsed, None, f"HTTP {response.status_code}: {clip(response.text)}"
    try:
        reply = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return None, elapsed, None, f"bad response: {exc}: {clip(response.text)}"
    return str(reply or ""), elapsed, response.headers.get("x-session-id"), None


def run_conversation(
    mode: str,
    demo: DemoServer,
    root: Path,
    env: dict[str, str],
    messages: list[str],
    model: str,
) -> Run:
    """Start a gateway in ``mode``, play the conversation through it, stop it."""
    extra_env = {"CCGATE_SESSION_CONTINUATION": "false"} if mode == OFF else {}
    run = Run(mode)
    # Same-length names: the data dir's path appears in the CLI's environment message.
    gateway = Gateway(
        demo.url,
        root / f"data-{MODES.index(mode) + 1}",
        env,
        default_model=model,
        extra_env=extra_env,
    )
    try:
        with httpx.Client(timeout=httpx.Timeout(RUN_TIMEOUT), trust_env=False) as client:
            health = gateway.wait_healthy(client)
            print(
                f"[{mode}] ccgate {health.get('version', '?')} at {gateway.url} "
                f"(pid {gateway.proc.pid}), data dir {gateway.data_dir}",
                flush=True,
            )
            # One uncounted request in its own conversation: first-spawn costs land here.
            hello = [{"role": "user", "content": "hi"}]
            _, warm, _, error = chat(client, gateway.url, model, hello)
            print(f"[{mode}] warm-up request: {warm * 1000:.0f} ms {error or 'ok'}", flush=True)
            history: list[dict[str, str]] = [{"role": "system", "content": SYSTEM_MESSAGE}]
            previous: dict[str, Any] | None = None
            for number, text in enumerate(messages, 1):
                history.append({"role": "user", "content": text})
                before = len(demo.model.conversation_requests())
                reply, latency, ccgate_session, error = chat(client, gateway.url, model, history)
                caused = demo.model.conversation_requests()[before:]
                turn, previous = measure(number, latency, reply, error, caused, previous)
                run.turns.append(turn)
                if ccgate_session:
                    run.ccgate_sessions.add(ccgate_session)
                if reply is None:
                    print(f"[{mode}] turn {number} failed: {error}; conversation stopped")
                    break
                history.append({"role": "assistant", "content": reply})
            print(f"[{mode}] {len(run.turns)} turn(s) played", flush=True)
    finally:
        run.stop = gateway.stop()
    return run


def measure(
    number: int,
    latency: float,
    reply: str | None,
    error: str | None,
    caused: list[RecordedRequest],
    previous: dict[str, Any] | None,
) -> tuple[Turn, dict[str, Any] | None]:
    """Summarise the upstream requests of one turn; return it and its last request body."""
    bodies = [r.body for r in caused if isinstance(r.body, dict)]
    sessions = tuple(dict.fromkeys(r.headers.get(SESSION_HEADER, "?") for r in caused))
    chars = sum(text_chars(b.get("system")) + text_chars(b.get("messages"), "") for b in bodies)
    dumped = sum(
        len(
            json.dumps(
                {"system": b.get("system"), "messages": b.get("messages")},
                ensure_ascii=False,
                separators=(",", ":"),
            )
        )
        for b in bodies
    )
    current = prompt_text(bodies[-1]) if bodies else ""
    before = prompt_text(previous) if previous is not None else ""
    turn = Turn(
        number=number,
        latency=latency if error is None else None,
        text_chars=chars,
        json_chars=dumped,
        requests=len(bodies),
        cli_sessions=sessions,
        shared_prefix=common_prefix(before, current) if before and current else 0,
        previous_chars=len(before),
        breakpoint_kept=breakpoint_kept(previous, bodies[-1]) if previous and bodies else None,
        markers=marker_positions(bodies[-1]) if bodies else "-",
        system_messages=system_message_positions(bodies[-1]) if bodies else "-",
        reply=reply or "",
        error=error,
    )
    return turn, bodies[-1] if bodies else None


# --------------------------------------------------------------------------- report


def continuity(run: Run, index: int) -> str:
    """Say whether turn ``index`` (0-based) reused the previous turn's CLI session."""
    turn = run.turns[index]
    if not turn.cli_sessions:
        return "-"
    if index == 0:
        return "new"
    before = set(run.turns[index - 1].cli_sessions)
    return "resumed" if set(turn.cli_sessions) & before else "rebuilt"


def cell(turn: Turn | None, what: str, index: int) -> str:
    """Format one table cell of turn ``index`` (0-based): chars, prefix or ms."""
    if turn is None:
        return "-"
    if what == "chars":
        return str(turn.text_chars)
    if what == "prefix":
        return f"{turn.shared_prefix}/{turn.previous_chars}" if index else "-"
    if what == "marker":
        return {True: "yes", False: "no", None: "-"}[turn.breakpoint_kept]
    return f"{turn.latency * 1000:.0f}" if turn.latency is not None else "fail"


def print_turns(runs: dict[str, Run]) -> None:
    """Print the per-turn comparison and the totals."""
    head = [
        "turn",
        "chars on",
        "chars off",
        "req on/off",
        "sessions on",
        "sessions off",
        "on",
        "off",
        "prefix on",
        "prefix off",
        "mk on",
        "mk off",
        "ms on",
        "ms off",
    ]
    rows: list[list[str]] = []
    count = max(len(r.turns) for r in runs.values())
    for i in range(count):
        on = runs[ON].turns[i] if i < len(runs[ON].turns) else None
        off = runs[OFF].turns[i] if i < len(runs[OFF].turns) else None

        rows.append(
            [
                str(i + 1),
                cell(on, "chars", i),
                cell(off, "chars", i),
                f"{on.requests if on else '-'}/{off.requests if off else '-'}",
                str(runs[ON].sessions_so_far(i + 1)) if on else "-",
                str(runs[OFF].sessions_so_far(i + 1)) if off else "-",
                continuity(runs[ON], i) if on else "-",
                continuity(runs[OFF], i) if off else "-",
                cell(on, "prefix", i),
                cell(off, "prefix", i),
                cell(on, "marker", i),
                cell(off, "marker", i),
                cell(on, "ms", i),
                cell(off, "ms", i),
            ]
        )
    print_table(head, rows)


@dataclass(frozen=True)
class Totals:
    """One mode's figures over the whole conversation."""

    text_chars: int
    json_chars: int
    requests: int
    cli_sessions: int
    resumed: int
    median_ms: float | None
    shared: int
    previous: int
    markers: str
    system_messages: str
    kept: int
    kept_of: int

    @property
    def reuse(self) -> float:
        """Return the share (%) of previous requests that recurred as the next prefix."""
        return 100.0 * self.shared / self.previous if self.previous else 0.0


def totals_of(run: Run) -> Totals:
    """Sum up one mode's turns."""
    latencies = [t.latency for t in run.turns if t.latency is not None]
    last = run.turns[-1]
    return Totals(
        text_chars=sum(t.text_chars for t in run.turns),
        json_chars=sum(t.json_chars for t in run.turns),
        requests=sum(t.requests for t in run.turns),
        cli_sessions=run.sessions_so_far(len(run.turns)),
        resumed=sum(continuity(run, i) == "resumed" for i in range(len(run.turns))),
        median_ms=statistics.median(latencies) * 1000.0 if latencies else None,
        shared=sum(t.shared_prefix for t in run.turns[1:]),
        previous=sum(t.previous_chars for t in run.turns[1:]),
        markers=last.markers,
        system_messages=last.system_messages,
        kept=sum(t.breakpoint_kept is True for t in run.turns),
        kept_of=sum(t.breakpoint_kept is not None for t in run.turns),
    )


def ms(value: float | None) -> str:
    """Format milliseconds."""
    return f"{value:.0f} ms" if value is not None else "-"


def reading(runs: dict[str, Run], on: Totals, off: Totals) -> str:
    """Return a paragraph that reads the measured figures (every number is measured)."""
    ratio = off.text_chars / on.text_chars if on.text_chars else float("nan")
    later = len(runs[ON].turns) - 1
    first, last = runs[ON].turns[0], runs[ON].turns[-1]
    parts = [
        f"Upstream input was {on.text_chars} text characters with continuation and "
        f"{off.text_chars} without (off/on {ratio:.3f}).",
    ]
    if abs(ratio - 1.0) < 0.02:
        parts.append(
            "That is the same amount: the Messages API is stateless, so the CLI sends the "
            "whole conversation upstream on every turn whether it resumed its session or "
            "ccgate rebuilt the session from the client's history; continuation does not "
            "reduce what the model is sent."
        )
    else:
        parts.append(f"That is a {abs(ratio - 1.0) * 100:.1f}% difference.")
    parts.append(
        f"Per-turn input grows with the history in both modes ({first.text_chars} chars at "
        f"turn 1, {last.text_chars} at turn {last.number} with continuation), so the total "
        "grows roughly with the square of the number of turns."
    )
    parts.append(
        f"What continuation changes is the session: with it, {on.cli_sessions} CLI session(s) "
        f"served the conversation and {on.resumed} of {later} later turns resumed the previous "
        f"turn's session; without it, {off.cli_sessions} CLI session(s) and {off.resumed} "
        "resumed, i.e. ccgate wrote a fresh transcript from the client's history before each "
        "turn."
    )
    parts.append(
        f"It also changes the shape of the prompt: {on.reuse:.1f}% of each previous request "
        f"recurred verbatim as the start of the next one with continuation, {off.reuse:.1f}% "
        f"without. In the last request the CLI's own role=system message(s) sat at "
        f"{on.system_messages} with continuation and at {off.system_messages} without, and the "
        f"cache_control markers at {on.markers} and {off.markers} respectively (s = system "
        "block, m = message index)."
    )
    parts.append(
        "The prompt up to the previous request's last message-level marker recurred unchanged "
        f"on {on.kept} of {on.kept_of} turns with continuation and {off.kept} of {off.kept_of} "
        "without. A prompt cache that reuses a prefix ending at an earlier marker would find "
        "that entry only when it recurs; the scripted model has no cache, so this run measures "
        "prefix identity, not cache hits, tokens or cost."
    )
    parts.append(
        f"Median latency was {ms(on.median_ms)} with continuation and {ms(off.median_ms)} "
        "without, against a model that answers at once, so it reflects gateway and CLI work "
        f"(resume versus rebuild), not model time; it is one sample of {len(runs[ON].turns)} "
        "requests per mode, run one after the other, so rerun before reading much into the "
        "difference."
    )
    return textwrap.fill(" ".join(parts), width=96)


def print_report(runs: dict[str, Run], turns: int) -> None:
    """Print the table, totals, ratio, latencies, the stop/session facts and a reading."""
    print()
    print(
        "chars = characters of all text in system + messages of the conversation request(s)\n"
        "the turn caused upstream (text fields and string content; no JSON syntax, ids or\n"
        "markers). req = conversation requests the turn caused. sessions = distinct CLI\n"
        "sessions (x-claude-code-session-id) used up to that turn. on/off = this turn's CLI\n"
        "session vs the previous turn's. prefix = leading characters of the previous turn's\n"
        "request that recur verbatim at the start of this turn's request / the previous\n"
        "request's length (system + messages, cache_control removed). mk = whether the\n"
        "previous request's system and messages up to its last message-level cache_control\n"
        "marker recur unchanged at the start of this request. ms = client-side latency of\n"
        "the chat completion."
    )
    print()
    print_turns(runs)
    print()
    totals = {mode: totals_of(runs[mode]) for mode in MODES}
    for mode in MODES:
        run, tot = runs[mode], totals[mode]
        failed = sum(1 for t in run.turns if t.error)
        print(
            f"continuation {mode}: {len(run.turns)}/{turns} turns ({failed} failed), "
            f"{tot.requests} conversation requests, {tot.cli_sessions} CLI session(s), "
            f"{len(run.ccgate_sessions)} ccgate session key(s)"
        )
        print(
            f"  upstream chars: text {tot.text_chars}, json.dumps(system, messages) "
            f"{tot.json_chars}; median latency {ms(tot.median_ms)}"
        )
        print(
            f"  previous request recurring as prefix: {tot.shared}/{tot.previous} chars "
            f"({tot.reuse:.1f}%) over turns 2..{len(run.turns)}"
        )
        print(f"  prefix up to the previous request's last marker kept: {tot.kept}/{tot.kept_of}")
        print(
            f"  last request: cache_control at {tot.markers}; "
            f"role=system messages at {tot.system_messages}"
        )
        print(f"  server stop: {run.stop}")
    on, off = totals[ON], totals[OFF]
    print()
    ratio = f"{off.text_chars / on.text_chars:.3f}" if on.text_chars else "-"
    print(f"ratio off/on of upstream text chars: {ratio} ({off.text_chars} / {on.text_chars})")
    ratio_json = f"{off.json_chars / on.json_chars:.3f}" if on.json_chars else "-"
    print(f"ratio off/on of json.dumps chars:    {ratio_json} ({off.json_chars} / {on.json_chars})")
    print(f"median latency:                      on {ms(on.median_ms)}, off {ms(off.median_ms)}")
    print()
    print("reading")
    print(reading(runs, on, off))


def print_plan(args: argparse.Namespace) -> None:
    """Print what the numbers were measured on, and the conversation played."""
    print_environment(
        [
            (
                "conversation",
                f"{args.turns} turns, model {args.model!r}, a system message + "
                f"'turn N: <{FILLER_CHARS}-char filler>' user messages",
            )
        ]
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse and check the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.continuation",
        description="Upstream input per turn of a full-history chat: continuation on vs off.",
    )
    parser.add_argument(
        "--turns", type=int, default=DEFAULT_TURNS, help=f"turns (default {DEFAULT_TURNS})"
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name sent by the client")
    parser.add_argument(
        "--quick", action="store_true", help=f"a smoke test: {QUICK_TURNS} turns per mode"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.turns = QUICK_TURNS
    if args.turns < 2:
        parser.error("--turns must be at least 2")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run both conversations and print the report; return the exit code."""
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ccgate-bench-cont-")).resolve()
    runs: dict[str, Run] = {}
    messages = user_messages(args.turns)
    print_plan(args)
    try:
        demo = DemoServer(ScriptedModel()).start_in_thread()
        try:
            print(f"scripted model: {demo.url}")
            env = base_env()
            for mode in MODES:
                runs[mode] = run_conversation(mode, demo, root, env, messages, args.model)
        except RuntimeError as exc:
            print(f"continuation: benchmark could not run: {exc}", file=sys.stderr)
        finally:
            demo.stop()
        check_leftovers([root])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if len(runs) != len(MODES) or not all(r.turns for r in runs.values()):
        return 1
    print_report(runs, args.turns)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
