"""Server subprocesses of the benchmarks: a free port, a clean environment, start/health/stop.

* :func:`free_port`, :func:`base_env`;
* :class:`ServerProcess` -- a server subprocess with a data dir and a log file, with
  ``wait_healthy``, ``log_tail`` and ``stop``; :class:`Gateway` -- one that is a real
  ``python -m ccgate serve`` pointed at an upstream (the scripted model of ``ccgate.demo``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from bench.report import clip

__all__ = [
    "REPO_ROOT",
    "SERVER_START_TIMEOUT",
    "SERVER_STOP_TIMEOUT",
    "Gateway",
    "ServerProcess",
    "base_env",
    "free_port",
]

#: The repository's root: where ``python -m bench.<name>`` runs, and ``bench`` imports from.
REPO_ROOT = Path(__file__).resolve().parents[1]

SERVER_START_TIMEOUT = 30.0
SERVER_STOP_TIMEOUT = 20.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def base_env() -> dict[str, str]:
    """Return the environment benchmarks start from: no ccgate settings, no proxy for loopback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCGATE_")}
    for name in ("NO_PROXY", "no_proxy"):
        parts = [p for p in env.get(name, "").split(",") if p]
        env[name] = ",".join([*parts, "127.0.0.1", "localhost"])
    return env


# --------------------------------------------------------------------------- gateway


class ServerProcess:
    """A server subprocess that answers ``GET /health`` at ``url`` once it is up.

    ``argv`` is the command line; ``port`` the port it was told to listen on. The
    server's stdout and stderr go to ``log_path``, by default ``<data_dir>-server.log``
    next to the data dir.
    """

    def __init__(
        self,
        argv: list[str],
        port: int,
        data_dir: Path,
        env: Mapping[str, str],
        *,
        cwd: Path | None = None,
        log_path: Path | None = None,
        start_timeout: float = SERVER_START_TIMEOUT,
        stop_timeout: float = SERVER_STOP_TIMEOUT,
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.log_path = log_path or data_dir.parent / f"{data_dir.name}-server.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(env),
        )

    def wait_healthy(self, client: httpx.Client) -> dict[str, Any]:
        """Poll ``GET /health`` until it answers 200; return its body."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(httpx.TransportError):
                response = client.get(f"{self.url}/health", timeout=2.0)
                if response.status_code == 200:
                    body: dict[str, Any] = response.json()
                    return body
            time.sleep(0.05)
        raise RuntimeError(
            f"ccgate did not become healthy (exit code {self.proc.poll()}); "
            f"log: {clip(self.log_tail(), 600)}"
        )

    def log_tail(self) -> str:
        """Return the end of the server's combined stdout/stderr."""
        self._log.flush()
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-2000:]
        return ""

    def stop(self) -> str:
        """SIGTERM the server and wait for it (SIGKILL after a grace period); say how it went."""
        try:
            if self.proc.poll() is not None:
                return f"already exited with code {self.proc.returncode}"
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait(timeout=5.0)
                return f"SIGTERM ignored for {self.stop_timeout:g} s -> SIGKILL (code {code})"
            if code == -signal.SIGTERM:
                # uvicorn re-raises a captured signal once its graceful shutdown is done.
                return "SIGTERM -> shut down and exited by the re-raised signal (code -15)"
            return f"SIGTERM -> exited with code {code}"
        finally:
            self._log.close()


class Gateway(ServerProcess):
    """A ``python -m ccgate serve`` subprocess pointed at the scripted model.

    ``env`` is the server's environment, with ``extra_env`` laid over it (e.g.
    ``{"CCGATE_SESSION_CONTINUATION": "false"}``). ``default_model`` adds
    ``--default-model``. The server's stdout and stderr go to ``log_path``, by default
    ``<data_dir>-server.log`` next to the data dir.
    """

    def __init__(
        self,
        upstream_url: str,
        data_dir: Path,
        env: Mapping[str, str],
        *,
        default_model: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        start_timeout: float = SERVER_START_TIMEOUT,
        stop_timeout: float = SERVER_STOP_TIMEOUT,
    ) -> None:
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "ccgate",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--upstream-url",
            upstream_url,
            "--upstream-api-key",
            "x",
            "--upstream-retries",
            "0",
        ]
        if default_model is not None:
            argv += ["--default-model", default_model]
        argv += ["--log-level", "warning"]
        super().__init__(
            argv,
            port,
            data_dir,
            {**env, **(extra_env or {})},
            log_path=log_path,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )
