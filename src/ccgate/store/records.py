"""The records the stores keep, as plain data: no database, no I/O.

The stores (``store.keys``, ``store.usage``, ``store.loops``,
``store.sessions``) read and write them; the wire protocols render them
without importing anything that touches a database.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "COUNTS",
    "AccountRecord",
    "ConsoleSession",
    "KeyRecord",
    "LoopRecord",
    "Quota",
    "RequestRecord",
    "SessionRecord",
    "UsageRecord",
    "UsageSummary",
]


@dataclass(frozen=True, slots=True)
class Quota:
    """A key's limits; ``None`` means no limit."""

    requests_per_minute: int | None = None
    requests_per_day: int | None = None
    tokens_per_day: int | None = None
    budget_usd_per_month: float | None = None
    max_concurrent: int | None = None
    #: The share (0-1) of each account's 5-hour window the key may use once it runs low.
    plan_share: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the limits that are set."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Quota:
        """Return the quota a stored or given mapping describes (unknown keys ignored)."""
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in raw.items() if k in names})


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One stored API key (never the key itself)."""

    id: str
    name: str
    key_hash: str
    preview: str
    quota: Quota = field(default_factory=Quota)
    models: tuple[str, ...] | None = None
    created_at: float = 0.0
    expires_at: float | None = None
    disabled: bool = False
    revoked_at: float | None = None
    last_used_at: float | None = None


#: The whole-number totals of a :class:`UsageSummary` (its cost is the other total).
COUNTS = (
    "requests",
    "cached_requests",
    "failed_requests",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
)


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """What one request spent, and how it went."""

    namespace: str
    endpoint: str
    model: str
    status: str
    duration_ms: float
    session_key: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    cost_usd: float = 0.0
    ttft_ms: float | None = None
    cached: bool = False
    created_at: float = 0.0
    #: The upstream account the request ran on (``None``: it ran on none).
    account: str | None = None

    @property
    def tokens(self) -> int:
        """Return every token the request used."""
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_creation_tokens
        )


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """The totals of one group of usage records."""

    group: str
    requests: int
    cached_requests: int
    failed_requests: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    cost_usd: float

    def as_dict(self) -> dict[str, Any]:
        """Return the summary as plain data."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class LoopRecord:
    """One stored loop."""

    id: str
    namespace: str
    title: str
    metadata: dict[str, Any]
    permission_mode: str
    model: str
    session_id: str
    created_at: float
    archived_at: float | None = None
    last_turn_at: float | None = None
    turns: int = 0


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """An idempotent message: its body's hash, its turn and the events recorded for it."""

    namespace: str
    key: str
    loop_id: str
    request_hash: str
    turn_id: str
    events: list[dict[str, Any]]
    done: bool
    created_at: float


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One stored conversation session."""

    id: str
    namespace: str
    key: str
    model: str
    cli_session_id: str
    created_at: float
    last_used_at: float
    turns: int
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A browser signed in to the console (its cookie holds a token; this is stored by hash)."""

    token_hash: str
    #: ``admin`` (the admin key), ``shared`` (the shared key), ``client`` (a client key)
    #: or ``local`` (auth_mode=none).
    role: str
    namespace: str
    key_id: str | None
    name: str
    #: The token every state-changing form and request carries.
    csrf: str
    created_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class AccountRecord:
    """One upstream account; ``secret`` is the credential as stored (encrypted), never shown."""

    id: str
    name: str
    #: ``login``, ``oauth_token`` or ``api_key``.
    kind: str
    secret: str | None = None
    #: What identifies the credential to a person (its first and last characters).
    secret_hint: str | None = None
    base_url: str | None = None
    priority: int = 0
    enabled: bool = True
    #: ``stored`` (added by a person) or ``settings`` (ccgate's own credential setting).
    source: str = "stored"
    #: The plan meter's state (JSON-ready).
    plan: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
