"""What one Claude Code start costs, and which levers cut it.

ccgate starts a Claude Code process for every turn, so the start is paid on every request.
This script starts the CLI bundled with claude-agent-sdk through the SDK
(``ClaudeSDKClient``), one new process per run, against the scripted model
(``ccgate.demo``, served from this script's event loop), and times:

* ``connect`` -- ``await client.connect()``: the process start and the SDK's
  ``initialize`` handshake;
* ``TTFT`` -- from ``client.query(prompt)`` to the first ``stream_event`` that is a
  ``content_block_delta`` carrying a ``text_delta`` (``include_partial_messages=True``);
* ``total`` -- ``connect`` plus the query up to its ``ResultMessage``;
* ``close`` -- ``client.disconnect()`` (stdin closed until the process has exited); shown
  on its own, not part of ``total``.

Variants, each a change of one lever against the baseline:

* ``baseline`` -- ccgate's configuration: ``tools=[]``, ``setting_sources=[]``,
  ``strict_mcp_config=True``, no MCP server, a prepared config dir reused from run to
  run (a ``WorkerDirs`` slot, as a ccgate worker gets), an empty working directory, and
  ccgate's CLI environment (``cli_settings_env``: ``CLAUDE_CONFIG_DIR``,
  ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC``, ``DISABLE_AUTOUPDATER``,
  ``DISABLE_TELEMETRY``, ``CLAUDE_CODE_MAX_RETRIES=0``; plus ``ANTHROPIC_BASE_URL`` and a
  dummy ``ANTHROPIC_API_KEY``) on top of this process's environment.
* ``settings+memory`` -- ``setting_sources=None`` (the SDK default: the CLI loads user,
  project and local settings and memory), with a made-up ``settings.json`` (permission
  rules, env, ...; no hooks) in its config dir and a ~300-line ``CLAUDE.md`` in its cwd.
* ``sdk mcp server`` -- an in-process SDK MCP server with 3 tools (``create_sdk_mcp_server``),
  allowed as ``mcp__bench``, as ccgate offers a client's tools.
* ``fresh config dir`` -- a new, empty ``CLAUDE_CONFIG_DIR`` for every start.
* ``large env`` -- about 2000 extra variables of ~100 bytes each (~200 KB more environment).
* ``nonessential on`` -- without ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC`` (on an offline
  machine the CLI's calls to other hosts fail; what reached the scripted model is reported).
* ``built-in tools`` -- ``tools`` not given: the CLI's default tool set instead of none.

Runs go round-robin, one run of every variant per round, the order rotated by one each
round, so machine noise and any after-effect of the previous run hit all variants alike.
One warm-up round comes first and is not counted. Besides the times the script prints
the CLI's ``VmRSS`` and ``RssAnon`` (``/proc/<pid>/status``) right after ``connect``, and
what reached the scripted model per run: turn requests, side requests (the CLI's own,
e.g. a session title), other paths, and the size and tool count of the turn request.
It reports; it never asserts on timings and exits 0 once the benchmark ran.

Usage (from the project root, with the project's venv)::

    python -m bench.startup              # 15 counted runs per variant
    python -m bench.startup --runs 25
    python -m bench.startup --quick      # 3 runs: a smoke test, not a measurement
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from claude_agent_sdk import (
    ClaudeAgentOptions,
    ClaudeSDKClient,
    ResultMessage,
    StreamEvent,
    create_sdk_mcp_server,
    tool,
)

from bench.procs import check_leftovers, cli_version
from bench.report import Summary, clip, print_environment, print_table, ratio, summary_ms
from bench.serve import base_env
from ccgate.claude.environment import cli_environment
from ccgate.claude.process import RunnerConfig, cli_settings_env
from ccgate.claude.workdirs import WorkerDirs
from ccgate.demo import DemoServer, ScriptedModel
from ccgate.demo.model import is_side_request

DEFAULT_PROMPT = "startup ping [[demo: chunks=4]]"
DEFAULT_MODEL = "sonnet"
DEFAULT_RUNS = 15
QUICK_RUNS = 3
RUN_TIMEOUT = 60.0
PAD_VARS = 2000
PAD_BYTES = 100
MCP_SERVER = "bench"

BASELINE = "baseline"
SETTINGS = "settings+memory"
MCP = "sdk mcp server"
FRESH = "fresh config dir"
BIG_ENV = "large env"
TRAFFIC = "nonessential on"
TOOLS = "built-in tools"
VARIANTS = (BASELINE, SETTINGS, MCP, FRESH, BIG_ENV, TRAFFIC, TOOLS)


@dataclass
class Sample:
    """One run: seconds per phase, memory after connect, what reached the model, or an error."""

    connect: float | None = None
    ttft: float | None = None
    total: float | None = None
    close: float | None = None
    rss_kb: int | None = None
    rss_anon_kb: int | None = None
    turn_requests: int = 0
    side_requests: int = 0
    other_paths: list[str] = field(default_factory=list)
    turn_bytes: int = 0
    turn_tools: int = 0
    tool_names: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Tell whether the run connected, streamed text and finished."""
        return self.error is None and None not in (self.connect, self.ttft, self.total)


# --------------------------------------------------------------------------- fixtures


SETTINGS_JSON: dict[str, Any] = {
    "$schema": "https://json.schemastore.org/claude-code-settings.json",
    "permissions": {
        "allow": [
            "Bash(git status:*)",
            "Bash(git diff:*)",
            "Bash(git log:*)",
            "Bash(npm run test:*)",
            "Bash(npm run lint:*)",
            "Bash(pytest:*)",
            "Bash(ruff check:*)",
            "Bash(make:*)",
            "Read(~/.zshrc)",
            "WebFetch(domain:docs.python.org)",
            "WebFetch(domain:developer.mozilla.org)",
        ],
        "deny": [
            "Read(./.env)",
            "Read(./.env.*)",
            "Read(./secrets/**)",
            "Bash(curl:*)",
            "Bash(rm -rf:*)",
        ],
        "ask": ["Bash(git push:*)", "Bash(docker:*)"],
        "defaultMode": "default",
        "additionalDirectories": ["../shared-lib"],
    },
    "env": {
        "BASH_DEFAULT_TIMEOUT_MS": "120000",
        "MAX_THINKING_TOKENS": "0",
        "PROJECT_STAGE": "development",
    },
    "includeCoAuthoredBy": False,
    "cleanupPeriodDays": 30,
    "enableAllProjectMcpServers": False,
    "spinnerTipsEnabled": False,
}


def claude_md() -> str:
    """Return a made-up project memory of about 300 lines."""
    lines = [
        "# Acme Orders service",
        "",
        "Guidance for working in this repository. Read it before making changes.",
        "",
    ]
    areas = [
        "api",
        "billing",
        "catalog",
        "checkout",
        "inventory",
        "notifications",
        "orders",
        "payments",
        "reporting",
        "search",
        "shipping",
        "users",
    ]
    for i, area in enumerate(areas):
        lines += [f"## The `{area}` package", ""]
        lines += [
            f"- Code lives in `src/acme/{area}/`; tests in `tests/{area}/`, one file per module.",
            f"- Public functions of `{area}` are re-exported from `src/acme/{area}/__init__.py`.",
            "- Keep functions under 40 lines; split helpers out rather than nesting closures.",
            "- Every public function has a docstring that says what it returns and raises.",
            f"- Database access goes through `acme.{area}.repo`, never raw SQL in handlers.",
            "- Money is an integer number of cents; never a float.",
            "- Timestamps are timezone-aware UTC datetimes; convert at the edges only.",
            f"- Log with `logging.getLogger('acme.{area}')` and key=value pairs.",
            "- Errors that reach the API are subclasses of `acme.errors.AppError`.",
            f"- Feature flags for `{area}` are read once per request from `acme.flags`.",
            "- New endpoints need an OpenAPI example and a contract test.",
            "- Do not add dependencies without a note in `docs/dependencies.md`.",
            f"- Migrations touching `{area}` tables must be reversible and tested.",
            "- Run `make lint test` before proposing a change; both must pass.",
            f"- Owner: team-{area} (#{area}-dev on chat); page the on-call for outages.",
            "",
            "### Conventions",
            "",
            f"1. Module names are nouns (`{area}/ledger.py`), function names verbs.",
            "2. Prefer dataclasses with `frozen=True` for values passed between layers.",
            "3. Async code never blocks: wrap file and CPU work in `asyncio.to_thread`.",
            "4. Tests use the fixtures of `tests/conftest.py`; no network in unit tests.",
            f"5. Snapshot files for `{area}` live in `tests/{area}/snapshots/` (review diffs).",
            f"6. Benchmarks for hot paths of `{area}` go to `bench/{area}_*.py`.",
            "",
        ]
        if i % 3 == 0:
            lines += [
                "### Common commands",
                "",
                "```",
                f"make test PKG={area}",
                f"make bench PKG={area}",
                "```",
                "",
            ]
    lines += ["## Release", "", "- Tag `vX.Y.Z` on main; CI builds and publishes.", ""]
    return "\n".join(lines)


def _mcp_server() -> Any:
    """Return a new in-process MCP server with three tools (the model never calls them)."""

    @tool("get_weather", "Return the current weather for a city.", {"city": str})
    async def get_weather(args: dict[str, Any]) -> dict[str, Any]:
        return {"content": [{"type": "text", "text": f"sunny in {args['city']}"}]}

    @tool(
        "lookup_order",
        "Look an order up by its id and return its status.",
        {
            "type": "object",
            "properties": {
                "order_id": {"type": "string", "description": "the order id"},
                "verbose": {"type": "boolean"},
            },
            "required": ["order_id"],
        },
    )
    async def lookup_order(args: dict[str, Any]) -> dict[str, Any]:
        return {"content": [{"type": "text", "text": f"{args['order_id']}: shipped"}]}

    @tool("add_numbers", "Add two numbers.", {"a": float, "b": float})
    async def add_numbers(args: dict[str, Any]) -> dict[str, Any]:
        return {"content": [{"type": "text", "text": str(args["a"] + args["b"])}]}

    return create_sdk_mcp_server(MCP_SERVER, tools=[get_weather, lookup_order, add_numbers])


# --------------------------------------------------------------------------- variants


class Lab:
    """Builds each variant's options; owns its directories under ``root``."""

    def __init__(self, root: Path, upstream_url: str, model: str) -> None:
        self.root = root
        self.model = model
        self.dirs = {v: WorkerDirs(root / f"v{i}") for i, v in enumerate(VARIANTS)}
        self.neutral_cwd = root / "cwd"
        self.neutral_cwd.mkdir(mode=0o700)
        self.fresh = root / "fresh"
        self.fresh.mkdir(mode=0o700)
        self._fresh_count = 0
        self.project = root / "project"
        self.project.mkdir(mode=0o700)
        (self.project / "CLAUDE.md").write_text(claude_md())
        # Overrides on top of this process's environment (the SDK merges them over
        # os.environ): ccgate's variables blanked, loopback past any proxy, the model.
        self.common = {
            **cli_environment(os.environ, None),
            **{k: base_env()[k] for k in ("NO_PROXY", "no_proxy")},
            "ANTHROPIC_BASE_URL": upstream_url,
            "ANTHROPIC_API_KEY": "x",
        }
        self.cli_config = RunnerConfig(data_dir=root, upstream_url=upstream_url, upstream_retries=0)
        filler = "x" * (PAD_BYTES - len("BENCH_PAD_0000="))
        self.padding = {f"BENCH_PAD_{i:04d}": filler for i in range(PAD_VARS)}

    @contextlib.contextmanager
    def config_dir(self, variant: str) -> Any:
        """Yield the variant's ``CLAUDE_CONFIG_DIR``: a fresh one, or its reused slot."""
        if variant == FRESH:
            self._fresh_count += 1
            path = self.fresh / f"c{self._fresh_count}"
            path.mkdir(mode=0o700)
            yield path
            return
        with self.dirs[variant].lease() as slot:
            if variant == SETTINGS:
                (slot / "settings.json").write_text(json.dumps(SETTINGS_JSON, indent=2))
            yield slot

    def env(self, variant: str, config_dir: Path) -> dict[str, str]:
        """Return the variant's environment overrides."""
        env = {**self.common, **cli_settings_env(config_dir, self.cli_config)}
        if variant == TRAFFIC:
            del env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"]
            if "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC" in os.environ:
                env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = ""
        if variant == BIG_ENV:
            env.update(self.padding)
        return env

    def options(self, variant: str, config_dir: Path) -> ClaudeAgentOptions:
        """Return the variant's options: ccgate's, with the variant's lever changed."""
        options = ClaudeAgentOptions(
            tools=[],
            mcp_servers={},
            setting_sources=[],
            strict_mcp_config=True,
            model=self.model,
            cwd=str(self.neutral_cwd),
            env=self.env(variant, config_dir),
            include_partial_messages=True,
            max_buffer_size=64 * 1024 * 1024,
        )
        if variant == SETTINGS:
            options.setting_sources = None
            options.cwd = str(self.project)
        elif variant == MCP:
            options.mcp_servers = {MCP_SERVER: _mcp_server()}
            options.allowed_tools = [f"mcp__{MCP_SERVER}"]
        elif variant == TOOLS:
            options.tools = None
        return options

    def env_bytes(self, variant: str) -> int:
        """Return the size of the environment the CLI of ``variant`` starts with."""
        merged = {**os.environ, **self.env(variant, self.root)}
        return sum(len(k) + len(v) + 2 for k, v in merged.items())


# --------------------------------------------------------------------------- one run


def proc_status_kb(pid: int, name: str) -> int | None:
    """Return a ``/proc/<pid>/status`` field in KiB, or None."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return None


def is_text_delta(message: Any) -> bool:
    """Tell whether an SDK message is a stream event carrying a text delta."""
    if not isinstance(message, StreamEvent):
        return False
    event = message.event or {}
    return (
        event.get("type") == "content_block_delta"
        and (event.get("delta") or {}).get("type") == "text_delta"
    )


async def run_once(lab: Lab, model: ScriptedModel, variant: str, prompt: str) -> Sample:
    """Start one CLI of ``variant``, ask one question, stop it; return what was measured."""
    sample = Sample()
    mark = len(model.requests)
    with lab.config_dir(variant) as config_dir:
        options = lab.options(variant, config_dir)
        options.stderr = sample.stderr.append
        client = ClaudeSDKClient(options)
        pid: int | None = None
        finished = False
        try:
            async with asyncio.timeout(RUN_TIMEOUT):
                start = time.perf_counter()
                await client.connect()
                sample.connect = time.perf_counter() - start
                process = getattr(getattr(client, "_transport", None), "_process", None)
                pid = getattr(process, "pid", None)
                if isinstance(pid, int):
                    sample.rss_kb = proc_status_kb(pid, "VmRSS")
                    sample.rss_anon_kb = proc_status_kb(pid, "RssAnon")
                asked = time.perf_counter()
                await client.query(prompt)
                async for message in client.receive_response():
                    if sample.ttft is None and is_text_delta(message):
                        sample.ttft = time.perf_counter() - asked
                    elif isinstance(message, ResultMessage):
                        sample.total = sample.connect + (time.perf_counter() - asked)
                        if message.is_error:
                            sample.error = f"result is_error: {clip(str(message.result))}"
            finished = True
            if sample.ttft is None and sample.error is None:
                sample.error = "no text_delta stream event"
        except TimeoutError:
            sample.error = f"timed out after {RUN_TIMEOUT:g} s"
        except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised
            sample.error = f"{type(exc).__name__}: {clip(str(exc))}"
        finally:
            if not finished and isinstance(pid, int):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            closing = time.perf_counter()
            with contextlib.suppress(Exception):
                await client.disconnect()
            sample.close = time.perf_counter() - closing
    for request in model.requests[mark:]:
        if not request.is_model_request:
            sample.other_paths.append(f"{request.method} {request.path}")
        elif is_side_request(request.body):
            sample.side_requests += 1
        else:
            sample.turn_requests += 1
            sample.turn_bytes = len(json.dumps(request.body))
            tools = request.body.get("tools") or []
            sample.turn_tools = len(tools)
            sample.tool_names = [str(t.get("name")) for t in tools if isinstance(t, dict)]
    return sample


# --------------------------------------------------------------------------- report


def print_times(results: dict[str, list[Sample]]) -> None:
    """Print median / p90 of every phase, and the ratio of the medians to the baseline."""
    stats: dict[str, dict[str, Summary | None]] = {}
    for variant in VARIANTS:
        good = [s for s in results[variant] if s.ok]
        stats[variant] = {
            phase: summary_ms([getattr(s, phase) for s in good if getattr(s, phase) is not None])
            for phase in ("connect", "ttft", "total", "close")
        }
    head = ["variant", "n", "fail"]
    for phase in ("connect", "TTFT", "total"):
        head += [f"{phase} med", "p90", "x base"]
    head += ["close med"]
    rows: list[list[str]] = []
    for variant in VARIANTS:
        n_good = sum(s.ok for s in results[variant])
        row = [variant, str(n_good), str(len(results[variant]) - n_good)]
        for phase in ("connect", "ttft", "total"):
            mine, base = stats[variant][phase], stats[BASELINE][phase]
            if mine is None:
                row += ["-", "-", "-"]
            else:
                row += [f"{mine[0]:.0f}", f"{mine[1]:.0f}", ratio(mine[0], base and base[0])]
        close = stats[variant]["close"]
        row.append(f"{close[0]:.0f}" if close else "-")
        rows.append(row)
    print("times in ms (n = counted successful runs; x base = median / baseline median)")
    print_table(head, rows)
    print()


def median_of(values: list[int | None]) -> float | None:
    """Return the median of the known values, or None."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def print_memory_and_requests(lab: Lab, results: dict[str, list[Sample]]) -> None:
    """Print RSS after connect, and what reached the scripted model per run (medians)."""
    head = ["variant", "VmRSS MiB", "RssAnon MiB", "env KiB", "turn req", "side req"]
    head += ["other req", "turn body KiB", "tools sent"]
    rows: list[list[str]] = []
    for variant in VARIANTS:
        good = [s for s in results[variant] if s.ok]

        def med(get: Callable[[Sample], int | None], scale: float = 1.0) -> str:
            value = median_of([get(s) for s in good])  # noqa: B023 - used at once
            return "-" if value is None else f"{value / scale:.1f}".removesuffix(".0")

        rows.append(
            [
                variant,
                med(lambda s: s.rss_kb, 1024.0),
                med(lambda s: s.rss_anon_kb, 1024.0),
                f"{lab.env_bytes(variant) / 1024:.0f}",
                med(lambda s: s.turn_requests),
                med(lambda s: s.side_requests),
                med(lambda s: len(s.other_paths)),
                med(lambda s: s.turn_bytes, 1024.0),
                med(lambda s: s.turn_tools),
            ]
        )
    print("memory right after connect, and requests reaching the scripted model (medians per run)")
    print_table(head, rows)
    print()
    for variant in VARIANTS:
        paths = sorted({p for s in results[variant] for p in s.other_paths})
        if paths:
            print(f"{variant}: other requests seen: {', '.join(paths)}")
        names = sorted({n for s in results[variant] for n in s.tool_names})
        if names:
            print(f"{variant}: tools sent: {clip(', '.join(names), 160)}")


def print_failures_and_stderr(results: dict[str, list[Sample]]) -> None:
    """Print the first failure of each variant, and any stderr lines the CLIs wrote."""
    for variant in VARIANTS:
        failed = [s for s in results[variant] if not s.ok]
        if failed:
            print(f"{variant}: {len(failed)} failed run(s); first: {clip(failed[0].error or '')}")
    for variant in VARIANTS:
        lines = sorted({clip(line, 160) for s in results[variant] for line in s.stderr if line})
        if lines:
            print(f"{variant}: {len(lines)} distinct stderr line(s), e.g.:")
            for line in lines[:5]:
                print(f"  {line}")


def print_config_dirs(lab: Lab) -> None:
    """Print what the CLI leaves in a config dir: the baseline's slot and a fresh dir."""
    with lab.dirs[BASELINE].lease() as slot:
        entries = sorted(p.name for p in slot.iterdir())
    print(f"baseline config dir after the runs: {', '.join(entries) or '(empty)'}")
    first = lab.fresh / "c1"
    if first.is_dir():
        entries = sorted(p.name for p in first.iterdir())
        print(f"a fresh config dir after its run:   {', '.join(entries)}")


def print_plan(args: argparse.Namespace) -> None:
    """Print what the numbers were measured on, and the plan."""
    print_environment(
        [
            ("claude CLI", f"{cli_version()} (bundled)"),
            ("prompt", f"{args.prompt!r}, model {args.model!r}"),
            (
                "runs",
                f"{args.runs} per variant, round-robin, after {args.warmup} warm-up round(s)",
            ),
        ]
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse and check the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.startup",
        description="The cost of one Claude Code start, and the levers that cut it.",
    )
    parser.add_argument(
        "--runs", type=int, default=None, help=f"counted runs per variant (default {DEFAULT_RUNS})"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"smoke test: {QUICK_RUNS} runs per variant"
    )
    parser.add_argument("--warmup", type=int, default=1, help="warm-up rounds (default 1)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="the first query")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the model name the CLI is given")
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = QUICK_RUNS if args.quick else DEFAULT_RUNS
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    return args


async def benchmark(args: argparse.Namespace, root: Path) -> tuple[Lab, dict[str, list[Sample]]]:
    """Serve the scripted model, run the warm-up and the counted rounds; return the samples."""
    model = ScriptedModel()
    async with DemoServer(model) as server:
        print(f"scripted model:   {server.url}")
        print()
        print_plan(args)
        lab = Lab(root, server.url, args.model)
        for _ in range(args.warmup):
            for variant in VARIANTS:
                sample = await run_once(lab, model, variant, args.prompt)
                if not sample.ok:
                    print(f"warm-up {variant} failed: {clip(sample.error or '')}")
        results: dict[str, list[Sample]] = {v: [] for v in VARIANTS}
        started = time.monotonic()
        for round_no in range(args.runs):
            shift = round_no % len(VARIANTS)
            for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                results[variant].append(await run_once(lab, model, variant, args.prompt))
            print(f"  round {round_no + 1}/{args.runs} done", flush=True)
        print(f"measured in {time.monotonic() - started:.1f} s")
        print()
        return lab, results


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the report; return the exit code."""
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ccgate-bench-")).resolve()
    outcome: tuple[Lab, dict[str, list[Sample]]] | None = None
    try:
        try:
            outcome = asyncio.run(benchmark(args, root))
        except RuntimeError as exc:
            print(f"startup: benchmark could not run: {exc}", file=sys.stderr)
        if outcome is not None:
            lab, results = outcome
            print_times(results)
            print_memory_and_requests(lab, results)
            print_failures_and_stderr(results)
            print_config_dirs(lab)
            print()
        check_leftovers([root])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if outcome is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
