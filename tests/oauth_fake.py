"""A fake OAuth token endpoint with single-use refresh tokens, served over real HTTP.

:class:`FakeTokenEndpoint` answers ``POST <url>`` as Claude Code's token endpoint
does: the ``refresh_token`` grant (JSON) spends the refresh token and returns a
new access token, a new refresh token and ``expires_in``. A refresh token
used a second time (or never issued) gets 400 ``invalid_grant`` and counts in
``reused``: the failure a refresh lock exists to prevent. ``delay`` holds each
answer back (to widen races); ``fail`` makes the next answers a 503.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PATH = "/v1/oauth/token"


class FakeTokenEndpoint:
    """See the module docstring; a context manager that serves on a free loopback port."""

    def __init__(self, *, expires_in: int = 8 * 3600, delay: float = 0.0) -> None:
        self.expires_in = expires_in
        self.delay = delay
        self.fail = 0
        self.refreshes = 0
        self.reused = 0
        self.requests: list[dict[str, Any]] = []
        self._valid: set[str] = set()
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                status, body = endpoint._answer(self.path, self.rfile.read(length))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Return the token endpoint's URL."""
        return f"http://127.0.0.1:{self._server.server_address[1]}{PATH}"

    def __enter__(self) -> FakeTokenEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def issue(self, *, expires_in: float | None = None) -> dict[str, Any]:
        """Return a new login (``claudeAiOauth``) whose refresh token is valid once."""
        refresh = "rt-" + secrets.token_hex(8)
        with self._lock:
            self._valid.add(refresh)
        seconds = self.expires_in if expires_in is None else expires_in
        return {
            "accessToken": "at-" + secrets.token_hex(8),
            "refreshToken": refresh,
            "expiresAt": int((time.time() + seconds) * 1000),
            "scopes": ["user:inference", "user:profile"],
            "subscriptionType": "max",
        }

    def _answer(self, path: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        if self.delay:
            time.sleep(self.delay)
        if path != PATH:
            return 404, {"error": "not_found"}
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, {"error": "invalid_request"}
        with self._lock:
            self.requests.append(body)
            if self.fail:
                self.fail -= 1
                return 503, {"error": "temporarily_unavailable"}
            if body.get("grant_type") != "refresh_token" or not body.get("client_id"):
                return 400, {"error": "invalid_request"}
            token = body.get("refresh_token")
            if token not in self._valid:
                self.reused += 1
                return 400, {"error": "invalid_grant", "error_description": "refresh token reused"}
            self._valid.discard(token)
            self.refreshes += 1
            fresh = "rt-" + secrets.token_hex(8)
            self._valid.add(fresh)
        return 200, {
            "token_type": "Bearer",
            "access_token": "at-" + secrets.token_hex(8),
            "refresh_token": fresh,
            "expires_in": self.expires_in,
            "scope": body.get("scope") or "user:inference",
        }
