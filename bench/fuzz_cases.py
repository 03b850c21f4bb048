"""The hostile requests of ``bench/fuzz.py``: values, bodies, headers, paths, raw HTTP.

Every case is derived, deterministically, from one valid request per operation of
the server's ``/openapi.json``: each JSON field set to each hostile value, each
member removed, an unknown member added, whole bodies that are not a JSON object,
hostile query and path parameters, wrong methods and authorization headers; then
session and key headers with bytes a header cannot echo, malformed HTTP written to
a socket as is, and routes that do not exist.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.report import clip

__all__ = [
    "ADMIN",
    "ADMIN_KEY",
    "API_KEY",
    "AUTH",
    "Case",
    "Operation",
    "cases_for",
    "header_cases",
    "operations",
    "raw_cases",
    "unknown_route_cases",
]

API_KEY = "ccg_fuzz_Uwnx963qs4Bd8XKxLZBPl28bcWdh9U-A0spmihxKUa4"
ADMIN_KEY = "fuzz-admin-4Q6Ctr6tGjwyegQNktD6J6yKi_XB_-3pdOrZ97WMDlE"


class Raw(str):
    """A JSON token written as is (``NaN``, ``1e999``, a 5,000-digit number, ...)."""


HOSTILE_STRINGS: list[Any] = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\r\n",
    "x\nSet-Cookie: y",
    "\x1b[31mred",
    "\u202eevil\u202c",
    "\u200f\u200e",
    "日本語のテキスト",
    "😀🚀",
    "\ud800",
    "\udfff",
    "\udc00\ud800",
    "ok \ud83d",
    "\ufffe\uffff",
    "\u2028\u2029",
    "x" * 100_000,
    "%s%n%x",
    "../../etc/passwd",
    "{{7*7}}",
    "' OR 1=1 --",
]
HOSTILE_NUMBERS: list[Any] = [
    0,
    -1,
    1.5,
    2**31,
    2**63,
    2**64,
    1e308,
    Raw("1e999"),
    Raw("-1e999"),
    Raw("NaN"),
    Raw("Infinity"),
    Raw("1" + "0" * 5000),
    Raw("-0"),
]
WRONG_TYPES: list[Any] = [None, True, False, [], {}, [None], {"": None}, "0", "true"]


def _deep(depth: int) -> Raw:
    """Return ``depth`` nested arrays and objects as a JSON token."""
    opened = "".join("[" if i % 2 else '{"k":' for i in range(depth))
    closed = "".join("]" if i % 2 else "}" for i in reversed(range(depth)))
    return Raw(opened + '"bottom"' + closed)


NESTED: list[Any] = [_deep(100), _deep(600), Raw("[" * 100_000 + "]" * 100_000)]
VALUES: list[Any] = HOSTILE_STRINGS + HOSTILE_NUMBERS + WRONG_TYPES + NESTED

BAD_BODIES: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("null", b"null"),
    ("array", b"[]"),
    ("string", b'"x"'),
    ("truncated", b'{"a": '),
    ("not utf-8", b'{"a": "\xff\xfe"}'),
    ("raw surrogate bytes", b'{"a": "\xed\xa0\x80"}'),
    ("bom", b'\xef\xbb\xbf{"a": 1}'),
    ("utf-16", '{"a": 1}'.encode("utf-16")),
    ("duplicate keys", b'{"a": 1, "a": 2}'),
    ("deep array", b"[" * 100_000 + b"]" * 100_000),
    ("NaN", b'{"a": NaN}'),
]


@dataclass
class Operation:
    """One endpoint with a valid request to start from."""

    method: str
    path: str
    body: Any = None
    query: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class Case:
    """One request to send (``raw``: bytes written to a socket as they are)."""

    label: str
    method: str = "GET"
    path: str = "/"
    content: bytes | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None


def encode(body: Any) -> bytes:
    """Serialise ``body`` as JSON, with ``Raw`` tokens written as they are."""
    raws: list[str] = []

    def swap(value: Any) -> Any:
        if isinstance(value, Raw):
            raws.append(str(value))
            return f"\x00RAW{len(raws) - 1}\x00"
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        return value

    text = json.dumps(swap(body))
    for i, raw in enumerate(raws):
        text = text.replace(f'"\\u0000RAW{i}\\u0000"', raw)
    return text.encode("utf-8", "surrogatepass")


def leaves(value: Any, where: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Yield the path of every value inside ``value`` (containers too)."""
    if where:
        yield where
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, (*where, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from leaves(item, (*where, i))


def replaced(value: Any, where: tuple[Any, ...], new: Any) -> Any:
    """Return a copy of ``value`` with the item at ``where`` set to ``new``."""
    if not where:
        return new
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    copy[where[0]] = replaced(value[where[0]], where[1:], new)
    return copy


def removed(value: Any, where: tuple[Any, ...]) -> Any:
    """Return a copy of ``value`` without the object member at ``where``."""
    if len(where) == 1:
        return {k: v for k, v in value.items() if k != where[0]}
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    copy[where[0]] = removed(value[where[0]], where[1:])
    return copy


def operations(schema: dict[str, Any], ids: dict[str, str]) -> list[Operation]:
    """Return every operation of the schema (endless streams included: only headers are read)."""
    seeds: dict[tuple[str, str], Operation] = {
        ("POST", "/v1/chat/completions"): Operation(
            "POST",
            "/v1/chat/completions",
            {
                "model": "sonnet",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                ],
                "stream": False,
                "max_tokens": 50,
                "session_id": "fuzz-1",
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "description": "d",
                            "parameters": {
                                "type": "object",
                                "properties": {"a": {"type": "string"}},
                            },
                        },
                    }
                ],
            },
        ),
        ("POST", "/v1/messages"): Operation(
            "POST",
            "/v1/messages",
            {
                "model": "sonnet",
                "max_tokens": 50,
                "system": "Be brief.",
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                "metadata": {"user_id": "u"},
                "tools": [
                    {
                        "name": "f",
                        "description": "d",
                        "input_schema": {"type": "object", "properties": {"a": {"type": "string"}}},
                    }
                ],
            },
        ),
        ("POST", "/v1/messages/count_tokens"): Operation(
            "POST",
            "/v1/messages/count_tokens",
            {"model": "sonnet", "system": "s", "messages": [{"role": "user", "content": "hi"}]},
        ),
        ("POST", "/v1/loops"): Operation(
            "POST",
            "/v1/loops",
            {
                "title": "t",
                "metadata": {"a": [1, "b"]},
                "permission_mode": "plan",
                "model": "sonnet",
            },
        ),
        ("POST", "/v1/loops/{loop_id}/messages"): Operation(
            "POST", "/v1/loops/{loop_id}/messages", {"content": "hello", "permission_mode": "plan"}
        ),
        ("POST", "/v1/loops/{loop_id}/choices/{choice_id}"): Operation(
            "POST", "/v1/loops/{loop_id}/choices/{choice_id}", {"allow": True, "message": "m"}
        ),
        ("POST", "/admin/keys"): Operation(
            "POST",
            "/admin/keys",
            {
                "name": "fuzz",
                "quota": {"requests_per_minute": 5, "budget_usd_per_month": 1.5},
                "models": ["sonnet"],
                "expires_at": "2099-01-01",
            },
        ),
        ("PATCH", "/admin/keys/{key_id}"): Operation(
            "PATCH", "/admin/keys/{key_id}", {"name": "n", "disabled": False, "expires_at": None}
        ),
        ("GET", "/v1/loops"): Operation(
            "GET", "/v1/loops", query={"limit": "5", "archived": "false", "after": ids["loop_id"]}
        ),
        ("GET", "/v1/usage"): Operation(
            "GET", "/v1/usage", query={"since": "2020-01-01", "group_by": "day"}
        ),
        ("GET", "/admin/usage"): Operation(
            "GET", "/admin/usage", query={"since": "0", "until": "2099-01-01", "group_by": "key"}
        ),
        ("GET", "/admin/keys"): Operation("GET", "/admin/keys", query={"include_revoked": "true"}),
    }
    found: list[Operation] = []
    for path, item in schema["paths"].items():
        for method in item:
            key = (method.upper(), path)
            op = seeds.get(key) or Operation(method.upper(), path)
            op.params = {name: ids[name] for name in ids if "{" + name + "}" in path}
            found.append(op)
    return found


def fill(path: str, params: dict[str, str]) -> str:
    """Return ``path`` with its parameters filled in."""
    for name, value in params.items():
        path = path.replace("{" + name + "}", value)
    return path


AUTH = {"authorization": f"Bearer {API_KEY}"}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def cases_for(op: Operation) -> Iterator[Case]:
    """Yield the hostile variants of one operation."""
    auth = ADMIN if op.path.startswith("/admin") else AUTH
    json_headers = {**auth, "content-type": "application/json"}
    path = fill(op.path, op.params)
    label = f"{op.method} {op.path}"
    if op.body is not None:
        for where in leaves(op.body):
            for value in VALUES:
                body = replaced(op.body, where, value)
                name = ".".join(map(str, where))
                yield Case(
                    f"{label} {name}={clip(repr(value), 30)}",
                    op.method,
                    path,
                    encode(body),
                    json_headers,
                    op.query,
                )
            if isinstance(where[-1], str):
                yield Case(
                    f"{label} without {'.'.join(map(str, where))}",
                    op.method,
                    path,
                    encode(removed(op.body, where)),
                    json_headers,
                    op.query,
                )
        for value in HOSTILE_STRINGS[:17] + WRONG_TYPES[:3]:
            extra = {**op.body, "unknown_field": value}
            yield Case(
                f"{label} extra field={clip(repr(value), 30)}",
                op.method,
                path,
                encode(extra),
                json_headers,
                op.query,
            )
        for name, content in BAD_BODIES:
            yield Case(f"{label} body {name}", op.method, path, content, json_headers, op.query)
        for kind in ("text/plain", "application/x-www-form-urlencoded", "application/json; x"):
            yield Case(
                f"{label} content-type {kind}",
                op.method,
                path,
                encode(op.body),
                {**auth, "content-type": kind},
                op.query,
            )
    for name in op.query:
        for value in [
            "-1",
            "0",
            "101",
            "1e9",
            "1" * 400,
            "x",
            "",
            "\x00",
            "nan",
            "inf",
            "2026-13-45",
            "\ud800",
            "日本",
            "maybe",
        ]:
            query = {**op.query, name: value}
            yield Case(
                f"{label} ?{name}={clip(repr(value), 20)}",
                op.method,
                path,
                encode(op.body) if op.body is not None else None,
                json_headers,
                query,
            )
    for name in op.params:
        for value in ["%00", "%ED%A0%80", "%FF", "%2E%2E", "x" * 5000, "日本", "%0D%0A", "a%2Fb"]:
            params = {**op.params, name: value}
            yield Case(
                f"{label} {{{name}}}={clip(value, 20)}",
                op.method,
                fill(op.path, params),
                encode(op.body) if op.body is not None else None,
                json_headers,
                op.query,
            )
    body = encode(op.body) if op.body is not None else None
    for key in ("", "x", "Bearer", "Bearer \u00e9", "Basic Zm9vOmJhcg=="):
        headers = {"authorization": key.encode("latin-1")} if key else {}
        yield Case(
            f"{label} authorization={key!r}",
            op.method,
            path,
            body,
            {**headers, "content-type": "application/json"},
            op.query,
        )
    for method in ("PUT", "PATCH", "TRACE", "OPTIONS", "DELETE", "POST", "GET"):
        if method != op.method:
            yield Case(f"{method} {op.path} (wrong method)", method, path, None, auth, op.query)


SESSION_HEADERS: list[tuple[str, bytes]] = [
    ("CJK", "日本語".encode()),
    ("emoji", "😀".encode()),
    ("bidi", "\u202eab".encode()),
    ("latin-1", b"caf\xe9"),
    ("long", b"s" * 10_000),
    ("257 chars", b"s" * 257),
    ("spaces", b"my session"),
    ("slash", b"a/b"),
    ("uuid", b"0b3c1f5e-8a7d-4c21-9e0f-2a6b8c4d1e3f"),
    ("opencode", b"ses_6f1e2d3c4b5a69788776655"),
    ("ulid", b"01HZX3JQ5V8K2M4N6P7R9S0T1V"),
]


def header_cases() -> Iterator[Case]:
    """Yield requests with hostile session, key and idempotency headers."""
    chat = encode({"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]})
    messages = encode(
        {"model": "sonnet", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    )
    for header in ("x-session-id", "x-opencode-session"):
        for name, value in SESSION_HEADERS:
            for path, body in (("/v1/chat/completions", chat), ("/v1/messages", messages)):
                headers = {**AUTH, "content-type": "application/json", header: value}
                yield Case(f"POST {path} {header}: {name}", "POST", path, body, headers)
    for name, value in SESSION_HEADERS:
        body = encode(
            {
                "model": "sonnet",
                "session_id": value.decode("utf-8", "replace"),
                "messages": [{"role": "user", "content": "hi"}],
            }
        )
        yield Case(
            f"POST /v1/chat/completions session_id: {name}",
            "POST",
            "/v1/chat/completions",
            body,
            {**AUTH, "content-type": "application/json"},
        )
    for name, value in [("unicode", "ключ".encode()), ("long", b"k" * 5000), ("latin-1", b"\xe9")]:
        yield Case(
            f"GET /v1/models x-api-key: {name}", "GET", "/v1/models", None, {"x-api-key": value}
        )
        yield Case(
            f"GET /admin/keys authorization: {name}",
            "GET",
            "/admin/keys",
            None,
            {"authorization": b"Bearer " + value},
        )


def raw_cases(ids: dict[str, str]) -> Iterator[Case]:
    """Yield malformed HTTP, written to a socket byte for byte."""
    body = b'{"model":"sonnet","messages":[{"role":"user","content":"hi"}]}'
    auth = f"Authorization: Bearer {API_KEY}\r\n".encode()

    def post(extra: bytes, payload: bytes = body, path: bytes = b"/v1/chat/completions") -> bytes:
        return (
            b"POST "
            + path
            + b" HTTP/1.1\r\nHost: x\r\n"
            + auth
            + b"Content-Type: application/json\r\n"
            + extra
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )

    for name, value in [("NUL", b"a\x00b"), ("CR", b"a\rb"), ("LF", b"a\nb"), ("DEL", b"a\x7fb")]:
        yield Case(f"raw X-Session-Id with {name}", raw=post(b"X-Session-Id: " + value + b"\r\n"))
        yield Case(
            f"raw x-opencode-session with {name}",
            raw=post(b"x-opencode-session: " + value + b"\r\n"),
        )
    yield Case("raw header without a colon", raw=post(b"NoColonHere\r\n"))
    yield Case("raw space before colon", raw=post(b"X-Session-Id : a\r\n"))
    yield Case("raw 100 KB header", raw=post(b"X-Big: " + b"a" * 100_000 + b"\r\n"))
    yield Case("raw bad Transfer-Encoding", raw=post(b"Transfer-Encoding: gzip, chunked\r\n"))
    yield Case("raw HTTP/0.9", raw=b"GET /health\r\n\r\n")
    yield Case("raw unknown method", raw=b"BREW /health HTTP/1.1\r\nHost: x\r\n\r\n")
    yield Case("raw path with NUL", raw=b"GET /v1/loops/a\x00b HTTP/1.1\r\nHost: x\r\n\r\n")
    yield Case(
        "raw path not ascii",
        raw=b"GET /v1/loops/\xe6\x97\xa5 HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n",
    )
    yield Case("raw absolute path", raw=b"GET http://x/health HTTP/1.1\r\nHost: x\r\n\r\n")
    yield Case(
        "raw idempotency key not ascii",
        raw=post(
            b"Idempotency-Key: \xe6\x97\xa5\r\n",
            b'{"content":"hi"}',
            f"/v1/loops/{ids['loop_id']}/messages".encode(),
        ),
    )


def unknown_route_cases() -> Iterator[Case]:
    """Yield requests to routes that do not exist (which must not answer like a model)."""
    for method, path in [
        ("GET", "/v1/nothing"),
        ("POST", "/chat/completions"),
        ("POST", "/v1/v1/messages"),
        ("POST", "/v1/messages/nothing"),
        ("GET", "/v1/loops/x/y/z"),
        ("POST", "/v1/responses"),
        ("GET", "/admin/nothing"),
        ("GET", "/" + "a" * 5000),
    ]:
        yield Case(f"{method} {clip(path, 30)} (no such route)", method, path, b"{}", dict(AUTH))
