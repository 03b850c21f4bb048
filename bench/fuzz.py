"""Send a few thousand hostile requests at every endpoint of a ccgate server; count the answers.

Usage::

    .venv/bin/python -m bench.fuzz            # instant runner, every case (~4,000 requests)
    .venv/bin/python -m bench.fuzz --quick    # one case in five
    .venv/bin/python -m bench.fuzz --demo     # ``ccgate serve --demo``: the real CLI answers

The server is a subprocess: by default ``bench/instant_app.py`` (ccgate's real app on
``ccgate.testing.ScriptedRunner``, which answers at once; loops still run the real CLI,
against a scripted model this script starts), with ``--demo`` a ``python -m ccgate serve
--demo``. Either runs with ``auth_mode=shared`` and an admin key, so the key checks are
fuzzed too.

The cases (``bench/fuzz_cases.py``) are generated, deterministically, from one valid request
per operation of the server's own ``/openapi.json`` (plus unknown routes): each JSON field set
to a hostile value
(lone UTF-16 surrogates, NUL, CR/LF, bidi marks, emoji, huge strings, huge or non-finite
numbers, every wrong JSON type, deep nesting), whole bodies that are not JSON objects, hostile
path and query parameters, session and key headers with bytes that are not valid in a header,
wrong methods, and malformed HTTP sent over a raw socket.

It prints the answers counted by status, then every request answered with a 5xx, dropped
(the connection closed without an answer, or a kept-alive connection reset under the next
request), answered in another protocol's error shape, or a 405 without ``Allow``;
``--log PATH`` writes every request and its answer as JSON lines. It never asserts: a
benchmark script, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from bench.fuzz_cases import (
    ADMIN,
    ADMIN_KEY,
    API_KEY,
    AUTH,
    Case,
    cases_for,
    header_cases,
    operations,
    raw_cases,
    unknown_route_cases,
)
from bench.instant_app import uvicorn_argv
from bench.procs import check_leftovers
from bench.report import clip
from bench.serve import ServerProcess, base_env, free_port
from ccgate.demo import DemoServer, ScriptedModel

READ_TIMEOUT = 60.0
#: Endpoints whose 200 answer never ends on its own: only the status is read.
ENDLESS = ("/events",)


# --------------------------------------------------------------------------- sending


@dataclass
class Outcome:
    """What one case got."""

    case: Case
    status: int | None  # None: dropped
    note: str = ""
    #: The connection the answer came on, and whether the server said it would close it.
    stream: object = None
    closing: bool = False


def expected_shape(path: str) -> str:
    """Return the error shape a path answers in."""
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith("/v1/loops"):
        return "loops"
    return "openai"


def shape_of(body: Any) -> str:
    """Return the error shape of a response body (or ``other``)."""
    if not isinstance(body, dict):
        return "other"
    error = body.get("error")
    if (
        body.get("type") == "error"
        and isinstance(error, dict)
        and {"type", "message"} <= set(error)
    ):
        return "anthropic"
    if isinstance(error, dict) and set(error) == {"type", "code", "message"}:
        return "loops"
    if isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}:
        return "openai"
    return "other"


async def send(client: httpx.AsyncClient, case: Case) -> Outcome:
    """Send one case over ``client`` (one kept-alive connection); read its answer to the end."""
    url = case.path
    if case.query:
        url += "?" + "&".join(
            f"{quote(k)}={quote(v.encode('utf-8', 'surrogatepass'))}" for k, v in case.query.items()
        )
    request = client.build_request(case.method, url, content=case.content, headers=case.headers)
    try:
        response = await client.send(request, stream=True)
    except httpx.LocalProtocolError as exc:
        return Outcome(case, -1, f"not sent: the client refused it ({exc})")
    except httpx.TransportError as exc:
        return Outcome(case, None, f"{type(exc).__name__}: {exc}")
    stream = response.extensions.get("network_stream")
    closing = response.headers.get("connection", "").lower() == "close"
    try:
        if response.status_code == 200 and case.path.endswith(ENDLESS):
            return Outcome(case, 200)
        await response.aread()
    except httpx.TransportError as exc:
        return Outcome(case, None, f"body cut: {type(exc).__name__}: {exc}")
    finally:
        await response.aclose()
    note = ""
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = None
        shape, expected = shape_of(body), expected_shape(case.path)
        if shape != expected:
            note = f"error shape {shape}, expected {expected}: {clip(response.text, 120)}"
    if response.status_code == 405 and "allow" not in response.headers:
        note = "405 without an Allow header"
    if response.status_code >= 500:
        note = clip(response.text, 200)
    return Outcome(case, response.status_code, note, stream, closing)


async def send_raw(port: int, case: Case) -> Outcome:
    """Write a raw request; then, unless the server said it would close, check keep-alive."""
    assert case.raw is not None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    except (OSError, TimeoutError) as exc:
        return Outcome(case, None, f"connect: {exc}")
    try:
        writer.write(case.raw)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        writer.close()
        return Outcome(case, None, f"no answer: {type(exc).__name__}")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    lower = head.lower()
    note = ""
    if b"connection: close" not in lower and status and b"content-length:" in lower:
        length = int(lower.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        try:
            await asyncio.wait_for(reader.readexactly(length), 10)
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            again = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if not again.startswith(b"HTTP/1.1 200"):
                note = "keep-alive: the next request got " + clip(again.decode("latin-1"), 40)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            note = "keep-alive: the connection was reset under the next request"
    writer.close()
    if note.startswith("keep-alive"):
        return Outcome(case, None, note)
    return Outcome(case, status, clip(head.decode("latin-1"), 80) if status >= 500 else "")


async def run(url: str, port: int, cases: list[Case], workers: int) -> list[Outcome]:
    """Send every case with ``workers`` clients, each holding one kept-alive connection."""
    queue: asyncio.Queue[Case] = asyncio.Queue()
    for case in cases:
        queue.put_nowait(case)
    outcomes: list[Outcome] = []
    lost: list[Outcome] = []
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def worker() -> None:
        previous: Outcome | None = None
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=READ_TIMEOUT) as client:
            while not queue.empty():
                case = queue.get_nowait()
                if case.raw is not None:
                    outcomes.append(await send_raw(port, case))
                    continue
                outcome = await send(client, case)
                if previous is not None and outcome.status is None:
                    outcome.note += f" (previous request on this connection: {previous.case.label})"
                elif (
                    previous is not None
                    and not previous.closing
                    and previous.stream is not None
                    and outcome.stream is not previous.stream
                    and previous.case.path.endswith(ENDLESS) is False
                ):
                    # The server closed a connection it had not said it would close.
                    lost.append(previous)
                outcomes.append(outcome)
                previous = outcome

    await asyncio.gather(*(worker() for _ in range(workers)))
    for outcome in lost:
        outcome.note = (
            "keep-alive: the server closed the connection after this answer "
            "without `Connection: close` " + outcome.note
        ).strip()
    return outcomes


# --------------------------------------------------------------------------- server


def start_server(root: Path, demo: bool, upstream: str | None) -> ServerProcess:
    """Start the server under test (instant runner, or ``ccgate serve --demo``)."""
    data_dir = root / "data"
    port = free_port()
    env = {
        **base_env(),
        "CCGATE_DATA_DIR": str(data_dir),
        "CCGATE_AUTH_MODE": "shared",
        "CCGATE_API_KEY": API_KEY,
        "CCGATE_ADMIN_KEY": ADMIN_KEY,
        "CCGATE_MAX_CONCURRENT": "8",
        "CCGATE_MAX_QUEUE": "256",
        "CCGATE_LOOP_IDLE_TIMEOUT": "5",
        "CCGATE_LOG_LEVEL": "warning",
        "CCGATE_UPSTREAM_RETRIES": "0",
    }
    if demo:
        argv = [sys.executable, "-m", "ccgate", "serve", "--demo", "--port", str(port)]
    else:
        env["CCGATE_UPSTREAM_URL"] = upstream or ""
        env["CCGATE_UPSTREAM_API_KEY"] = "fuzz"
        argv = uvicorn_argv(port)
    return ServerProcess(argv, port, data_dir, env, cwd=root)


def prepare(client: httpx.Client) -> dict[str, str]:
    """Make the objects the path parameters name: a loop, a session, an admin key."""
    loop = client.post("/v1/loops", json={"title": "fuzz"}, headers=AUTH).json()
    client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}]},
        headers={**AUTH, "x-session-id": "fuzz-session"},
    )
    key = client.post("/admin/keys", json={"name": "fuzz"}, headers=ADMIN).json()
    return {
        "loop_id": loop["id"],
        "key": "fuzz-session",
        "key_id": key["id"],
        "model_id": "sonnet",
        "choice_id": "choice_0",
    }


def _label(status: int | None) -> str:
    if status is None:
        return "dropped"
    return "not sent" if status < 0 else str(status)


def report(outcomes: list[Outcome], elapsed: float) -> None:
    """Print counts by status and every request that went wrong."""
    counts = collections.Counter(o.status for o in outcomes)
    print(f"\n{len(outcomes)} requests in {elapsed:.1f} s\n\nstatus  count")
    for status, count in sorted(counts.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
        print(f"{_label(status):>8}  {count}")
    bad = [o for o in outcomes if o.status is None or o.status >= 500]
    kept = [o for o in outcomes if o.note.startswith("keep-alive") and o not in bad]
    odd = [o for o in outcomes if o.status is not None and 0 <= o.status < 500 and o.note]
    odd = [o for o in odd if o not in kept]
    print(f"\n5xx or dropped: {len(bad)}")
    for o in bad:
        print(f"  [{_label(o.status)}] {o.case.label}: {o.note}")
    print(f"\nconnection closed after the answer (the next request on it would reset): {len(kept)}")
    for o in kept[:30]:
        print(f"  [{o.status}] {o.case.label}")
    print(f"\nother problems (wrong error shape, 405 without Allow): {len(odd)}")
    for o in odd[:60]:
        print(f"  [{o.status}] {o.case.label}: {o.note}")
    if len(odd) > 60:
        print(f"  ... and {len(odd) - 60} more")


def write_log(path: Path, outcomes: list[Outcome]) -> None:
    """Write one JSON line per case: what was sent (clipped) and what came back."""
    with path.open("w") as out:
        for o in outcomes:
            sent = o.case.raw if o.case.raw is not None else o.case.content or b""
            line = {
                "label": o.case.label,
                "method": o.case.method,
                "path": clip(o.case.path, 200),
                "query": {k: clip(v, 60) for k, v in o.case.query.items()},
                "sent": clip(sent.decode("utf-8", "backslashreplace"), 300),
                "status": _label(o.status),
                "note": o.note,
            }
            out.write(json.dumps(line) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run the fuzz; return 0 (it reports, it does not judge)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="send one case in five")
    parser.add_argument("--demo", action="store_true", help="fuzz `ccgate serve --demo`")
    parser.add_argument("--workers", type=int, default=4, help="concurrent connections")
    parser.add_argument("--log", type=Path, help="write every case and its answer here (JSONL)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ccgate-fuzz-") as tmp:
        root = Path(tmp)
        model = None if args.demo else DemoServer(ScriptedModel()).start_in_thread()
        server = start_server(root, args.demo, model.url if model else None)
        try:
            with httpx.Client(base_url=server.url, timeout=READ_TIMEOUT) as client:
                server.wait_healthy(client)
                ids = prepare(client)
                schema = client.get("/openapi.json", headers=AUTH).json()
            ops = operations(schema, ids)
            cases = [c for op in ops for c in cases_for(op)]
            cases += [*header_cases(), *raw_cases(ids), *unknown_route_cases()]
            if args.quick:
                cases = cases[::5]
            print(
                f"server: {'ccgate serve --demo' if args.demo else 'instant runner'}, "
                f"{len(ops)} operations, {len(cases)} cases, {args.workers} connections"
            )
            started = time.monotonic()
            outcomes = asyncio.run(run(server.url, server.port, cases, args.workers))
            report(outcomes, time.monotonic() - started)
            if args.log is not None:
                write_log(args.log, outcomes)
            crashes = server.log_tail().count("request_crashed")
            print(f"\nserver log: request_crashed in its last 2,000 characters: {crashes}")
        finally:
            print(f"server stop: {server.stop()}")
            if model is not None:
                model.stop()
            check_leftovers([root])
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
