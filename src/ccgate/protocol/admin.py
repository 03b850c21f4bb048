"""The admin and usage APIs on the wire: key bodies, key objects, usage queries (pure, no I/O)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, field_validator

from ccgate.errors import InvalidRequest
from ccgate.store.keys import KeyRecord, Quota
from ccgate.store.usage import COUNTS, UsageSummary

__all__ = [
    "KeyCreate",
    "KeyUpdate",
    "QuotaBody",
    "key_object",
    "parse_time",
    "usage_object",
]


class QuotaBody(BaseModel):
    """A key's limits; a field left out (or null) means no limit."""

    model_config = ConfigDict(extra="forbid")

    # Strict: true/false or "5" are not numbers of requests.
    requests_per_minute: StrictInt | None = Field(None, ge=0)
    requests_per_day: StrictInt | None = Field(None, ge=0)
    tokens_per_day: StrictInt | None = Field(None, ge=0)
    budget_usd_per_month: StrictInt | StrictFloat | None = Field(None, ge=0)
    max_concurrent: StrictInt | None = Field(None, ge=0)

    @field_validator("budget_usd_per_month")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return None if value is None else float(value)

    def to_quota(self) -> Quota:
        """Return the stored form."""
        return Quota(**self.model_dump())


class KeyCreate(BaseModel):
    """The body of ``POST /admin/keys``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    quota: QuotaBody | None = None
    models: list[str] | None = Field(None, max_length=100)
    expires_at: float | str | None = None


class KeyUpdate(BaseModel):
    """The body of ``PATCH /admin/keys/{id}``: only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    quota: QuotaBody | None = None
    models: list[str] | None = Field(None, max_length=100)
    disabled: bool | None = None
    expires_at: float | str | None = None


def parse_time(value: float | str | None, param: str) -> float | None:
    """Return Unix seconds from Unix seconds or an ISO 8601 date/time (UTC unless it says)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise InvalidRequest(f"{param} must be a time after 1970", param=param)
        return float(value)
    try:
        return float(value) if value.replace(".", "", 1).isdigit() else _iso(value)
    except ValueError:
        raise InvalidRequest(
            f"{param} must be Unix seconds or an ISO 8601 date or time, "
            f"like 2026-12-31 or 2026-12-31T18:00:00Z; got {value[:40]!r}",
            param=param,
        ) from None


def _iso(value: str) -> float:
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _stamp(value: float | None) -> int | None:
    return int(value) if value is not None else None


def key_object(record: KeyRecord, raw: str | None = None) -> dict[str, Any]:
    """Return a key as the admin API shows it; the raw key only when it was just made."""
    body: dict[str, Any] = {
        "id": record.id,
        "object": "api_key",
        "name": record.name,
        "preview": record.preview,
        "quota": record.quota.as_dict(),
        "models": list(record.models) if record.models is not None else None,
        "created_at": _stamp(record.created_at),
        "expires_at": _stamp(record.expires_at),
        "disabled": record.disabled,
        "revoked_at": _stamp(record.revoked_at),
        "last_used_at": _stamp(record.last_used_at),
    }
    if raw is not None:
        body = {"id": record.id, "key": raw, **{k: v for k, v in body.items() if k != "id"}}
    return body


def usage_object(
    rows: list[UsageSummary], group_by: str, since: float | None, until: float | None
) -> dict[str, Any]:
    """Return usage summaries with their totals."""
    totals: dict[str, Any] = {f: sum(getattr(r, f) for r in rows) for f in COUNTS}
    totals["cost_usd"] = float(round(sum(r.cost_usd for r in rows), 6))
    return {
        "object": "usage",
        "group_by": group_by,
        "since": _stamp(since),
        "until": _stamp(until),
        "data": [r.as_dict() for r in rows],
        "totals": totals,
    }
