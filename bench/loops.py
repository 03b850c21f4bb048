"""Loops: the latency of a turn, the memory of a live loop, and how many loops run at once.

A loop (``/v1/loops``) is a long-lived agent that holds one Claude Code process while
it is active. This script drives real ``python -m ccgate serve`` subprocesses pointed
at the scripted model (``ccgate.demo``, in a thread of this process) and measures:

1. **Latency of a turn.** ``POST /v1/loops/{id}/messages`` is timed from sending the
   request to the ``started`` event, to the first ``assistant_delta`` and to ``done``,
   for three kinds of turn:

   * ``cold``    -- a new loop's first message: a CLI process has to start;
   * ``warm``    -- the next message of that loop: its process is running;
   * ``resumed`` -- a message to a loop whose process was released for being idle
     (a second gateway with ``CCGATE_LOOP_IDLE_TIMEOUT=--idle-timeout``; the script
     waits until its ``/health`` shows ``loops_active`` 0): a new process that
     resumes the loop's session. Its upstream request must carry the loop's first
     message (checked in what the scripted model recorded).

   Each of these is sent on a new connection (``Connection: close``). A second warm
   message per run goes over a kept-alive connection instead (``warm, keep-alive``), as
   a client with a connection pool sends it: the gap between the two warm rows is what
   TCP (Nagle's algorithm against delayed ACKs) adds on a reused connection, not the
   gateway's work. Runs alternate cold, warm, warm keep-alive, resumed; the cold run's
   loop is archived at the end of its run. One warm-up loop (two turns) comes first.

2. **Memory per live loop.** ``--memory-loops`` loops each get one message and then sit
   idle with their process alive. The CLI processes are found by scanning
   ``/proc/*/environ`` for a ``CLAUDE_CONFIG_DIR`` under the gateway's data dir; a
   loop's figure is the ``VmRSS`` (and ``Pss``, from ``smaps_rollup``) summed over its
   CLI process and all its descendants (the sandbox's ``socat`` proxy, any command
   running). The gateway's own RSS is read before the loops are made and once they
   are all alive.

3. **Loops active at once.** For K = 1, 2, 4, ... up to ``--max-loops``, K new loops
   each send one message at the same moment (K threads behind a barrier): K cold
   starts at once. When all K completed, the same K loops send a second message at
   once (K warm turns). A sampler reads the CLI processes' RSS, the gateway's RSS
   and ``MemAvailable`` every 0.25 s. The K loops are then archived and the script
   waits until their processes are gone. It stops at the first K where a turn fails
   or times out, when ``MemAvailable`` fell under ``--mem-margin-mb`` during a step,
   or when the next step's expected memory (K x the largest RSS per loop seen so far,
   plus a quarter) would not leave that margin. The gateway runs with
   ``CCGATE_MAX_CONCURRENT`` at least 64 (and ``--max-loops``), so no turn waits for a slot.

At the end every loop is archived, the gateways get SIGTERM, and ``/proc`` is scanned
for any CLI process left. The script reports; it never asserts on timings.

Usage (from the project root, with the project's venv)::

    python -m bench.loops                   # 10 runs, 8 loops for memory, K up to 32
    python -m bench.loops --runs 20 --max-loops 64
    python -m bench.loops --quick           # 3 runs, 2 loops, K up to 4: a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.procs import (
    check_leftovers,
    cli_version,
    cpu_seconds,
    mem_available_mb,
    mem_total_mb,
    proc_text,
    pss_kb,
    rss_kb,
)
from bench.report import clip, fmt_summary, print_environment, print_table, summary_ms
from bench.serve import Gateway, base_env
from ccgate.demo import DemoServer, ScriptedModel, last_user_text

DEFAULT_PROMPT = "benchmark ping [[demo: chunks=4]]"
RUNS = 10
QUICK_RUNS = 3
MEMORY_LOOPS = 8
QUICK_MEMORY_LOOPS = 2
MAX_LOOPS = 32
QUICK_MAX_LOOPS = 4
IDLE_TIMEOUT = 1.0
TURN_TIMEOUT = 120.0
MEM_MARGIN_MB = 4096
SAMPLE_EVERY = 0.25
#: Headroom on the memory expected for the next step (a starting CLI can peak above idle).
GROWTH = 1.25

COLD = "cold"
WARM = "warm"
KEEPALIVE = "warm, keep-alive"
RESUMED = "resumed"
KINDS = (COLD, WARM, KEEPALIVE, RESUMED)
#: What ``started.cold_start`` must say for each kind.
EXPECT_COLD = {COLD: True, WARM: False, KEEPALIVE: False, RESUMED: True}
#: Sent with every message that must not reuse a pooled connection.
CLOSE = {"connection": "close"}


# --------------------------------------------------------------------------- the API


@dataclass
class Turn:
    """One message's turn as the client saw it: seconds from the POST to each event."""

    started: float | None = None
    first_delta: float | None = None
    done: float | None = None
    cold_start: bool | None = None
    text: str = ""
    error: str | None = None
    #: The mark the message started with (``cold 3``...), looked for in the reply.
    label: str = ""

    @property
    def ok(self) -> bool:
        """Tell whether the turn ended with ``done``."""
        return self.error is None and self.done is not None


def send_message(
    client: httpx.Client,
    url: str,
    loop_id: str,
    content: str,
    *,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> Turn:
    """Send a message and read its SSE stream to the end; time ``started``, delta, ``done``."""
    turn = Turn()
    deadline = time.monotonic() + timeout
    start = time.perf_counter()
    try:
        with client.stream(
            "POST",
            f"{url}/v1/loops/{loop_id}/messages",
            json={"content": content},
            headers=headers,
            timeout=httpx.Timeout(timeout),
        ) as response:
            if response.status_code != 200:
                response.read()
                turn.error = f"HTTP {response.status_code}: {clip(response.text)}"
                return turn
            name = ""
            for line in response.iter_lines():
                if time.monotonic() > deadline:
                    turn.error = f"timed out after {timeout:g} s"
                    return turn
                if line.startswith("event:"):
                    name = line[6:].strip()
                    continue
                if not line.startswith("data:"):
                    continue
                now = time.perf_counter() - start
                data = json.loads(line[5:])
                if name == "started":
                    turn.started = now
                    turn.cold_start = bool(data.get("cold_start"))
                elif name == "assistant_delta":
                    if turn.first_delta is None:
                        turn.first_delta = now
                    turn.text += data.get("text", "")
                elif name == "done":
                    turn.done = now
                    return turn
                elif name in ("error", "interrupted"):
                    turn.error = f"{name}: {clip(json.dumps(data))}"
                    return turn
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        turn.error = f"{type(exc).__name__}: {clip(str(exc))}"
        return turn
    turn.error = "the stream ended without done"
    return turn


def create_loop(client: httpx.Client, url: str, title: str) -> str:
    """Make a loop; return its id."""
    response = client.post(f"{url}/v1/loops", json={"title": title})
    if response.status_code != 201:
        raise RuntimeError(f"POST /v1/loops: {response.status_code} {clip(response.text)}")
    loop_id: str = response.json()["id"]
    return loop_id


def archive(client: httpx.Client, url: str, loop_id: str) -> str | None:
    """Archive a loop (its process ends); return an error, or None."""
    try:
        response = client.delete(f"{url}/v1/loops/{loop_id}", timeout=60.0)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if response.status_code == 204 else f"HTTP {response.status_code}"


def health(client: httpx.Client, url: str) -> dict[str, Any]:
    """Return ``GET /health``."""
    body: dict[str, Any] = client.get(f"{url}/health", timeout=10.0).json()
    return body


def wait_health(
    client: httpx.Client, url: str, key: str, value: int, timeout: float
) -> float | None:
    """Poll ``/health`` until ``key`` equals ``value``; return the seconds waited, or None."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if health(client, url)[key] == value:
            return time.monotonic() - start
        time.sleep(0.05)
    return None


# --------------------------------------------------------------------------- /proc


def cli_trees(data_dir: Path) -> dict[int, list[int]]:
    """Return the CLI process trees of a gateway: root pid -> the root and its descendants.

    A root is a process whose ``CLAUDE_CONFIG_DIR`` lies under ``data_dir`` and whose
    parent's does not (the parent is the gateway); each loop's live process is one root.
    """
    prefix = str(data_dir)
    parents: dict[int, int] = {}
    matched: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = proc_text(f"/proc/{pid}/stat")
        if not stat:
            continue
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        for var in environ:
            if var.startswith(b"CLAUDE_CONFIG_DIR="):
                value = var.split(b"=", 1)[1].decode(errors="replace")
                if value == prefix or value.startswith(prefix + os.sep):
                    matched.add(pid)
                break
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    trees: dict[int, list[int]] = {}
    for root in sorted(p for p in matched if parents.get(p) not in matched):
        tree, todo = [], [root]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, []))
        trees[root] = tree
    return trees


def loop_of(pid: int) -> str:
    """Return the loop a CLI process works for (its cwd is ``.../<loop id>/workspace``)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")).parent.name
    except OSError:
        return "?"


@dataclass
class TreeMemory:
    """One loop's CLI process tree: its processes, their RSS, PSS, RssAnon (KiB), CPU (s)."""

    loop_id: str
    processes: int
    rss_kb: int
    pss_kb: int
    anon_kb: int
    cpu_s: float


def tree_memory(data_dir: Path) -> list[TreeMemory]:
    """Measure every CLI process tree of a gateway."""
    return [
        TreeMemory(
            loop_of(root),
            len(pids),
            sum(rss_kb(p) for p in pids),
            sum(pss_kb(p) for p in pids),
            sum(rss_kb(p, "RssAnon") for p in pids),
            sum(cpu_seconds(p, children=True) or 0.0 for p in pids),
        )
        for root, pids in cli_trees(data_dir).items()
    ]


class Sampler:
    """Reads the CLI trees' RSS, the gateway's RSS and MemAvailable until stopped; keeps peaks."""

    def __init__(self, data_dir: Path, gateway_pid: int, interval: float = SAMPLE_EVERY) -> None:
        self.data_dir = data_dir
        self.gateway_pid = gateway_pid
        self.interval = interval
        self.cli_rss_kb = 0
        self.cli_processes = 0
        self.cli_trees = 0
        self.gateway_rss_kb = 0
        self.min_available_mb = mem_available_mb()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def sample(self) -> None:
        """Take one sample."""
        trees = cli_trees(self.data_dir)
        pids = [p for tree in trees.values() for p in tree]
        self.cli_rss_kb = max(self.cli_rss_kb, sum(rss_kb(p) for p in pids))
        self.cli_processes = max(self.cli_processes, len(pids))
        self.cli_trees = max(self.cli_trees, len(trees))
        self.gateway_rss_kb = max(self.gateway_rss_kb, rss_kb(self.gateway_pid))
        self.min_available_mb = min(self.min_available_mb, mem_available_mb())
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()


# --------------------------------------------------------------------------- statistics


def ms_cells(seconds: list[float | None]) -> list[str]:
    """Return median, p90 and min of the known ``seconds``, in ms, as table cells."""
    return fmt_summary(summary_ms([v for v in seconds if v is not None]))


def mb(kib: float) -> str:
    """Format KiB as MiB."""
    return f"{kib / 1024:.0f}"


# --------------------------------------------------------------------------- the bench


@dataclass
class Latency:
    """Section 1: the turns of every kind, and the resumed turns' history check."""

    turns: dict[str, list[Turn]] = field(default_factory=lambda: {k: [] for k in KINDS})
    resumed_with_history: int = 0
    release_waits: list[float] = field(default_factory=list)


@dataclass
class Memory:
    """Section 2: the idle loops' process trees and the gateway's RSS around them."""

    loops: int
    trees: list[TreeMemory]
    gateway_before_kb: int
    gateway_after_kb: int
    available_before_mb: float
    available_after_mb: float
    archive_s: float
    errors: list[str]


@dataclass
class Step:
    """Section 3: one K of the concurrency ladder."""

    k: int
    cold: list[Turn]
    cold_wall: float
    warm: list[Turn]
    warm_wall: float
    sampler: Sampler
    archive_s: float

    @property
    def complete(self) -> bool:
        """Tell whether every turn of the step ended with ``done``."""
        turns = self.cold + self.warm
        return len(turns) == 2 * self.k and all(t.ok for t in turns)


class Bench:
    """Everything the sections share: the model, the gateways, the clients, the options."""

    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.root = root
        self.model = ScriptedModel()
        self.demo: DemoServer | None = None
        self.main: Gateway | None = None
        self.resume: Gateway | None = None
        self.http = httpx.Client(
            timeout=httpx.Timeout(30.0),
            trust_env=False,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
        )
        #: Loops not archived yet, per gateway url.
        self.open_loops: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the scripted model and the two gateways."""
        self.demo = DemoServer(self.model).start_in_thread()
        env = base_env()
        slots = str(min(256, max(64, self.args.max_loops)))
        self.main = Gateway(
            self.demo.url,
            self.root / "main",
            env,
            extra_env={"CCGATE_MAX_CONCURRENT": slots, "CCGATE_MAX_QUEUE": slots},
        )
        self.resume = Gateway(
            self.demo.url,
            self.root / "resume",
            env,
            extra_env={"CCGATE_LOOP_IDLE_TIMEOUT": f"{self.args.idle_timeout:g}"},
        )
        self.main.wait_healthy(self.http)
        self.resume.wait_healthy(self.http)

    def stop(self) -> None:
        """Archive every loop still open, stop the gateways and the model."""
        for gateway in (self.main, self.resume):
            if gateway is None:
                continue
            left = sorted(self.open_loops.get(gateway.url, set()))
            errors = [e for e in self.archive_all(gateway, left) if e]
            if left:
                print(f"  archived {len(left)} loop(s) left on {gateway.url}; errors: {errors}")
        for name, gateway in (("main", self.main), ("resume", self.resume)):
            if gateway is not None:
                print(f"  {name} gateway stop: {gateway.stop()}")
        if self.demo is not None:
            self.demo.stop()
        self.http.close()

    # -- loops --------------------------------------------------------------------------

    def new_loop(self, gateway: Gateway, title: str) -> str:
        """Make a loop and remember it until it is archived."""
        loop_id = create_loop(self.http, gateway.url, title)
        with self._lock:
            self.open_loops.setdefault(gateway.url, set()).add(loop_id)
        return loop_id

    def archive_all(self, gateway: Gateway, loop_ids: list[str]) -> list[str | None]:
        """Archive loops, eight at a time; return each one's error (None when it went well)."""

        def one(loop_id: str) -> str | None:
            error = archive(self.http, gateway.url, loop_id)
            if error is None:
                with self._lock:
                    self.open_loops.get(gateway.url, set()).discard(loop_id)
            return error

        if not loop_ids:
            return []
        with ThreadPoolExecutor(max_workers=min(8, len(loop_ids))) as pool:
            return list(pool.map(one, loop_ids))

    def send(self, gateway: Gateway, loop_id: str, label: str, *, keepalive: bool = False) -> Turn:
        """Send the prompt marked with ``label``, on a new connection (or a pooled one)."""
        turn = send_message(
            self.http,
            gateway.url,
            loop_id,
            f"{label}: {self.args.prompt}",
            timeout=self.args.turn_timeout,
            headers=None if keepalive else CLOSE,
        )
        turn.label = label
        return turn

    def wait_no_cli(self, gateway: Gateway, timeout: float) -> bool:
        """Wait until ``/health`` counts no CLI process and ``/proc`` shows none either."""
        deadline = time.monotonic() + timeout
        if wait_health(self.http, gateway.url, "cli_processes", 0, timeout) is None:
            return False
        while cli_trees(gateway.data_dir):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    # -- section 1 ----------------------------------------------------------------------

    def latency(self) -> Latency:
        """Time cold, warm, warm keep-alive and resumed turns, alternating."""
        assert self.main is not None and self.resume is not None
        main, resume = self.main, self.resume
        result = Latency()
        # Warm-up: one loop on each gateway (the first CLI start of a gateway is slower).
        warmup = self.new_loop(main, "warm-up")
        for label in ("warm-up 1", "warm-up 2"):
            _report_failure("warm-up", self.send(main, warmup, label))
        self.archive_all(main, [warmup])
        resumed = self.new_loop(resume, "resumed")
        seed = "resume seed"
        _report_failure("resume seed", self.send(resume, resumed, seed))
        for n in range(self.args.runs):
            loop_id = self.new_loop(main, f"latency {n}")
            result.turns[COLD].append(self.send(main, loop_id, f"cold {n}"))
            result.turns[WARM].append(self.send(main, loop_id, f"warm {n}"))
            health(self.http, main.url)  # the pooled connection carries traffic before the turn
            result.turns[KEEPALIVE].append(
                self.send(main, loop_id, f"keep-alive {n}", keepalive=True)
            )
            self.archive_all(main, [loop_id])
            waited = wait_health(
                self.http, resume.url, "loops_active", 0, self.args.idle_timeout + 30
            )
            if waited is None:
                result.turns[RESUMED].append(Turn(error="the loop's process was not released"))
                continue
            result.release_waits.append(waited)
            label = f"resumed {n}"
            turn = self.send(resume, resumed, label)
            result.turns[RESUMED].append(turn)
            if turn.ok and self._carried(label, seed):
                result.resumed_with_history += 1
            print(f"  latency run {n + 1}/{self.args.runs} done", flush=True)
        self.archive_all(resume, [resumed])
        return result

    def _carried(self, label: str, seed: str) -> bool:
        """Tell whether the upstream request of the turn ``label`` carried the seed message."""
        for request in reversed(self.model.conversation_requests()):
            if last_user_text(request.body).startswith(label + ":"):
                return seed in json.dumps(request.body.get("messages", []))
        return False

    # -- section 2 ----------------------------------------------------------------------

    def memory(self) -> Memory:
        """Make ``--memory-loops`` loops, one message each, and measure them idle."""
        assert self.main is not None
        main = self.main
        if not self.wait_no_cli(main, 30):
            print("  warning: the main gateway still has CLI processes before the memory section")
        gateway_before = rss_kb(main.proc.pid)
        available_before = mem_available_mb()
        loop_ids = [self.new_loop(main, f"memory {i}") for i in range(self.args.memory_loops)]
        errors: list[str] = []
        for i, loop_id in enumerate(loop_ids):
            turn = self.send(main, loop_id, f"memory {i}")
            if not turn.ok:
                errors.append(turn.error or "?")
        time.sleep(1.0)  # let the processes settle after their turn
        trees = tree_memory(main.data_dir)
        gateway_after = rss_kb(main.proc.pid)
        available_after = mem_available_mb()
        started = time.monotonic()
        errors += [e for e in self.archive_all(main, loop_ids) if e]
        archive_s = time.monotonic() - started
        if not self.wait_no_cli(main, 30):
            errors.append("CLI processes still alive 30 s after archiving")
        return Memory(
            len(loop_ids),
            trees,
            gateway_before,
            gateway_after,
            available_before,
            available_after,
            archive_s,
            errors,
        )

    # -- section 3 ----------------------------------------------------------------------

    def at_once(
        self, gateway: Gateway, loop_ids: list[str], label: str
    ) -> tuple[list[Turn], float]:
        """Send one message to every loop at the same moment; return the turns and wall time."""
        barrier = threading.Barrier(len(loop_ids) + 1)

        def one(i: int) -> Turn:
            barrier.wait()
            return self.send(gateway, loop_ids[i], f"{label} {i}")

        with ThreadPoolExecutor(max_workers=len(loop_ids)) as pool:
            futures = [pool.submit(one, i) for i in range(len(loop_ids))]
            barrier.wait()
            started = time.perf_counter()
            turns = [f.result() for f in futures]
            wall = time.perf_counter() - started
        return turns, wall

    def ladder(self, per_loop_kb: float) -> tuple[list[Step], str]:
        """Run K = 1, 2, 4, ... loops at once; return the steps and why the ladder stopped."""
        assert self.main is not None
        main = self.main
        margin = self.args.mem_margin_mb
        steps: list[Step] = []
        for k in ladder_ks(self.args.max_loops):
            available = mem_available_mb()
            need = k * per_loop_kb / 1024 * GROWTH
            if available - need < margin:
                return steps, (
                    f"K={k} would need ~{need:.0f} MB ({k} x {per_loop_kb / 1024:.0f} MB x "
                    f"{GROWTH:g}) of {available:.0f} MB available, leaving less than the "
                    f"{margin} MB margin"
                )
            loop_ids = [self.new_loop(main, f"at once {k}.{i}") for i in range(k)]
            warm: list[Turn] = []
            warm_wall = 0.0
            with Sampler(main.data_dir, main.proc.pid) as sampler:
                cold, cold_wall = self.at_once(main, loop_ids, f"K{k} cold")
                if all(t.ok for t in cold):
                    warm, warm_wall = self.at_once(main, loop_ids, f"K{k} warm")
            started = time.monotonic()
            errors = [e for e in self.archive_all(main, loop_ids) if e]
            archive_s = time.monotonic() - started
            step = Step(k, cold, cold_wall, warm, warm_wall, sampler, archive_s)
            steps.append(step)
            print(
                f"  K={k}: cold {sum(t.ok for t in cold)}/{k} in {cold_wall:.1f} s, "
                f"warm {sum(t.ok for t in warm)}/{k} in {warm_wall:.1f} s, "
                f"CLI RSS peak {mb(sampler.cli_rss_kb)} MB, archived in {archive_s:.1f} s",
                flush=True,
            )
            if not self.wait_no_cli(main, 30):
                return steps, f"K={k}: CLI processes still alive 30 s after archiving"
            if errors:
                return steps, f"K={k}: archiving failed: {errors[:3]}"
            if not step.complete:
                failed = [t for t in cold + warm if not t.ok]
                first = failed[0].error if failed else "warm round not run"
                return steps, f"K={k}: {len(failed)} turn(s) failed; first: {clip(first or '')}"
            if sampler.min_available_mb < margin:
                return steps, (
                    f"K={k}: MemAvailable fell to {sampler.min_available_mb:.0f} MB, "
                    f"under the {margin} MB margin"
                )
            per_loop_kb = max(per_loop_kb, sampler.cli_rss_kb / k)
        return steps, f"reached --max-loops {self.args.max_loops}"


def ladder_ks(max_loops: int) -> list[int]:
    """Return 1, 2, 4, ... below ``max_loops``, then ``max_loops`` itself."""
    ks, k = [], 1
    while k < max_loops:
        ks.append(k)
        k *= 2
    return [*ks, max_loops]


def _report_failure(what: str, turn: Turn) -> None:
    if not turn.ok:
        print(f"  {what} failed: {turn.error}")


# --------------------------------------------------------------------------- report


def print_plan(args: argparse.Namespace, bench: Bench) -> None:
    """Print what the numbers were measured on, and the plan."""
    assert bench.main is not None and bench.resume is not None
    sandbox = ", ".join(
        f"{n} {'yes' if shutil.which(n) else 'MISSING'}" for n in ("bwrap", "socat")
    )
    slots = min(256, max(64, args.max_loops))
    print_environment(
        [
            ("claude CLI", cli_version()),
            ("memory", f"{mem_total_mb():.0f} MB total, {mem_available_mb():.0f} MB available"),
            ("sandbox", sandbox),
            ("prompt", repr(args.prompt)),
            (
                "main gateway",
                f"{bench.main.url} (pid {bench.main.proc.pid}), CCGATE_MAX_CONCURRENT={slots}",
            ),
            (
                "resume gateway",
                f"{bench.resume.url} (pid {bench.resume.proc.pid}), "
                f"CCGATE_LOOP_IDLE_TIMEOUT={args.idle_timeout:g}",
            ),
            (
                "plan",
                f"{args.runs} latency runs, {args.memory_loops} loops for memory, "
                f"K up to {args.max_loops}, margin {args.mem_margin_mb} MB, "
                f"turn timeout {args.turn_timeout:g} s",
            ),
        ]
    )


def print_latency(result: Latency, runs: int) -> None:
    """Print section 1."""
    print(f"1. latency of a turn, ms from sending the message ({runs} runs per kind)")
    head = ["turn", "n", "fail", "started", "p90", "min", "1st delta", "p90", "min"]
    head += ["done", "p90", "min", "cold_start as expected"]
    rows = []
    for kind in KINDS:
        turns = result.turns[kind]
        good = [t for t in turns if t.ok]
        expected = sum(t.cold_start is EXPECT_COLD[kind] for t in good)
        rows.append(
            [
                kind,
                str(len(good)),
                str(len(turns) - len(good)),
                *ms_cells([t.started for t in good]),
                *fmt_summary(
                    summary_ms([t.first_delta for t in good if t.first_delta is not None])
                ),
                *ms_cells([t.done for t in good]),
                f"{expected}/{len(good)} ({str(EXPECT_COLD[kind]).lower()})",
            ]
        )
    print_table(head, rows)
    good_resumed = sum(t.ok for t in result.turns[RESUMED])
    print(
        f"resumed turns whose upstream request carried the loop's first message: "
        f"{result.resumed_with_history}/{good_resumed}"
    )
    if result.release_waits:
        print(
            "wait for the idle process to be released before a resumed turn: median "
            f"{statistics.median(result.release_waits) * 1000:.0f} ms"
        )
    good = [t for turns in result.turns.values() for t in turns if t.ok]
    echoed = sum(t.label + ":" in t.text for t in good)
    example = clip(good[0].text, 60) if good else "-"
    print(f"replies that echo their own message: {echoed}/{len(good)} (e.g. {example!r})")
    for kind in KINDS:
        failed = [t for t in result.turns[kind] if not t.ok]
        if failed:
            print(f"{kind}: {len(failed)} failed; first: {clip(failed[0].error or '')}")
    print()


def print_memory(result: Memory) -> None:
    """Print section 2."""
    trees = result.trees
    print(f"2. memory of live idle loops ({result.loops} loops, one message each)")
    if not trees:
        print("no CLI process found")
    else:
        rss = [t.rss_kb for t in trees]
        pss = [t.pss_kb for t in trees]
        anon = [t.anon_kb for t in trees]
        procs = sorted({t.processes for t in trees})
        distinct = len({t.loop_id for t in trees})
        head = ["per loop (MB)", "median", "min", "max", "total"]
        print_table(
            head,
            [
                ["RSS", mb(statistics.median(rss)), mb(min(rss)), mb(max(rss)), mb(sum(rss))],
                ["PSS", mb(statistics.median(pss)), mb(min(pss)), mb(max(pss)), mb(sum(pss))],
                [
                    "RssAnon",
                    mb(statistics.median(anon)),
                    mb(min(anon)),
                    mb(max(anon)),
                    mb(sum(anon)),
                ],
            ],
        )
        print(
            f"CLI process trees: {len(trees)} for {distinct} distinct loop(s); "
            f"processes per tree: {procs}"
        )
        cpu = [t.cpu_s for t in trees]
        print(
            f"CPU time used per loop's processes (start + one turn + ~1 s idle): median "
            f"{statistics.median(cpu):.2f} s, min {min(cpu):.2f} s, max {max(cpu):.2f} s"
        )
    grown = result.gateway_after_kb - result.gateway_before_kb
    print(
        f"gateway RSS: {mb(result.gateway_before_kb)} MB before, {mb(result.gateway_after_kb)} MB "
        f"with the loops alive (+{grown / 1024:.1f} MB, "
        f"{grown / max(1, result.loops):.0f} KB per loop)"
    )
    print(
        f"MemAvailable: {result.available_before_mb:.0f} MB before, "
        f"{result.available_after_mb:.0f} MB with the loops alive "
        f"(-{result.available_before_mb - result.available_after_mb:.0f} MB); "
        f"archiving all took {result.archive_s * 1000:.0f} ms"
    )
    if result.errors:
        print(f"errors: {[clip(e) for e in result.errors[:3]]}")
    print()


def print_ladder(steps: list[Step], reason: str, margin: int) -> None:
    """Print section 3."""
    print("3. loops active at once (K new loops send a message at the same moment, then again)")
    head = ["K", "cold ok", "wall s", "done med", "max", "warm ok", "wall s", "done med", "max"]
    head += ["CLI procs", "CLI RSS MB", "MB/loop", "gw RSS MB", "avail min MB"]
    rows = []
    for s in steps:
        cold = [t.done for t in s.cold if t.ok and t.done is not None]
        warm = [t.done for t in s.warm if t.ok and t.done is not None]
        rows.append(
            [
                str(s.k),
                f"{len(cold)}/{s.k}",
                f"{s.cold_wall:.1f}",
                fmt_summary(summary_ms(cold))[0],
                f"{max(cold) * 1000:.0f}" if cold else "-",
                f"{len(warm)}/{s.k}" if s.warm else "-",
                f"{s.warm_wall:.1f}" if s.warm else "-",
                fmt_summary(summary_ms(warm))[0],
                f"{max(warm) * 1000:.0f}" if warm else "-",
                str(s.sampler.cli_processes),
                mb(s.sampler.cli_rss_kb),
                mb(s.sampler.cli_rss_kb / s.k),
                mb(s.sampler.gateway_rss_kb),
                f"{s.sampler.min_available_mb:.0f}",
            ]
        )
    if rows:
        print_table(head, rows)
        print("(done: ms from the message to its done event; CLI/gw RSS and avail: peak/lowest)")
        good = [t for s in steps for t in s.cold + s.warm if t.ok]
        echoed = sum(t.label + ":" in t.text for t in good)
        print(f"replies that echo their own message: {echoed}/{len(good)}")
    held = max((s.k for s in steps if s.complete), default=0)
    print(f"stopped: {reason}")
    if not steps:
        print("most loops active at once: not measured (no step ran)")
        print()
        return
    more = (
        " (the ladder ended there; the machine may hold more)"
        if reason.startswith("reached")
        else ""
    )
    print(f"most loops active at once with every turn completed: {held}{more}")
    print(f"(memory margin kept: {margin} MB)")
    print()


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse and check the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.loops",
        description="Loops: turn latency (cold, warm, resumed), memory per live loop, and "
        "how many loops run at once.",
    )
    parser.add_argument("--runs", type=int, help=f"latency runs per kind (default {RUNS})")
    parser.add_argument(
        "--memory-loops",
        type=int,
        help=f"loops kept alive for the memory figure (default {MEMORY_LOOPS})",
    )
    parser.add_argument(
        "--max-loops", type=int, help=f"largest K of the concurrency ladder (default {MAX_LOOPS})"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke test: {QUICK_RUNS} runs, {QUICK_MEMORY_LOOPS} loops for memory, "
        f"K up to {QUICK_MAX_LOOPS}",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=IDLE_TIMEOUT,
        help=f"CCGATE_LOOP_IDLE_TIMEOUT of the resume gateway, seconds (default {IDLE_TIMEOUT:g})",
    )
    parser.add_argument(
        "--turn-timeout",
        type=float,
        default=TURN_TIMEOUT,
        help=f"a turn that has not ended after this many seconds fails (default {TURN_TIMEOUT:g})",
    )
    parser.add_argument(
        "--mem-margin-mb",
        type=int,
        default=MEM_MARGIN_MB,
        help=f"MemAvailable the ladder leaves untouched, MB (default {MEM_MARGIN_MB})",
    )
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="the message of every turn")
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = QUICK_RUNS if args.quick else RUNS
    if args.memory_loops is None:
        args.memory_loops = QUICK_MEMORY_LOOPS if args.quick else MEMORY_LOOPS
    if args.max_loops is None:
        args.max_loops = QUICK_MAX_LOOPS if args.quick else MAX_LOOPS
    for name in ("runs", "memory_loops", "max_loops"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_loops > 256:
        parser.error("--max-loops must be at most 256 (ccgate's max_concurrent limit)")
    if args.idle_timeout <= 0 or args.turn_timeout <= 0:
        parser.error("--idle-timeout and --turn-timeout must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the report; return the exit code."""
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ccgate-bench-loops-")).resolve()
    began = time.monotonic()
    bench = Bench(args, root)
    reports: list[Callable[[], None]] = []
    ok = False
    try:
        try:
            bench.start()
            print_plan(args, bench)
            print("latency ...", flush=True)
            latency = bench.latency()
            reports.append(lambda: print_latency(latency, args.runs))
            print("memory ...", flush=True)
            memory = bench.memory()
            reports.append(lambda: print_memory(memory))
            per_loop = max((t.rss_kb for t in memory.trees), default=300 * 1024)
            print("loops at once ...", flush=True)
            steps, reason = bench.ladder(per_loop)
            reports.append(lambda: print_ladder(steps, reason, args.mem_margin_mb))
            ok = True
        except (RuntimeError, httpx.HTTPError) as exc:
            print(f"loops: benchmark could not run: {exc}", file=sys.stderr)
        finally:
            bench.stop()
        check_leftovers([root])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    for report in reports:
        report()
    print(f"wall time of the benchmark: {time.monotonic() - began:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
