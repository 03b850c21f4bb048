"""The console: what a first page load weighs, and whether the live feed keeps up.

Against ccgate's real app on the instant runner (``bench/instant_app.py``: every turn
answered at once, so ccgate's own work is what is measured), served by uvicorn in a
subprocess with ``auth_mode=none``:

1. **Page weight**: every console page and the files it loads (stylesheet, script, the
   chart library on the usage page), raw and gzip-compressed (level 6, as a proxy would
   send them), against the 200 KB budget of a first load.
2. **The live feed at a steady rate**: ``watchers`` browsers' worth of ``/console/feed``
   streams read while a load generator sends chat requests at ``rate`` per second for
   ``seconds``. Every request is two feed events (``running``, then how it ended); for each
   watcher it reports the events received against those expected, the lag from a request's
   answer to its ``ok`` row (p50, p99), and the server's resident memory before, after and
   after a second equal round (a feed that keeps up does not grow between rounds).

``--quick`` runs a short round at a low rate (a smoke test, figures not meaningful).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.instant_app import APP, uvicorn_argv
from bench.procs import check_servers, rss_kb
from bench.report import percentile, print_environment, print_table
from bench.serve import REPO_ROOT, ServerProcess, base_env, free_port

BUDGET_KB = 200
PAGES = ("/", "/console/usage", "/console/sessions", "/console/loops", "/console/settings")


@dataclass
class Watcher:
    """One feed stream's count of rows, and when each request's ``ok`` row came."""

    events: int = 0
    oks: dict[str, float] = field(default_factory=dict)
    ended: bool = False


def _start(data_dir: Path) -> ServerProcess:
    port = free_port()
    env = {
        **base_env(),
        "CCGATE_DATA_DIR": str(data_dir),
        "CCGATE_AUTH_MODE": "none",
        "CCGATE_MAX_CONCURRENT": "256",
        "CCGATE_MAX_QUEUE": "10000",
        "CCGATE_LOG_LEVEL": "warning",
    }
    argv = uvicorn_argv(port)
    return ServerProcess(argv, port, data_dir, env, cwd=REPO_ROOT)


def page_weight(client: httpx.Client, base: str) -> list[list[str]]:
    """Return a row per page: the page and what it loads, raw and compressed."""
    rows = []
    for path in PAGES:
        page = client.get(base + path)
        page.raise_for_status()
        assets = re.findall(r'(?:href|src)="(/console/static/[^"?]+)', page.text)
        raw = len(page.content)
        packed = len(gzip.compress(page.content, 6))
        for asset in dict.fromkeys(assets):
            body = client.get(base + asset).content
            raw += len(body)
            packed += len(gzip.compress(body, 6))
        verdict = "within" if packed <= BUDGET_KB * 1024 else "OVER"
        rows.append([path, str(len(assets)), f"{raw / 1024:.1f}", f"{packed / 1024:.1f}", verdict])
    return rows


async def _watch(base: str, cookies: httpx.Cookies, watcher: Watcher, stop: asyncio.Event) -> None:
    async with (
        httpx.AsyncClient(base_url=base, cookies=cookies, timeout=None) as client,
        client.stream("GET", "/console/feed") as stream,
    ):
        name = ""
        async for line in stream.aiter_lines():
            if stop.is_set():
                return
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name == "row":
                watcher.events += 1
                found = re.search(r'id="req-(r\d+)" class="(\w+)"', line)
                if found and found.group(2) == "done":
                    watcher.oks[found.group(1)] = time.monotonic()
            elif line == "" and name == "bye":
                watcher.ended = True
                return


async def feed_round(
    base: str, cookies: httpx.Cookies, watchers: int, rate: float, seconds: float
) -> tuple[list[Watcher], list[float], int]:
    """Run one round; return the watchers, the answer times and how many requests failed."""
    stop = asyncio.Event()
    found = [Watcher() for _ in range(watchers)]
    streams = [asyncio.create_task(_watch(base, cookies, w, stop)) for w in found]
    await asyncio.sleep(0.5)  # the streams are open
    answered: list[float] = []
    failed = 0
    body = {"model": "sonnet", "messages": [{"role": "user", "content": "feed"}]}
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:

        async def one() -> None:
            nonlocal failed
            response = await client.post("/v1/chat/completions", json=body)
            if response.status_code == 200:
                answered.append(time.monotonic())
            else:
                failed += 1

        sent: list[asyncio.Task[None]] = []
        start = time.monotonic()
        total = int(rate * seconds)
        for i in range(total):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent.append(asyncio.create_task(one()))
        await asyncio.gather(*sent)
    await asyncio.sleep(1.0)  # the last rows arrive
    stop.set()
    for task in streams:
        task.cancel()
    await asyncio.gather(*streams, return_exceptions=True)
    return found, answered, failed


def report_round(label: str, found: list[Watcher], answered: list[float], failed: int) -> None:
    expected = 2 * len(answered)
    print(f"{label}: {len(answered)} requests answered, {failed} failed")
    rows = []
    for i, watcher in enumerate(found):
        rows.append(
            [
                str(i + 1),
                str(watcher.events),
                str(expected),
                f"{100 * watcher.events / expected:.1f}%" if expected else "-",
                "dropped" if watcher.ended else "kept up",
            ]
        )
    print_table(["watcher", "rows", "expected", "received", "stream"], rows)


def lag(found: list[Watcher], answered: list[float]) -> None:
    """Print how long after the first answers the ``ok`` rows came (p50, p99)."""
    # The answers and the rows are matched by order: request N is row rN of the feed.
    gaps: list[float] = []
    for watcher in found:
        oks = sorted(watcher.oks.values())
        gaps.extend(max(0.0, ok - sent) for ok, sent in zip(oks, sorted(answered), strict=False))
    if not gaps:
        print("feed lag after the answer: no rows")
        return
    ms = [g * 1000 for g in gaps]
    print(
        f"feed lag after the answer (ms): p50 {percentile(ms, 50):.1f}, "
        f"p99 {percentile(ms, 99):.1f}, max {max(ms):.1f} ({len(ms)} rows)"
    )


async def run(watchers: int, rate: float, seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="ccgate-bench-console-") as root:
        server = _start(Path(root) / "data")
        try:
            with httpx.Client(timeout=30) as client:
                server.wait_healthy(client)
                client.get(server.url + "/")  # auth none: the first visit signs in
                print(f"page weight (KB, budget {BUDGET_KB} KB compressed for a first load)")
                print_table(
                    ["page", "assets", "raw KB", "gzip KB", "budget"],
                    page_weight(client, server.url),
                )
                cookies = client.cookies
            print()
            print(f"live feed: {watchers} watchers, {rate:g} requests/s for {seconds:g} s")
            memory = [rss_kb(server.proc.pid)]
            for n in (1, 2):
                found, answered, failed = await feed_round(
                    server.url, cookies, watchers, rate, seconds
                )
                report_round(f"round {n}", found, answered, failed)
                lag(found, answered)
                memory.append(rss_kb(server.proc.pid))
            print(
                "server memory (RSS MB): before "
                + ", then ".join(f"{kb / 1024:.1f}" for kb in memory)
                + f" (round 2 minus round 1: {(memory[2] - memory[1]) / 1024:+.1f} MB)"
            )
        finally:
            print("server stop: " + server.stop())
        check_servers(Path(root), APP)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--watchers", type=int, default=3)
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each round")
    args = parser.parse_args()
    if args.quick:
        args.watchers, args.rate, args.seconds = 2, 20.0, 2.0
    print("ccgate console: page weight and the live feed under load")
    print_environment()
    asyncio.run(run(args.watchers, args.rate, args.seconds))


if __name__ == "__main__":
    main()
