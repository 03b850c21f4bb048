"""The admin and usage APIs on the wire: key and account bodies, their objects, usage queries.

Pure: no I/O (the routes and the commands read and change the stores).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, field_validator

from ccgate.accounts.meter import PlanMeter
from ccgate.accounts.routing import Candidate, Order, choose
from ccgate.errors import InvalidRequest
from ccgate.store.records import COUNTS, AccountRecord, KeyRecord, Quota, UsageSummary

__all__ = [
    "LIMIT_MAX",
    "PRIORITY_MAX",
    "PRIORITY_MIN",
    "AccountCreate",
    "AccountUpdate",
    "KeyCreate",
    "KeyUpdate",
    "QuotaBody",
    "TIME_SCHEMA",
    "account_object",
    "accounts_list",
    "key_object",
    "parse_expiry",
    "parse_time",
    "usage_object",
]


#: An account's base URL: http(s), a host, an optional path (no query, fragment or spaces).
BASE_URL_PATTERN = r"^https?://[^\s/?#]+(/[^\s?#]*)?$"

#: The largest limit a quota takes (2**53: every JSON client reads it exactly).
LIMIT_MAX = 2**53


class QuotaBody(BaseModel):
    """A key's limits; a field left out (or null) means no limit."""

    model_config = ConfigDict(extra="forbid", strict=True)

    # Strict: true/false or "5" are not numbers of requests. The bound keeps a limit
    # exact in every JSON client and within the database's 64-bit integers.
    requests_per_minute: StrictInt | None = Field(None, ge=0, le=LIMIT_MAX)
    requests_per_day: StrictInt | None = Field(None, ge=0, le=LIMIT_MAX)
    tokens_per_day: StrictInt | None = Field(None, ge=0, le=LIMIT_MAX)
    budget_usd_per_month: StrictInt | StrictFloat | None = Field(None, ge=0, le=LIMIT_MAX)
    max_concurrent: StrictInt | None = Field(None, ge=0, le=LIMIT_MAX)
    #: The share of each account's 5-hour window the key may use once it runs low.
    plan_share: StrictInt | StrictFloat | None = Field(None, ge=0, le=1)

    @field_validator("budget_usd_per_month", "plan_share")
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

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "name": "ci-bot",
                    "quota": {"requests_per_day": 1000, "budget_usd_per_month": 20},
                    "models": ["sonnet"],
                    "expires_at": "2099-12-31",
                }
            ]
        },
    )

    name: str = Field(min_length=1, max_length=200)
    quota: QuotaBody | None = None
    models: list[str] | None = Field(None, max_length=100)
    expires_at: float | str | None = None


class KeyUpdate(BaseModel):
    """The body of ``PATCH /admin/keys/{id}``: only the fields given change."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str | None = Field(None, min_length=1, max_length=200)
    quota: QuotaBody | None = None
    models: list[str] | None = Field(None, max_length=100)
    disabled: bool | None = None
    expires_at: float | str | None = None


#: The priorities an upstream account takes (a lower number goes first).
PRIORITY_MIN = -1_000_000
PRIORITY_MAX = 1_000_000
#: How a secret is described in the OpenAPI document (never echoed back).
_SECRET_SCHEMA: dict[str, Any] = {"format": "password", "writeOnly": True}
_SECRET_TEXT = (
    "The credential: an OAuth token from `claude setup-token` (oauth_token) or an Anthropic "
    "API key (api_key); none for a login. Stored encrypted, shown only as a hint."
)


class AccountCreate(BaseModel):
    """The body of ``POST /admin/accounts``."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"name": "team-max", "kind": "oauth_token", "secret": "sk-ant-oat01-..."},
                {"name": "fallback", "kind": "api_key", "secret": "sk-ant-api03-..."},
            ]
        },
    )

    name: str = Field(min_length=1, max_length=64)
    kind: Literal["login", "oauth_token", "api_key"]
    secret: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        repr=False,
        description=_SECRET_TEXT,
        json_schema_extra=_SECRET_SCHEMA,
    )
    base_url: str | None = Field(None, max_length=2048, pattern=BASE_URL_PATTERN)
    #: Default: 0, or 100 for an API key (a fallback behind the subscriptions).
    priority: StrictInt | None = Field(None, ge=PRIORITY_MIN, le=PRIORITY_MAX)
    enabled: bool = True


class AccountUpdate(BaseModel):
    """The body of ``PATCH /admin/accounts/{id_or_name}``: only the fields given change."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str | None = Field(None, min_length=1, max_length=64)
    priority: StrictInt | None = Field(None, ge=PRIORITY_MIN, le=PRIORITY_MAX)
    enabled: bool | None = None
    #: ``null`` or ``""``: no base URL of its own (the ``upstream_url`` setting's).
    base_url: str | None = Field(None, max_length=2048, pattern=BASE_URL_PATTERN)
    secret: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        repr=False,
        description=_SECRET_TEXT,
        json_schema_extra=_SECRET_SCHEMA,
    )


class AccountSource(Protocol):
    """What the account objects are made from (``accounts.manager.Accounts``)."""

    @property
    def meter(self) -> PlanMeter:
        """The plan meter of the accounts."""
        ...

    def records(self) -> list[AccountRecord]:
        """Return every account, lowest priority number first."""
        ...

    def view(self, record: AccountRecord) -> dict[str, Any]:
        """Return what is shown of one account (never its secret)."""
        ...


def account_object(view: dict[str, Any]) -> dict[str, Any]:
    """Return an upstream account as the admin API shows it (``Accounts.view``; no secret)."""
    return {"id": view["id"], "object": "upstream_account", **view}


def accounts_list(
    accounts: AccountSource,
    *,
    order: Order,
    allow_extra_usage: bool,
    routed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return every account with a summary: how many can serve, and where a new
    conversation would go now (``routed``: the router's counters, when one runs)."""
    records = accounts.records()
    views = [accounts.view(r) for r in records]
    enabled = [r for r in records if r.enabled]
    choice = choose(
        [Candidate(r.id, r.name, r.priority) for r in enabled], accounts.meter, None, order=order
    )
    usable = [v for v in views if v["available"]]
    return {
        "object": "list",
        "data": [account_object(v) for v in views],
        "summary": {
            "accounts": len(views),
            "enabled": len(enabled),
            "available": len(usable),
            "cooling": len(enabled) - len(usable),
            "headroom": max((v["headroom"] for v in usable), default=0.0),
            # Where a new conversation goes now; when none can take it, why, and when the
            # first account frees up.
            "next_account": choice.account.name if choice.account is not None else None,
            # The next account only cools down for a reason not of its plan (a rate limit,
            # credentials, billing): with none better it is tried, and its answer returned.
            "last_resort": choice.last_resort,
            "unavailable_reason": choice.reason or None,
            "next_available_at": choice.until,
            "routing": order,
            "allow_extra_usage": allow_extra_usage,
            "routed": routed,
        },
    }


#: Unix seconds of 10000-01-01T00:00:00Z: no later time can be written as a date.
_LATEST = 253_402_300_800.0
_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?")
#: The times ``since``/``until`` accept, as a JSON Schema (for the OpenAPI document).
TIME_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "string", "format": "date"},
        {"type": "string", "pattern": "^[0-9]{1,11}(\\.[0-9]{1,6})?$"},
        {"type": "string", "maxLength": 0},
    ],
    "description": "Unix seconds, or an ISO 8601 date or date-time (UTC unless it says); "
    "empty or left out: no bound.",
}


def parse_time(value: float | str | None, param: str) -> float | None:
    """Return Unix seconds from Unix seconds or an ISO 8601 date/time (UTC unless it says).

    Seconds must lie between 1970 and the year 9999; a date may be any from year 1.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str) and not _NUMBER.fullmatch(value.strip()):
        try:
            return _iso(value)
        except (ValueError, OverflowError):
            raise InvalidRequest(
                f"{param} must be Unix seconds or an ISO 8601 date or time, "
                f"like 2026-12-31 or 2026-12-31T18:00:00Z; got {value[:40]!r}",
                param=param,
            ) from None
    seconds = float(value)
    if not (math.isfinite(seconds) and 0 <= seconds < _LATEST):
        raise InvalidRequest(
            f"{param} must be Unix seconds between 0 (1970) and {_LATEST:.0f} (the year "
            f"10000), or an ISO 8601 date or time; got {str(value)[:40]}",
            param=param,
        )
    return seconds


def parse_expiry(value: float | str | None, param: str, *, now: float) -> float | None:
    """Return a key's expiry; a time that has already passed would make a dead key: refused."""
    stamp = parse_time(value, param)
    if stamp is not None and stamp <= now:
        when = datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S")
        raise InvalidRequest(
            f"{param} is in the past ({when} UTC): the key would be expired from the start. "
            "Give a later time (Unix seconds or ISO 8601), or null for a key that does not "
            "expire; to stop a key now, disable or revoke it",
            param=param,
            code="expiry_in_past",
        )
    return stamp


def _iso(value: str) -> float:
    text = value.strip().upper().replace("Z", "+00:00")
    parsed = datetime.fromisoformat(text)
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
