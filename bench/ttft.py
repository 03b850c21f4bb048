"""Time to first token and total time of a short streamed reply: ccgate vs a cold CLI and a relay.

Every variant talks to the same scripted model (``ccgate.demo``) on this machine, so
the figures isolate what starting Claude Code costs, what ccgate's warm processes
save, and what ccgate adds over merely forwarding bytes. Five variants, measured in one
run, interleaved round-robin so machine noise hits all of them alike:

(a) ``direct claude -p (cold)`` -- the CLI bundled with claude-agent-sdk, spawned per
    request with ``--output-format stream-json --include-partial-messages`` (what every
    process-per-request gateway pays). TTFT = spawn until the first ``text_delta`` line;
    total = spawn until the process exits.
(b) ``ccgate new conversation, pool on`` -- a streamed ``/v1/messages`` request that
    starts a new conversation with a system prompt the client always sends, against a
    ``python -m ccgate serve`` with its defaults: the pool has a process ready for that
    configuration.
(c) ``ccgate 2nd turn of a conversation`` -- the same server; a conversation's first
    turn is sent untimed, then its second turn is timed: it runs on the process the
    first turn kept warm (``session_keepalive``).
(d) ``ccgate new conversation, pool off`` -- as (b) against a second server started with
    ``--pool-max-processes 0``: every new conversation starts its CLI.
(r) ``pure relay (no CLI)`` -- the floor any HTTP gateway in front of this model pays: a
    minimal pass-through relay (:class:`Relay`, in this file) run as its own process,
    ``python -m bench.ttft --serve-relay <model url>``, on the same server stack as
    ccgate (uvicorn with its default asyncio loop and h11). It forwards the client's
    request (method, path, query, headers minus hop-by-hop ones and ``Host`` /
    ``Content-Length``, the body byte for byte) with an ``httpx.AsyncClient`` to the same
    scripted model the CLIs of this run call, and streams the upstream's status, headers
    and raw body back chunk by chunk as they arrive; it parses nothing. The client sends
    it the Anthropic Messages request (b) sends ccgate -- same user text, model name,
    system prompt, ``max_tokens`` and ``stream: true`` -- through the same function
    (:func:`run_messages`), so TTFT and total are measured on the same client code path.
    (The CLI behind ccgate sends the model its own, larger request for the same user text;
    the scripted model answers both alike: the same text in the same chunks.)

TTFT (b, c, d, r) = the first ``content_block_delta`` carrying a ``text_delta``; total =
``message_stop``. Warm-up runs of each variant come first and are not counted (they
also make (b)'s configuration hot). At the end the servers' ``/health`` pool figures
(hits, misses, evictions) are printed, then the table and the ratios of the medians of
(b), (c), (d) against (a) and against (r). The script reports; it never asserts on
timings and exits 0 once the benchmark ran.

``--upstream-delay S`` makes the scripted model wait S seconds before its first token in
every variant alike: the prompt gets a ``[[demo: stall=S]]`` directive, and the scripted
model sleeps S seconds after a stream's ``ping`` event, before the first content block.
With 0 (the default) the model answers at once and the ratios against (r) show the
gateway's overhead magnified; with a real model's time to first token (e.g. 0.5) they
show what a user would notice.

Usage (from the project root, with the project's venv)::

    python -m bench.ttft                # 15 counted runs per variant
    python -m bench.ttft --runs 30
    python -m bench.ttft --upstream-delay 0.5
    python -m bench.ttft --quick        # 3 runs, 1 warm-up: a smoke test, not a measurement
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from bench.procs import bundled_cli, check_leftovers, cli_version
from bench.report import clip, fmt_summary, print_environment, ratio, summary_ms
from bench.report import print_table as report_table
from bench.serve import REPO_ROOT, Gateway, ServerProcess, base_env, free_port
from ccgate.demo import DemoServer, ScriptedModel

if TYPE_CHECKING:
    from starlette.types import Message, Receive, Scope, Send

DEFAULT_PROMPT = "benchmark ping [[demo: chunks=4]]"
DEFAULT_MODEL = "sonnet"
#: The system prompt of the client whose configuration the pool learns.
SYSTEM = "You are a terse assistant used by a benchmark."
#: The system prompt of the conversations of variant (c).
SYSTEM_CONVERSATION = "You are a terse assistant in a conversation."
MIN_RUNS = 15
QUICK_RUNS = 3
RUN_TIMEOUT = 60.0

DIRECT = "(a) direct claude -p (cold)"
POOL = "(b) ccgate new conversation, pool on"
SECOND = "(c) ccgate 2nd turn of a conversation"
NO_POOL = "(d) ccgate new conversation, pool off"
RELAY = "(r) pure relay (no CLI)"
VARIANTS = (DIRECT, POOL, SECOND, NO_POOL, RELAY)

#: Hop-by-hop headers (RFC 9110 7.6.1): a relay does not forward them, either way.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
#: Request headers the relay's HTTP client sets itself for the upstream.
CLIENT_SET = frozenset({b"host", b"content-length"})


@dataclass(frozen=True)
class Sample:
    """One run: seconds to the first text token and to the end, or why it failed."""

    ttft: float | None
    total: float | None
    text: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Tell whether the run produced text and finished."""
        return self.error is None and self.ttft is not None and self.total is not None


@dataclass
class Results:
    """The counted samples of every variant."""

    samples: dict[str, list[Sample]] = field(default_factory=lambda: {v: [] for v in VARIANTS})

    def add(self, variant: str, sample: Sample) -> None:
        """Record one counted sample."""
        self.samples[variant].append(sample)


# --------------------------------------------------------------------------- helpers


def the_cli() -> Path:
    """Return the ``claude`` binary shipped inside the claude-agent-sdk wheel (or exit)."""
    cli = bundled_cli()
    if cli is None:
        raise SystemExit("ttft: no Claude Code CLI bundled with claude-agent-sdk in this Python")
    return cli


def sse_data(lines: Iterator[str]) -> Iterator[str]:
    """Yield the payload of every ``data:`` line of a server-sent event stream."""
    for line in lines:
        if line.startswith("data:"):
            yield line[5:].strip()


# --------------------------------------------------------------------------- ccgate side


def run_messages(
    client: httpx.Client,
    url: str,
    messages: list[dict[str, Any]],
    model: str,
    system: str,
) -> Sample:
    """Stream one Anthropic Messages request; time the first text delta and message_stop."""
    body = {
        "model": model,
        "max_tokens": 256,
        "stream": True,
        "system": system,
        "messages": messages,
    }
    headers = {"anthropic-version": "2023-06-01", "x-api-key": "unused"}
    ttft: float | None = None
    text: list[str] = []
    start = time.perf_counter()
    try:
        with client.stream("POST", f"{url}/v1/messages", json=body, headers=headers) as response:
            if response.status_code != 200:
                response.read()
                return Sample(None, None, error=f"HTTP {response.status_code}: {response.text}")
            for data in sse_data(response.iter_lines()):
                event = json.loads(data)
                kind = event.get("type")
                if kind == "content_block_delta" and event["delta"].get("type") == "text_delta":
                    if ttft is None:
                        ttft = time.perf_counter() - start
                    text.append(event["delta"].get("text", ""))
                elif kind == "message_stop":
                    return Sample(ttft, time.perf_counter() - start, "".join(text))
                elif kind == "error":
                    return Sample(None, None, error=f"stream error: {data}")
    except (httpx.HTTPError, json.JSONDecodeError, KeyError) as exc:
        return Sample(None, None, error=f"{type(exc).__name__}: {exc}")
    return Sample(ttft, None, "".join(text), error="stream ended without message_stop")


class Conversations:
    """Variant (c): each run opens a conversation untimed, then times its second turn."""

    def __init__(self, client: httpx.Client, url: str, prompt: str, model: str) -> None:
        self.client = client
        self.url = url
        self.prompt = prompt
        self.model = model
        self.count = 0

    def run(self) -> Sample:
        """Send a first turn (not timed), then the second turn (timed)."""
        self.count += 1
        first = [{"role": "user", "content": f"{self.prompt} conversation {self.count}"}]
        opened = run_messages(self.client, self.url, first, self.model, SYSTEM_CONVERSATION)
        if not opened.ok:
            return Sample(None, None, error=f"first turn: {opened.error}")
        history = [
            *first,
            {"role": "assistant", "content": opened.text},
            {"role": "user", "content": self.prompt},
        ]
        return run_messages(self.client, self.url, history, self.model, SYSTEM_CONVERSATION)


# --------------------------------------------------------------------------- direct side


class DirectCLI:
    """Spawns ``claude -p`` against the scripted model, one cold process per run."""

    def __init__(self, cli: Path, upstream_url: str, root: Path, env: dict[str, str]) -> None:
        self.cli = cli
        self.config_dir = root / "direct-config"
        self.cwd = root / "direct-cwd"
        self.config_dir.mkdir(mode=0o700)
        self.cwd.mkdir(mode=0o700)
        self.stderr_path = root / "direct-stderr.log"
        # The brief's variables, plus the ones ccgate also sets for its CLI processes
        # (no retries, no updater, no telemetry), so both sides start the CLI alike.
        self.env = {
            **env,
            "ANTHROPIC_BASE_URL": upstream_url,
            "ANTHROPIC_API_KEY": "x",
            "CLAUDE_CONFIG_DIR": str(self.config_dir),
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_MAX_RETRIES": "0",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
        }

    def argv(self, prompt: str, model: str) -> list[str]:
        """Return the command line of one run."""
        return [
            str(self.cli),
            "-p",
            prompt,
            "--output-format",
            "stream-json",
            "--verbose",
            "--include-partial-messages",
            "--tools",
            "",
            "--system-prompt",
            "",
            "--setting-sources",
            "",
            "--model",
            model,
        ]

    def run(self, prompt: str, model: str) -> Sample:
        """Spawn the CLI once; time the first text_delta line and the process exit."""
        ttft: float | None = None
        text: list[str] = []
        is_error = False
        with self.stderr_path.open("wb") as stderr:
            start = time.perf_counter()
            proc = subprocess.Popen(
                self.argv(prompt, model),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=self.cwd,
                env=self.env,
            )
            assert proc.stdout is not None  # stdout=PIPE was asked for
            try:
                for raw in proc.stdout:
                    try:
                        line = json.loads(raw)
                    except json.JSONDecodeError:
                        continue
                    if line.get("type") == "stream_event":
                        event = line.get("event") or {}
                        delta = event.get("delta") or {}
                        if (
                            event.get("type") == "content_block_delta"
                            and delta.get("type") == "text_delta"
                        ):
                            if ttft is None:
                                ttft = time.perf_counter() - start
                            text.append(delta.get("text", ""))
                    elif line.get("type") == "result":
                        is_error = bool(line.get("is_error"))
                code = proc.wait(timeout=RUN_TIMEOUT)
                total = time.perf_counter() - start
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                return Sample(ttft, None, "".join(text), error="timed out")
            finally:
                proc.stdout.close()
        if code != 0 or is_error:
            tail = self.stderr_path.read_text(errors="replace")[-400:]
            return Sample(ttft, total, "".join(text), error=f"exit {code}: {clip(tail)}")
        if ttft is None:
            return Sample(None, total, error="no text_delta in the output")
        return Sample(ttft, total, "".join(text))


# --------------------------------------------------------------------------- relay side


class Relay:
    """Variant (r): a minimal ASGI pass-through relay to ``upstream``; it parses nothing.

    Every request but ``GET /health`` (its readiness check, answered here) is forwarded:
    method, path and query, headers minus hop-by-hop ones (and ``Host`` and
    ``Content-Length``, which the HTTP client sets), the body as received. The upstream's
    status and headers (minus hop-by-hop ones) come back, then its raw body, each chunk
    sent on as soon as it arrives. An unreachable upstream is a bare 502.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(RUN_TIMEOUT), trust_env=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["method"] == "GET" and scope["path"] == "/health":
            await _respond(send, 200, b'{"status":"ok"}', b"application/json")
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        query = scope.get("query_string", b"").decode("latin-1")
        request = self.client.build_request(
            scope["method"],
            self.upstream + scope["path"] + (f"?{query}" if query else ""),
            headers=[
                (k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP | CLIENT_SET
            ],
            content=bytes(body),
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            await _respond(send, 502, f"relay: {exc!r}".encode(), b"text/plain")
            return
        try:
            headers = [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP]
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": headers}
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()


async def _respond(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    """Send a whole small response."""
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type)],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})


def serve_relay(upstream: str, port: int) -> int:
    """Run :class:`Relay` on 127.0.0.1:``port`` until SIGTERM (the ``--serve-relay`` mode).

    uvicorn as ccgate runs it (default loop and HTTP implementation, no proxy headers),
    without its own ``date`` and ``server`` headers: the upstream's are passed on.
    """
    import uvicorn

    uvicorn.run(
        Relay(upstream),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        proxy_headers=False,
        server_header=False,
        date_header=False,
    )
    return 0


class RelayProcess(ServerProcess):
    """The relay of variant (r) as a subprocess (its own interpreter, as ccgate has)."""

    def __init__(self, upstream_url: str, data_dir: Path, env: dict[str, str]) -> None:
        port = free_port()
        argv = [sys.executable, "-m", "bench.ttft", "--serve-relay", upstream_url]
        argv += ["--relay-port", str(port)]
        log_path = data_dir.parent / "relay.log"
        super().__init__(argv, port, data_dir, env, cwd=REPO_ROOT, log_path=log_path)


# --------------------------------------------------------------------------- report


def print_table(results: Results) -> None:
    """Print per-variant statistics and the ratios against the cold CLI and the relay."""
    head = ["variant", "n", "fail", "TTFT med", "p90", "min", "total med", "p90", "min"]
    rows: list[list[str]] = []
    medians: dict[str, tuple[float | None, float | None]] = {}
    for variant in VARIANTS:
        samples = results.samples[variant]
        good = [s for s in samples if s.ok]
        ttft = summary_ms([s.ttft for s in good if s.ttft is not None])
        total = summary_ms([s.total for s in good if s.total is not None])
        medians[variant] = (ttft[0] if ttft else None, total[0] if total else None)
        rows.append(
            [
                variant,
                str(len(good)),
                str(len(samples) - len(good)),
                *fmt_summary(ttft),
                *fmt_summary(total),
            ]
        )
    print("times in ms (n = counted successful runs)")
    report_table(head, rows)
    print()
    direct_ttft, direct_total = medians[DIRECT]
    for variant, name in ((POOL, "b/a"), (SECOND, "c/a"), (NO_POOL, "d/a")):
        med_ttft, med_total = medians[variant]
        print(
            f"ratio {name} {variant[4:] + ':':<36} median TTFT {ratio(med_ttft, direct_ttft)}   "
            f"median total {ratio(med_total, direct_total)}"
        )
    print()
    relay_ttft, relay_total = medians[RELAY]
    for variant, name in ((POOL, "b/r"), (SECOND, "c/r"), (NO_POOL, "d/r")):
        med_ttft, med_total = medians[variant]
        print(
            f"ratio {name} {variant[4:] + ':':<36} median TTFT {ratio(med_ttft, relay_ttft)} "
            f"({added(med_ttft, relay_ttft)})   "
            f"median total {ratio(med_total, relay_total)} ({added(med_total, relay_total)})"
        )


def added(a: float | None, b: float | None) -> str:
    """Format a - b (milliseconds) as ``+12 ms``, or ``-`` when either is missing."""
    return f"{a - b:+.0f} ms" if a is not None and b is not None else "-"


def print_failures(results: Results) -> None:
    """Print the first failure of each variant, if any."""
    for variant in VARIANTS:
        failed = [s for s in results.samples[variant] if not s.ok]
        if failed:
            print(f"{variant}: {len(failed)} failed run(s); first: {clip(failed[0].error or '')}")


def print_plan(health: dict[str, Any], args: argparse.Namespace) -> None:
    """Print what the numbers were measured on, and the plan."""
    print_environment(
        [
            ("claude CLI", cli_version()),
            ("prompt", f"{args.sent_prompt!r}, model {args.model!r}"),
            ("upstream delay", f"{args.upstream_delay:g} s before the first token (stall)"),
            ("runs", f"{args.runs} per variant, after {args.warmup} warm-up(s) of each"),
        ],
        ccgate_version=health.get("version"),
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse and check the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.ttft",
        description="TTFT and total time of a short streamed reply: ccgate's warm paths vs a "
        "cold claude -p and a pure relay.",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=None,
        help=f"counted runs per variant (default {MIN_RUNS}, minimum {MIN_RUNS} unless --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke test: allow fewer runs (default {QUICK_RUNS}) and 1 warm-up",
    )
    parser.add_argument("--warmup", type=int, default=None, help="warm-up runs of each variant")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="the user message")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name sent on both sides")
    parser.add_argument(
        "--upstream-delay",
        type=float,
        default=0.0,
        metavar="S",
        help="the scripted model waits S seconds before its first token, in every variant "
        "(a [[demo: stall=S]] directive in the prompt; default 0)",
    )
    parser.add_argument(
        "--serve-relay",
        metavar="UPSTREAM_URL",
        help="internal: only run the relay of variant (r), forwarding to UPSTREAM_URL",
    )
    parser.add_argument(
        "--relay-port", type=int, default=0, help="internal: the port of --serve-relay"
    )
    args = parser.parse_args(argv)
    if not math.isfinite(args.upstream_delay) or args.upstream_delay < 0:
        parser.error("--upstream-delay must be a non-negative number of seconds")
    args.sent_prompt = args.prompt
    if args.upstream_delay > 0:
        args.sent_prompt += f" [[demo: stall={args.upstream_delay:g}]]"
    if args.runs is None:
        args.runs = QUICK_RUNS if args.quick else MIN_RUNS
    if args.runs < 1 or (args.runs < MIN_RUNS and not args.quick):
        parser.error(f"--runs must be at least {MIN_RUNS} (or pass --quick for a smoke test)")
    if args.warmup is None:
        args.warmup = 1 if args.quick else 3
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    return args


def schedule(runs: int) -> list[str]:
    """Return the round-robin order, rotated each round so no variant always follows another."""
    order: list[str] = []
    for n in range(runs):
        shift = n % len(VARIANTS)
        order += [*VARIANTS[shift:], *VARIANTS[:shift]]
    return order


def pool_report(client: httpx.Client, name: str, gateway: Gateway) -> None:
    """Print a server's pool figures from ``/health``."""
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
        pool = client.get(f"{gateway.url}/health", timeout=10).json()["pool"]
        print(
            f"{name}: hits {pool['hits_pool']} from spares + {pool['hits_conversation']} warm "
            f"turns, misses {pool['misses']}, evictions {pool['evictions'] or 0}, idle now "
            f"{pool['spares']} spare(s) + {pool['warm_idle']} conversation(s), "
            f"{pool['idle_memory_mb']:.0f} MB"
        )


def benchmark(args: argparse.Namespace, root: Path) -> Results:
    """Start the model, the gateways and the relay; run warm-ups and counted runs; return them."""
    env = base_env()
    demo = DemoServer(ScriptedModel()).start_in_thread()
    servers: list[tuple[str, ServerProcess]] = []
    try:
        print(f"scripted model:   {demo.url}")
        direct = DirectCLI(the_cli(), demo.url, root, env)
        pooled = Gateway(demo.url, root / "pool-on", env, log_path=root / "pool-on.log")
        servers.append(("ccgate server", pooled))
        unpooled = Gateway(
            demo.url,
            root / "pool-off",
            env,
            extra_env={"CCGATE_POOL_MAX_PROCESSES": "0"},
            log_path=root / "pool-off.log",
        )
        servers.append(("ccgate server", unpooled))
        relay = RelayProcess(demo.url, root / "relay", env)
        servers.append(("relay", relay))
        with httpx.Client(timeout=httpx.Timeout(RUN_TIMEOUT), trust_env=False) as client:
            health = pooled.wait_healthy(client)
            unpooled.wait_healthy(client)
            relay.wait_healthy(client)
            print(f"ccgate servers:   {pooled.url} (pool on), {unpooled.url} (pool off)")
            print(f"pure relay:       {relay.url} -> {demo.url}")
            print()
            print_plan(health, args)
            counter = iter(range(1_000_000))

            def new_conversation(url: str) -> Sample:
                text = f"{args.sent_prompt} request {next(counter)}"
                return run_messages(
                    client, url, [{"role": "user", "content": text}], args.model, SYSTEM
                )

            conversations = Conversations(client, pooled.url, args.sent_prompt, args.model)
            runners: dict[str, Callable[[], Sample]] = {
                DIRECT: lambda: direct.run(args.sent_prompt, args.model),
                POOL: lambda: new_conversation(pooled.url),
                SECOND: conversations.run,
                NO_POOL: lambda: new_conversation(unpooled.url),
                RELAY: lambda: new_conversation(relay.url),
            }
            for _ in range(args.warmup):
                for variant in VARIANTS:
                    sample = runners[variant]()
                    if not sample.ok:
                        print(f"warm-up {variant} failed: {clip(sample.error or '')}")
            results = Results()
            order = schedule(args.runs)
            started = time.monotonic()
            for i, variant in enumerate(order, 1):
                results.add(variant, runners[variant]())
                if i % 12 == 0 or i == len(order):
                    print(f"  {i}/{len(order)} runs done", flush=True)
            print(f"measured in {time.monotonic() - started:.1f} s")
            print()
            texts = {s.text for v in VARIANTS for s in results.samples[v] if s.ok}
            print(
                f"reply texts seen: {len(texts)} distinct, e.g. {clip(min(texts, key=len), 80)!r}"
            )
            pool_report(client, "pool on ", pooled)
            pool_report(client, "pool off", unpooled)
            print()
            return results
    finally:
        for name, server in servers:
            print(f"{name} stop: {server.stop()}")
        demo.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the report; return the exit code."""
    args = parse_args(argv)
    if args.serve_relay:
        return serve_relay(args.serve_relay, args.relay_port)
    root = Path(tempfile.mkdtemp(prefix="ccgate-bench-")).resolve()
    results: Results | None = None
    try:
        try:
            results = benchmark(args, root)
        except RuntimeError as exc:
            print(f"ttft: benchmark could not run: {exc}", file=sys.stderr)
        check_leftovers([root])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if results is None:
        return 1
    print()
    print_table(results)
    print_failures(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
