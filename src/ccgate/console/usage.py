"""The usage page: charts by day or hour, split by key or model, the table behind them as
CSV; the totals are the ledger's own summary."""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
from dataclasses import replace

from fastapi import APIRouter, Request
from starlette.responses import Response

from ccgate.access.signins import Viewer
from ccgate.console import series
from ccgate.console.view import PREFIX, render
from ccgate.console.web import day_start, gateway_of, namespace_of, namespaces, signed_in
from ccgate.gateway import Gateway
from ccgate.store.records import UsageRecord
from ccgate.store.usage import GroupBy

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


#: The ranges the usage page offers, in days.
RANGES = (1, 7, 30, 90)
#: Records the charts read at most (the totals come from the ledger's summary, always whole).
RECORDS_MAX = 200_000


def _usage_query(request: Request, viewer: Viewer) -> tuple[series.Range, series.Split, int]:
    """Read the usage page's choices: a range of days (or from one date to another, at
    most a year), per hour or day (hours over at most 7 days), split by key or model."""
    params = request.query_params
    days = _choice(params.get("days"), RANGES, 7)
    split: series.Split = "model"
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
        until = day_start() + 86_400  # whole UTC days, today included
        since = until - days * 86_400
    bucket: series.Bucket = "hour" if params.get("bucket") == "hour" and days <= 7 else "day"
    if bucket == "hour" and until > time.time():
        until = series.Range(since, time.time(), "hour").start_of(time.time()) + 3600
    return series.Range(since, until, bucket), split, days


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
    gateway: Gateway, viewer: Viewer, span: series.Range, split: series.Split
) -> tuple[list[UsageRecord], dict[str, str], bool]:
    names = await namespaces(gateway, viewer)
    records = await gateway.ledger.between(
        namespace_of(viewer), since=span.since, until=span.until, limit=RECORDS_MAX
    )
    return records, names, len(records) >= RECORDS_MAX


@router.get(f"{PREFIX}/usage")
async def usage_page(request: Request) -> Response:
    """Requests, tokens, cost and time to first token over time, by key or model."""

    async def page(request: Request, viewer: Viewer) -> Response:
        gateway = gateway_of(request)
        span, split, days = _usage_query(request, viewer)
        records, names, cut = await _usage_data(gateway, viewer, span, split)
        group_by: GroupBy = "key" if split == "key" else "model"
        totals = await gateway.ledger.summarize(
            namespace_of(viewer), since=span.since, until=span.until, group_by=group_by
        )
        if group_by == "key":
            totals = [replace(t, group=names.get(t.group, t.group)) for t in totals]
        data = series.chart(records, span, split, names)
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
                "rows": series.table(records, span, split, names),
                "data": data,
                "measures": series.MEASURES,
                "cut": cut,
                "query": request.url.query,
            },
        )

    return await signed_in(request, page)


@router.get(f"{PREFIX}/usage.csv")
async def usage_csv(request: Request) -> Response:
    """The table behind the usage charts, as CSV."""

    async def page(request: Request, viewer: Viewer) -> Response:
        gateway = gateway_of(request)
        span, split, _ = _usage_query(request, viewer)
        records, names, _ = await _usage_data(gateway, viewer, span, split)
        rows = series.table(records, span, split, names)
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

    return await signed_in(request, page)
