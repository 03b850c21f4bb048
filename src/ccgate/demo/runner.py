"""Run the demo app with uvicorn on 127.0.0.1, in the current event loop or in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Generator
from types import TracebackType

import uvicorn

from ccgate.demo.model import ScriptedModel
from ccgate.demo.server import create_demo_app

__all__ = ["DemoServer"]

_START_TIMEOUT = 10.0


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Install no signal handlers: the embedding test or program owns them."""
        yield


class DemoServer:
    """Serve a ``ScriptedModel`` over HTTP on a free (or given) local port.

    Use ``async with DemoServer(model) as srv`` inside a running loop, or
    ``start_in_thread()`` / ``stop()`` (also ``with DemoServer(...)``) from sync code.
    """

    def __init__(
        self,
        model: ScriptedModel | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        shutdown_timeout: int = 1,
    ) -> None:
        self.model = model if model is not None else ScriptedModel()
        self.host = host
        self._port = port
        self._shutdown_timeout = shutdown_timeout
        self._server: _Server | None = None
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None

    @property
    def port(self) -> int:
        """Return the bound port (known once started)."""
        if self._socket is None:
            raise RuntimeError("DemoServer is not started")
        port: int = self._socket.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """Return the base URL to use as ``ANTHROPIC_BASE_URL``."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> DemoServer:
        """Start serving as a task of the running loop; return once the port accepts."""
        server, sock = self._prepare()
        self._task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if self._task.done() or time.monotonic() > deadline:
                await self.aclose()
                raise RuntimeError("demo server failed to start")
            await asyncio.sleep(0.01)
        return self

    async def aclose(self) -> None:
        """Stop a server started with ``start()`` and wait for it to finish."""
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
            self._task = None
        self._release()

    async def __aenter__(self) -> DemoServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def start_in_thread(self) -> DemoServer:
        """Start serving in a daemon thread with its own loop; return once the port accepts."""
        server, sock = self._prepare()

        def run() -> None:
            try:
                asyncio.run(server.serve(sockets=[sock]))
            except BaseException as exc:
                self._thread_error = exc

        self._thread = threading.Thread(target=run, name="ccgate-demo", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("demo server failed to start") from self._thread_error
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop a server started with ``start_in_thread()`` and join its thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=self._shutdown_timeout + 5.0)
            self._thread = None
        self._release()

    def __enter__(self) -> DemoServer:
        return self.start_in_thread()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _prepare(self) -> tuple[_Server, socket.socket]:
        """Bind the listening socket and build the uvicorn server."""
        if self._server is not None:
            raise RuntimeError("DemoServer is already started")
        # IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only for TCP ones.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._port))
        config = uvicorn.Config(
            create_demo_app(self.model),
            log_config=None,
            log_level="warning",
            lifespan="off",
            access_log=False,
            # Like a real API, keep idle connections long enough that a client reusing one
            # after a pause does not race the server closing it (ECONNRESET).
            timeout_keep_alive=120,
            timeout_graceful_shutdown=self._shutdown_timeout,
        )
        self._server, self._socket = _Server(config), sock
        return self._server, sock

    def _release(self) -> None:
        """Close the socket and forget the server so it can be started again."""
        if self._socket is not None:
            self._socket.close()
        self._server = self._socket = None
