"""The usage page's numbers: the ledger's records in buckets of time, split by key or model.

Pure: :func:`chart` turns usage records into series for the charts (one point per
bucket, one series per key or model) and :func:`table` into the rows behind them
(also the CSV). Time to first token is given as its median and 95th percentile
per bucket and series, of the requests that had one. The page's totals come from
the ledger's own summary (the same as ``/admin/usage``), not from these sums.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ccgate.store.records import UsageRecord

__all__ = [
    "BUCKETS",
    "MEASURES",
    "Bucket",
    "Point",
    "Range",
    "Split",
    "chart",
    "percentile",
    "table",
]

Bucket = Literal["hour", "day"]
Split = Literal["key", "model", "none"]

#: Seconds in a bucket.
BUCKETS: dict[str, int] = {"hour": 3600, "day": 86_400}

#: What the charts show: (name, label, unit).
MEASURES: tuple[tuple[str, str, str], ...] = (
    ("requests", "Requests", ""),
    ("input_tokens", "Input tokens", ""),
    ("output_tokens", "Output tokens", ""),
    ("cache_tokens", "Cache tokens (read + write)", ""),
    ("cost_usd", "Estimated cost", "$"),
    ("ttft_p50", "Time to first token, median", "ms"),
    ("ttft_p95", "Time to first token, 95th percentile", "ms"),
)


@dataclass(frozen=True, slots=True)
class Range:
    """A window of time cut in buckets: ``[since, until)``."""

    since: float
    until: float
    bucket: Bucket

    def starts(self) -> list[float]:
        """Return every bucket's start, oldest first."""
        size = BUCKETS[self.bucket]
        first = math.floor(self.since / size) * size
        return [float(t) for t in range(int(first), int(self.until), size)]

    def start_of(self, stamp: float) -> float:
        """Return the start of the bucket ``stamp`` falls in."""
        size = BUCKETS[self.bucket]
        return float(math.floor(stamp / size) * size)


@dataclass
class Point:
    """What one series counted in one bucket."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_tokens: int = 0
    cost_usd: float = 0.0
    ttfts: list[float] = field(default_factory=list)

    def add(self, record: UsageRecord) -> None:
        """Count one record."""
        self.requests += 1
        self.input_tokens += record.input_tokens
        self.output_tokens += record.output_tokens
        self.cache_tokens += record.cache_read_tokens + record.cache_creation_tokens
        self.cost_usd += record.cost_usd
        if record.ttft_ms is not None:
            self.ttfts.append(record.ttft_ms)

    def value(self, measure: str) -> float | None:
        """Return one measure (None: a TTFT with no request to measure it)."""
        if measure == "ttft_p50":
            return percentile(self.ttfts, 50)
        if measure == "ttft_p95":
            return percentile(self.ttfts, 95)
        value: float = getattr(self, measure)
        return value


def percentile(values: Sequence[float], q: float) -> float | None:
    """Return the ``q``-th percentile (nearest rank) of ``values``, or None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _grouper(split: Split, names: dict[str, str]) -> Callable[[UsageRecord], str]:
    if split == "key":
        return lambda record: names.get(record.namespace, record.namespace)
    if split == "model":
        return lambda record: record.model
    return lambda record: "all"


def _points(
    records: Iterable[UsageRecord], span: Range, split: Split, names: dict[str, str]
) -> dict[str, dict[float, Point]]:
    group = _grouper(split, names)
    points: dict[str, dict[float, Point]] = defaultdict(lambda: defaultdict(Point))
    for record in records:
        points[group(record)][span.start_of(record.created_at)].add(record)
    return points


def chart(
    records: Iterable[UsageRecord], span: Range, split: Split, names: dict[str, str]
) -> dict[str, object]:
    """Return the charts' data: bucket starts (``x``) and, per measure, one series per group.

    The shape is uPlot's: ``{"x": [...], "series": [names...], "measures": {measure:
    [[values of series 1], ...]}}``; a bucket with nothing is 0 (None for a TTFT).
    """
    points = _points(records, span, split, names)
    starts = span.starts()
    groups = sorted(points)
    measures: dict[str, list[list[float | None]]] = {}
    for measure, _, _ in MEASURES:
        empty: float | None = None if measure.startswith("ttft") else 0
        measures[measure] = [
            [points[g][t].value(measure) if t in points[g] else empty for t in starts]
            for g in groups
        ]
    return {"x": starts, "series": groups, "measures": measures}


def table(
    records: Iterable[UsageRecord], span: Range, split: Split, names: dict[str, str]
) -> list[dict[str, object]]:
    """Return the rows behind the charts: one per bucket and group that counted anything."""
    points = _points(records, span, split, names)
    rows: list[dict[str, object]] = []
    for start in span.starts():
        for group in sorted(points):
            point = points[group].get(start)
            if point is None:
                continue
            rows.append(
                {
                    "start": dt.datetime.fromtimestamp(start, dt.UTC).strftime(
                        "%Y-%m-%d %H:%M" if span.bucket == "hour" else "%Y-%m-%d"
                    ),
                    "group": group,
                    "requests": point.requests,
                    "input_tokens": point.input_tokens,
                    "output_tokens": point.output_tokens,
                    "cache_tokens": point.cache_tokens,
                    "cost_usd": round(point.cost_usd, 6),
                    "ttft_p50_ms": _round(point.value("ttft_p50")),
                    "ttft_p95_ms": _round(point.value("ttft_p95")),
                }
            )
    return rows


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
