"""The console's pages: sign-in and out, the live overview, keys, usage, sessions, settings.

Every page needs a sign-in (:mod:`ccgate.access.signins`), except with
``auth_mode=none``, where the first visit gets one. Forms are plain HTML
forms (they work without script) posting ``application/x-www-form-urlencoded``
with the sign-in's CSRF token; each answers with a redirect or the page
again, with what went wrong said on it. A client key sees only its own
requests; keys are the admin's.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import math
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from pydantic import SecretStr, ValidationError
from starlette.responses import RedirectResponse, Response

from ccgate import checks
from ccgate.access.feed import Entry, Notice
from ccgate.access.signins import Viewer
from ccgate.api.answer import PING_EVERY, SSEResponse
from ccgate.api.routes.admin import change_key as change_key_as_admin
from ccgate.api.routes.admin import make_key
from ccgate.api.routes.health import public_upstream
from ccgate.console import usage
from ccgate.console.view import PREFIX, fragment, render
from ccgate.errors import AuthenticationFailed, GatewayError
from ccgate.gateway import Gateway
from ccgate.protocol.admin import KeyCreate, KeyUpdate
from ccgate.store.records import KeyRecord, UsageRecord, UsageSummary
from ccgate.store.usage import GroupBy

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

#: The cookie that holds a sign-in's token.
COOKIE = "ccgate_console"
#: How often the overview's gauges are sent again (seconds).
STATS_EVERY = 2.0
#: Rows the overview shows.
ROWS = 50
#: A form body larger than this is refused (bytes).
FORM_MAX = 64 * 1024


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.ccgate
    return gateway


async def _viewer(request: Request) -> Viewer | None:
    return await _gateway(request).signins.viewer(request.cookies.get(COOKIE))


def _to_signin() -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/signin", status_code=303)


def _set_cookie(request: Request, response: Response, token: str) -> None:
    secure = request.url.scheme == "https" or (
        request.headers.get("x-forwarded-proto", "").lower() == "https"
    )
    response.set_cookie(
        COOKIE,
        token,
        max_age=round(_gateway(request).settings.console_session_ttl),
        path="/",
        httponly=True,
        samesite="strict",
        secure=secure,
    )


async def _form(request: Request) -> dict[str, str]:
    """Return an urlencoded form's fields (the last value of each)."""
    body = await request.body()
    if len(body) > FORM_MAX:
        return {}
    try:
        text = body.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        return {}
    fields = parse_qs(text, keep_blank_values=True, max_num_fields=100)
    return {name: values[-1] for name, values in fields.items()}


Page = Callable[[Request, Viewer], Awaitable[Response]]


async def _page(request: Request, page: Page) -> Response:
    """Run ``page`` for the signed-in viewer, or send the browser to sign in."""
    viewer = await _viewer(request)
    if viewer is None:
        signins = _gateway(request).signins
        if not signins.open:
            return _to_signin()
        token, viewer = await signins.open_session()
        response = await page(request, viewer)
        _set_cookie(request, response, token)
        return response
    return await page(request, viewer)


Action = Callable[[Viewer, dict[str, str]], Awaitable[Response]]


async def _post(request: Request, action: Action) -> Response:
    """Run a form's ``action`` when the sign-in and its CSRF token hold; else refuse (403)."""
    viewer = await _viewer(request)
    if viewer is None:
        return _to_signin()
    form = await _form(request)
    if not viewer.check_csrf(form.get("csrf") or request.headers.get("x-csrf-token")):
        return render(
            request,
            "error.html",
            {
                "viewer": viewer,
                "title": "Refused",
                "message": "This form is stale or was "
                "not sent from this console. Go back, reload the page and try again.",
            },
            status_code=403,
        )
    return await action(viewer, form)


# What the console's other page modules use.
gateway_of = _gateway
viewer_of = _viewer
page = _page
post = _post


def sentence(message: str) -> str:
    """Return ``message`` as a sentence (capital first, full stop last)."""
    return _sentence(message)


def quote(text: str) -> str:
    """Return ``text`` for a query string."""
    return urllib.parse.quote(text[:300], safe="")


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# -- sign-in ---------------------------------------------------------------------------------


@router.get(f"{PREFIX}/signin")
async def signin_form(request: Request) -> Response:
    """The sign-in form (with no auth, straight to the overview)."""
    signins = _gateway(request).signins
    if signins.open or await _viewer(request) is not None:
        return RedirectResponse("/", status_code=303)
    return render(request, "signin.html", {"title": "Sign in", "error": None})


@router.post(f"{PREFIX}/signin")
async def signin(request: Request) -> Response:
    """Check the key typed in; on success set the cookie and go to the overview."""
    signins = _gateway(request).signins
    address = _client_address(request)
    wait = signins.brake.wait(address)
    if wait > 0:
        response = render(
            request,
            "signin.html",
            {
                "title": "Sign in",
                "error": f"Too many failed sign-ins from this address: wait {math.ceil(wait)} s "
                "and try again.",
            },
            status_code=429,
        )
        response.headers["retry-after"] = str(math.ceil(wait))
        return response
    form = await _form(request)
    try:
        token, _ = await signins.sign_in(form.get("key", ""))
    except AuthenticationFailed as exc:
        signins.brake.failed(address)
        context = {"title": "Sign in", "error": _sentence(exc.message)}
        return render(request, "signin.html", context, status_code=401)
    done = RedirectResponse("/", status_code=303)
    _set_cookie(request, done, token)
    return done


@router.post(f"{PREFIX}/signout")
async def signout(request: Request) -> Response:
    """End the sign-in and forget the cookie."""

    async def action(viewer: Viewer, form: dict[str, str]) -> Response:
        await _gateway(request).signins.sign_out(request.cookies.get(COOKIE))
        response = _to_signin()
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    return await _post(request, action)


def _sentence(message: str) -> str:
    text = message[:1].upper() + message[1:]
    return text if text.endswith(".") else text + "."


# -- overview --------------------------------------------------------------------------------


def _stats(gateway: Gateway) -> dict[str, Any]:
    pool = gateway.runner.pool_status()
    hits, misses = _count(pool.get("hits")), _count(pool.get("misses"))
    return {
        "active": gateway.gate.active,
        "queued": gateway.gate.queued,
        "waiting_for_tools": gateway.turns.parked,
        "max_concurrent": gateway.settings.max_concurrent,
        "max_queue": gateway.settings.max_queue,
        "pool": pool,
        "hit_rate": (hits / (hits + misses)) if hits + misses else None,
        "loops_active": gateway.loops.live_processes(),
        "probe": gateway.probe.as_dict(),
        "draining": gateway.draining,
    }


def _count(value: object) -> int:
    return value if isinstance(value, int) else 0


def _namespace(viewer: Viewer) -> str | None:
    return None if viewer.sees_all else viewer.namespace


@router.get("/")
async def overview(request: Request) -> Response:
    """What the gateway is doing now: the live feed of requests, and its gauges."""

    async def page(request: Request, viewer: Viewer) -> Response:
        gateway = _gateway(request)
        rows = gateway.feed.recent(_namespace(viewer), ROWS)
        return render(
            request,
            "overview.html",
            {
                "title": "Overview",
                "viewer": viewer,
                "rows": rows,
                "stats": _stats(gateway) if viewer.sees_all else None,
            },
        )

    return await _page(request, page)


@router.get(PREFIX)
@router.get(f"{PREFIX}/")
async def console_root() -> Response:
    """The console's own address: the overview."""
    return RedirectResponse("/", status_code=303)


def _row(entry: Entry) -> str:
    return _one_line(fragment("_row.html", {"row": entry}))


def _one_line(html: str) -> str:
    return " ".join(line.strip() for line in html.splitlines() if line.strip())


def _event(name: str, data: str) -> str:
    """Return one SSE event; ``data`` may span lines (each gets its ``data:`` field)."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {name}\n{lines}\n"


@router.get(f"{PREFIX}/feed")
async def feed(request: Request) -> Response:
    """The live feed as server-sent events: ``row`` (a table row, new or updated) and
    ``stats`` (the gauges, for those who see the whole gateway)."""
    viewer = await _viewer(request)
    if viewer is None:
        return Response("sign in first", status_code=401, media_type="text/plain")
    gateway = _gateway(request)
    watch = gateway.feed.watch(_namespace(viewer))

    async def events() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        next_stats = loop.time()
        next_ping = loop.time() + PING_EVERY
        yield "retry: 2000\n\n"
        try:
            while True:
                now = loop.time()
                if viewer.sees_all and now >= next_stats:
                    stats = fragment("_stats.html", {"stats": _stats(gateway)})
                    yield _event("stats", _one_line(stats))
                    next_stats = now + STATS_EVERY
                if now >= next_ping:
                    yield ": ping\n\n"
                    next_ping = now + PING_EVERY
                wait = min(next_ping, next_stats if viewer.sees_all else next_ping) - now
                try:
                    entry = await watch.next(max(0.05, wait))
                except StopAsyncIteration:
                    yield _event("bye", "")
                    return
                if isinstance(entry, Notice):
                    notice = {"title": entry.title, "body": entry.body, "link": entry.link}
                    yield _event("choice", json.dumps(notice))
                elif entry is not None:
                    yield _event("row", _row(entry))
        finally:
            watch.close()

    async def nothing() -> None:
        return None

    return SSEResponse(events(), {"cache-control": "no-store"}, on_close=nothing)


# -- keys ------------------------------------------------------------------------------------


async def _keys_page(
    request: Request,
    viewer: Viewer,
    *,
    created: tuple[KeyRecord, str] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    gateway = _gateway(request)
    keys = await gateway.keys.list_keys(include_revoked=False)
    month = await gateway.ledger.summarize(None, since=_month_start(), group_by="key")
    today = await gateway.ledger.summarize(None, since=_day_start(), group_by="key")
    spent = {key.id: (_find(month, key.id), _find(today, key.id)) for key in keys}
    return render(
        request,
        "keys.html",
        {
            "title": "Keys",
            "viewer": viewer,
            "keys": keys,
            "spent": spent,
            "created": created,
            "error": error,
            "multi": gateway.settings.auth_mode == "multi",
        },
        status_code=status_code,
    )


def _month_start() -> float:
    now = dt.datetime.now(dt.UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


def _day_start() -> float:
    now = dt.datetime.now(dt.UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def _find(rows: list[UsageSummary], group: str) -> UsageSummary | None:
    return next((row for row in rows if row.group == group), None)


def _invalid(exc: ValidationError) -> str:
    """Say what is wrong with a form, field by field."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"] if p != "quota")
        parts.append(f"{where.replace('_', ' ')}: {err['msg']}" if where else err["msg"])
    return "; ".join(dict.fromkeys(parts)) + "."


def _admin_only(request: Request, viewer: Viewer) -> Response | None:
    if viewer.is_admin:
        return None
    return render(
        request,
        "error.html",
        {
            "viewer": viewer,
            "title": "Not yours",
            "message": "Keys are the administrator's: sign in with the admin key to manage them.",
        },
        status_code=403,
    )


@router.get(f"{PREFIX}/keys")
async def keys(request: Request) -> Response:
    """Every key with its limits and what it spent this month (admin)."""

    async def page(request: Request, viewer: Viewer) -> Response:
        return _admin_only(request, viewer) or await _keys_page(request, viewer)

    return await _page(request, page)


def _changes(form: dict[str, str]) -> dict[str, Any]:
    """Turn the key form's fields into the admin API's body."""
    body: dict[str, Any] = {}
    if "name" in form:
        body["name"] = form["name"]
    quota: dict[str, Any] = {}
    for field in (
        "requests_per_minute",
        "requests_per_day",
        "tokens_per_day",
        "budget_usd_per_month",
        "max_concurrent",
    ):
        if field in form:
            raw = form[field].strip()
            quota[field] = None if raw == "" else _number_of(raw, field)
    if quota:
        body["quota"] = quota
    if "models" in form:
        names = [m.strip() for m in form["models"].replace("\n", ",").split(",") if m.strip()]
        body["models"] = names or None
    if "expires_at" in form:
        raw = form["expires_at"].strip()
        body["expires_at"] = raw or None
    if "disabled" in form:
        body["disabled"] = form["disabled"] == "true"
    return body


def _number_of(raw: str, field: str) -> float | int | str:
    try:
        return float(raw) if field == "budget_usd_per_month" else int(raw)
    except ValueError:
        return raw  # the admin API's check names the field


@router.post(f"{PREFIX}/keys")
async def create_key(request: Request) -> Response:
    """Make a key; the page shows it this once."""

    async def action(viewer: Viewer, form: dict[str, str]) -> Response:
        refused = _admin_only(request, viewer)
        if refused is not None:
            return refused
        gateway = _gateway(request)
        try:
            made = await make_key(gateway, KeyCreate.model_validate(_changes(form)))
        except ValidationError as exc:
            return await _keys_page(request, viewer, error=_invalid(exc), status_code=400)
        except GatewayError as exc:
            return await _keys_page(request, viewer, error=_sentence(exc.message), status_code=400)
        return await _keys_page(request, viewer, created=(made.record, made.key))

    return await _post(request, action)


@router.post(PREFIX + "/keys/{key_id}")
async def change_key(request: Request, key_id: str) -> Response:
    """Change a key's name, limits, models, expiry or whether it is disabled."""

    async def action(viewer: Viewer, form: dict[str, str]) -> Response:
        refused = _admin_only(request, viewer)
        if refused is not None:
            return refused
        gateway = _gateway(request)
        try:
            await change_key_as_admin(gateway, key_id, KeyUpdate.model_validate(_changes(form)))
        except ValidationError as exc:
            return await _keys_page(request, viewer, error=_invalid(exc), status_code=400)
        except GatewayError as exc:
            return await _keys_page(request, viewer, error=_sentence(exc.message), status_code=400)
        return RedirectResponse(f"{PREFIX}/keys", status_code=303)

    return await _post(request, action)


@router.post(PREFIX + "/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str) -> Response:
    """Revoke a key for good; its console sign-ins end too."""

    async def action(viewer: Viewer, form: dict[str, str]) -> Response:
        refused = _admin_only(request, viewer)
        if refused is not None:
            return refused
        gateway = _gateway(request)
        try:
            await gateway.keys.revoke(key_id)
            await gateway.signins.end_key(key_id)
        except GatewayError as exc:
            return await _keys_page(request, viewer, error=_sentence(exc.message), status_code=400)
        return RedirectResponse(f"{PREFIX}/keys", status_code=303)

    return await _post(request, action)


# -- sessions --------------------------------------------------------------------------------


async def namespaces(gateway: Gateway, viewer: Viewer) -> dict[str, str]:
    """Return the namespaces ``viewer`` may see, with a name for people."""
    if not viewer.sees_all:
        return {viewer.namespace: viewer.name}
    names = {"local": "local", "shared": "shared key", "admin": "admin"}
    for key in await gateway.keys.list_keys(include_revoked=True):
        names[key.id] = key.name
    return names


@router.get(f"{PREFIX}/sessions")
async def sessions(request: Request) -> Response:
    """The conversations (Claude Code sessions) the viewer may see, most recent first."""

    async def page(request: Request, viewer: Viewer) -> Response:
        gateway = _gateway(request)
        now = time.time()
        ttl = gateway.settings.session_ttl
        rows = []
        for namespace, name in (await namespaces(gateway, viewer)).items():
            for record in await gateway.sessions.list_sessions(namespace):
                idle = max(0.0, now - record.last_used_at)
                rows.append((name, namespace, record, idle, max(0.0, ttl - idle)))
        rows.sort(key=lambda row: row[2].last_used_at, reverse=True)
        return render(
            request, "sessions.html", {"title": "Sessions", "viewer": viewer, "rows": rows}
        )

    return await _page(request, page)


@router.post(f"{PREFIX}/sessions/delete")
async def delete_sessions(request: Request) -> Response:
    """Forget one session (``key`` given) or all of a namespace's, with their transcripts."""

    async def action(viewer: Viewer, form: dict[str, str]) -> Response:
        gateway = _gateway(request)
        namespace = form.get("namespace", viewer.namespace)
        if namespace not in await namespaces(gateway, viewer):
            return render(
                request,
                "error.html",
                {"viewer": viewer, "title": "Not yours", "message": "These are not your sessions."},
                status_code=403,
            )
        key = form.get("key") or None
        await gateway.sessions.delete(namespace, key)
        return RedirectResponse(f"{PREFIX}/sessions", status_code=303)

    return await _post(request, action)


# -- settings --------------------------------------------------------------------------------


def _shown(name: str, value: object) -> str:
    """Return a setting as the page shows it: secrets only as set or not."""
    if isinstance(value, SecretStr):
        return "set (hidden)"
    if name == "upstream_url":
        return public_upstream(value if isinstance(value, str) else None)
    if name == "database_url" and isinstance(value, str):
        return value.split("://", 1)[0] + "://… (hidden)"
    if value is None:
        return "—"
    if isinstance(value, tuple | list):
        return ", ".join(str(v) for v in value) or "—"
    return str(value)


@router.get(f"{PREFIX}/settings")
async def settings_page(request: Request) -> Response:
    """The effective settings (secrets hidden) and the doctor's checks, read-only."""

    async def page(request: Request, viewer: Viewer) -> Response:
        if not viewer.sees_all:
            return render(
                request,
                "error.html",
                {
                    "viewer": viewer,
                    "title": "Not yours",
                    "message": "The gateway's settings are its operator's: sign in with the "
                    "admin key to see them.",
                },
                status_code=403,
            )
        gateway = _gateway(request)
        settings = gateway.settings
        rows = [
            (name, _shown(name, getattr(settings, name)), field.description or "")
            for name, field in type(settings).model_fields.items()
        ]
        found = [
            checks.data_dir(settings),
            checks.database(settings),
            checks.credentials(settings),
            checks.sandbox(),
            await checks.claude_cli(settings),
        ]
        probe = gateway.probe.as_dict()
        hooks = gateway.webhooks
        deliveries = [
            (d, urllib.parse.urlsplit(d.url).hostname or "?") for d in reversed(hooks.deliveries)
        ]
        return render(
            request,
            "settings.html",
            {
                "title": "Settings",
                "viewer": viewer,
                "rows": rows,
                "checks": found,
                "probe": probe,
                "webhooks": hooks,
                "deliveries": deliveries,
            },
        )

    return await _page(request, page)


# -- usage -----------------------------------------------------------------------------------

#: The ranges the usage page offers, in days.
RANGES = (1, 7, 30, 90)
#: Records the charts read at most (the totals come from the ledger's summary, always whole).
RECORDS_MAX = 200_000


def _usage_query(request: Request, viewer: Viewer) -> tuple[usage.Range, usage.Split, int]:
    """Read the usage page's choices: a range of days (or from one date to another, at
    most a year), per hour or day (hours over at most 7 days), split by key or model."""
    params = request.query_params
    days = _choice(params.get("days"), RANGES, 7)
    split: usage.Split = "model"
    if params.get("split") == "none":
        split = "none"
    elif params.get("split") == "key" and viewer.sees_all:
        split = "key"
    start, end = _date(params.get("from")), _date(params.get("to"))
    if start is not None and end is not None and start <= end and (end - start).days < 366:
        since = dt.datetime.combine(start, dt.time(), dt.UTC).timestamp()
        until = since + ((end - start).days + 1) * 86_400
        days = (end - start).days + 1
    else:
        until = _day_start() + 86_400  # whole UTC days, today included
        since = until - days * 86_400
    bucket: usage.Bucket = "hour" if params.get("bucket") == "hour" and days <= 7 else "day"
    if bucket == "hour" and until > time.time():
        until = usage.Range(since, time.time(), "hour").start_of(time.time()) + 3600
    return usage.Range(since, until, bucket), split, days


def _date(raw: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(raw) if raw else None
    except ValueError:
        return None


def _choice(raw: str | None, allowed: tuple[int, ...], default: int) -> int:
    try:
        value = int(raw or default)
    except ValueError:
        return default
    return value if value in allowed else default


async def _usage_data(
    gateway: Gateway, viewer: Viewer, span: usage.Range, split: usage.Split
) -> tuple[list[UsageRecord], dict[str, str], bool]:
    names = await namespaces(gateway, viewer)
    records = await gateway.ledger.between(
        _namespace(viewer), since=span.since, until=span.until, limit=RECORDS_MAX
    )
    return records, names, len(records) >= RECORDS_MAX


@router.get(f"{PREFIX}/usage")
async def usage_page(request: Request) -> Response:
    """Requests, tokens, cost and time to first token over time, by key or model."""

    async def page(request: Request, viewer: Viewer) -> Response:
        gateway = _gateway(request)
        span, split, days = _usage_query(request, viewer)
        records, names, cut = await _usage_data(gateway, viewer, span, split)
        group_by: GroupBy = "key" if split == "key" else "model"
        totals = await gateway.ledger.summarize(
            _namespace(viewer), since=span.since, until=span.until, group_by=group_by
        )
        if group_by == "key":
            totals = [replace(t, group=names.get(t.group, t.group)) for t in totals]
        data = usage.chart(records, span, split, names)
        return render(
            request,
            "usage.html",
            {
                "title": "Usage",
                "viewer": viewer,
                "span": span,
                "days": days,
                "ranges": RANGES,
                "split": split,
                "totals": totals,
                "rows": usage.table(records, span, split, names),
                "data": data,
                "measures": usage.MEASURES,
                "cut": cut,
                "query": request.url.query,
            },
        )

    return await _page(request, page)


@router.get(f"{PREFIX}/usage.csv")
async def usage_csv(request: Request) -> Response:
    """The table behind the usage charts, as CSV."""

    async def page(request: Request, viewer: Viewer) -> Response:
        gateway = _gateway(request)
        span, split, _ = _usage_query(request, viewer)
        records, names, _ = await _usage_data(gateway, viewer, span, split)
        rows = usage.table(records, span, split, names)
        out = io.StringIO()
        columns = [
            "start",
            "group",
            "requests",
            "input_tokens",
            "output_tokens",
            "cache_tokens",
            "cost_usd",
            "ttft_p50_ms",
            "ttft_p95_ms",
        ]
        writer = csv.DictWriter(out, columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            # A cell starting with = + - @ would be a formula to a spreadsheet: quote it.
            group = str(row["group"])
            row = {**row, "group": "'" + group if group[:1] in "=+-@\t\r" else group}
            writer.writerow(row)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
        return Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={
                "content-disposition": f'attachment; filename="ccgate-usage-{stamp}.csv"',
                "cache-control": "no-store",
            },
        )

    return await _page(request, page)
