"""Helpers for tests: a real ccgate served from a thread, and checks for leftover CLIs."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ccgate.app import create_app
from ccgate.config import Settings


def cli_processes(data_dir: Path) -> list[int]:
    """Return pids of live Claude Code processes whose config dir is under ``data_dir``."""
    marker = f"CLAUDE_CONFIG_DIR={data_dir}".encode()
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            status = (entry / "status").read_text()
        except OSError:
            continue
        if "State:\tZ" in status:
            continue
        if any(var.startswith(marker) for var in environ.split(b"\0")):
            pids.append(int(entry.name))
    return pids


def wait_for_no_processes(data_dir: Path, within: float = 15.0) -> list[int]:
    """Wait (bounded) until no CLI process of ``data_dir`` is alive; return what is left."""
    deadline = time.monotonic() + within
    while True:
        left = cli_processes(data_dir)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def wait_until(predicate: Callable[[], bool], within: float = 15.0) -> bool:
    """Poll ``predicate`` until it holds or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@dataclass
class Exchange:
    """One HTTP request a gateway received, and the status it answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int | None = None


@dataclass
class Recorder:
    """ASGI middleware that records every HTTP request in front of a gateway."""

    exchanges: list[Exchange] = field(default_factory=list)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """Return ``app`` with every HTTP request recorded here."""

        async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            exchange = Exchange(scope["method"], scope["path"], headers, None)
            self.exchanges.append(exchange)
            chunks: list[bytes] = []

            async def receive_body() -> Message:
                message = await receive()
                if message["type"] == "http.request":
                    chunks.append(message.get("body", b""))
                    if not message.get("more_body"):
                        raw = b"".join(chunks)
                        try:
                            exchange.body = json.loads(raw) if raw else None
                        except ValueError:
                            exchange.body = raw
                return message

            async def send_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    exchange.status = message["status"]
                await send(message)

            await app(scope, receive_body, send_status)

        return recorded


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals alone (it runs in a thread of the test process)."""

    def install_signal_handlers(self) -> None:  # pragma: no cover - uvicorn API differs
        pass

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Gateway:
    """A real ccgate served by uvicorn from a thread."""

    url: str
    settings: Settings
    app: Any
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def state(self) -> Any:
        """Return the running app's state."""
        return self.app.state.ccgate

    def stop(self) -> None:
        """Shut the server down and wait for it."""
        self.server.should_exit = True
        self.thread.join(timeout=60)


def start_gateway(
    settings: Settings,
    runner: Any = None,
    environ: Mapping[str, str] | None = None,
    recorder: Recorder | None = None,
) -> Gateway:
    """Serve ``create_app(settings)`` on a free loopback port from a thread.

    ``environ`` is the environment the gateway runs in (default: this process's);
    ``recorder`` records every request the gateway receives.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(settings, runner=runner, environ=environ)
    served = recorder.wrap(app) if recorder is not None else app
    config = uvicorn.Config(served, log_config=None, lifespan="on", timeout_graceful_shutdown=5)
    server = _Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    if not wait_until(lambda: server.started, within=30):
        raise RuntimeError("ccgate did not start")
    return Gateway(f"http://127.0.0.1:{port}", settings, app, server, thread)
