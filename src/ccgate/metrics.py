"""Prometheus metrics of one gateway, in a registry of its own (``prometheus-client``).

Counters and histograms are fed by the accounting of every answered request;
gauges (turns running, queued, waiting for tools, CLI processes, cached
answers) are read from the gateway when ``/metrics`` is scraped. Key names
become a ``key`` label only with ``metrics_per_key`` on; a key itself never
appears.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["Counters", "Gauges", "Metrics"]

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)


@dataclass
class Counters:
    """Plain request counters shown by ``/health`` and ``/metrics``."""

    requests: int = 0
    errors: int = 0
    turns_finished: int = 0
    turns_failed: int = 0


@dataclass(frozen=True, slots=True)
class AccountGauge:
    """One upstream account as ``/metrics`` shows it (by name; never its credential)."""

    name: str
    available: bool
    #: Each reported window: ``(utilisation 0-1 or None, reset as unix seconds or None)``.
    windows: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    #: When its cooldown ends (unix seconds; 0 when it has none).
    cooldown_until: float = 0.0
    #: Turns the router started on it.
    turns: int = 0


@dataclass(frozen=True, slots=True)
class Gauges:
    """What the gateway is doing right now, and its plain counters."""

    active: int
    queued: int
    waiting_for_tools: int
    cli_processes: int
    cached_answers: int
    turns_finished: int
    turns_failed: int
    #: The runner's ``pool_status()``: what it keeps warm and what that did.
    pool: dict[str, object] = field(default_factory=dict)
    #: The upstream accounts, and what the router did: moved, failovers, refused.
    accounts: tuple[AccountGauge, ...] = ()
    routing: dict[str, int] = field(default_factory=dict)


class _Live(Collector):
    def __init__(self, read: Callable[[], Gauges]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        g = self._read()
        for name, help_text, value in (
            ("ccgate_turns_active", "Turns holding a slot.", g.active),
            ("ccgate_turns_queued", "Requests waiting for a slot.", g.queued),
            (
                "ccgate_turns_waiting_for_tools",
                "Turns waiting for the client's tool results.",
                g.waiting_for_tools,
            ),
            ("ccgate_cli_processes", "Live Claude Code processes.", g.cli_processes),
            ("ccgate_cache_entries", "Answers in the response cache.", g.cached_answers),
        ):
            yield GaugeMetricFamily(name, help_text, value=value)
        yield CounterMetricFamily(
            "ccgate_turns_finished", "Turns that finished.", value=g.turns_finished
        )
        yield CounterMetricFamily("ccgate_turns_failed", "Turns that failed.", value=g.turns_failed)
        yield from _pool_metrics(g.pool)
        yield from _account_metrics(g.accounts, g.routing)


def _account_metrics(
    accounts: tuple[AccountGauge, ...], routing: dict[str, int]
) -> Iterator[Metric]:
    if not accounts:
        return
    available = GaugeMetricFamily(
        "ccgate_account_available",
        "1 when the upstream account can take a request now, else 0.",
        labels=["account"],
    )
    used = GaugeMetricFamily(
        "ccgate_account_plan_utilization",
        "How full each reported window of the account's plan is (0-1).",
        labels=["account", "window"],
    )
    resets = GaugeMetricFamily(
        "ccgate_account_plan_resets_at_seconds",
        "When each reported window of the account's plan resets (unix time).",
        labels=["account", "window"],
    )
    cooling = GaugeMetricFamily(
        "ccgate_account_cooldown_until_seconds",
        "When the account's cooldown ends (unix time; 0 when it has none).",
        labels=["account"],
    )
    turns = CounterMetricFamily(
        "ccgate_account_turns", "Turns started on each account.", labels=["account"]
    )
    for account in accounts:
        available.add_metric([account.name], 1.0 if account.available else 0.0)
        cooling.add_metric([account.name], account.cooldown_until)
        turns.add_metric([account.name], float(account.turns))
        for window, (utilization, reset) in account.windows.items():
            if utilization is not None:
                used.add_metric([account.name, window], utilization)
            if reset is not None:
                resets.add_metric([account.name, window], reset)
    yield from (available, used, resets, cooling, turns)
    for name, help_text in (
        ("moved", "Conversations that moved to another account."),
        ("failovers", "Turns refused by an account and run again on another."),
        ("refused", "Turns no account could take (429 plan_limit)."),
    ):
        yield CounterMetricFamily(
            f"ccgate_account_{name}", help_text, value=float(routing.get(name, 0))
        )


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def _pool_metrics(pool: dict[str, object]) -> Iterator[Metric]:
    if not pool:
        return
    idle = GaugeMetricFamily(
        "ccgate_pool_processes", "Idle Claude Code processes kept alive, by kind.", labels=["kind"]
    )
    idle.add_metric(["spare"], _number(pool.get("spares")))
    idle.add_metric(["spare_starting"], _number(pool.get("spares_starting")))
    idle.add_metric(["conversation"], _number(pool.get("warm_idle")))
    yield idle
    yield GaugeMetricFamily(
        "ccgate_pool_memory_bytes",
        "Memory held by idle Claude Code processes (their private resident memory).",
        value=_number(pool.get("idle_memory_mb")) * 1024 * 1024,
    )
    hits = CounterMetricFamily(
        "ccgate_pool_hits",
        "Turns that ran on a running process: their conversation's, or a spare.",
        labels=["source"],
    )
    hits.add_metric(["conversation"], _number(pool.get("hits_conversation")))
    hits.add_metric(["pool"], _number(pool.get("hits_pool")))
    yield hits
    yield CounterMetricFamily(
        "ccgate_pool_misses",
        "Turns that had to start a process.",
        value=_number(pool.get("misses")),
    )
    evictions = CounterMetricFamily(
        "ccgate_pool_evictions", "Idle processes ended by ccgate, by reason.", labels=["reason"]
    )
    reasons = pool.get("evictions")
    for reason, count in reasons.items() if isinstance(reasons, dict) else ():
        evictions.add_metric([str(reason)], _number(count))
    yield evictions


class Metrics:
    """The gateway's metrics; ``observe`` one answered request, ``render`` for ``/metrics``."""

    def __init__(self, read: Callable[[], Gauges], *, per_key: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._per_key = per_key
        key = ("key",) if per_key else ()
        self._requests = Counter(
            "ccgate_requests",
            "Requests answered, by endpoint, model, status and whether the cache answered.",
            ("endpoint", "model", "status", "cached", *key),
            registry=self.registry,
        )
        self._tokens = Counter(
            "ccgate_tokens",
            "Tokens used, by model and kind (input, output, cache_read, cache_creation).",
            ("model", "kind", *key),
            registry=self.registry,
        )
        self._cost = Counter(
            "ccgate_cost_usd",
            "Cost in USD, from the tokens at the price table's prices.",
            ("model", *key),
            registry=self.registry,
        )
        self._cache = Counter(
            "ccgate_cache_lookups",
            "Response cache lookups, by result (hit, miss, bypass, shared).",
            ("result",),
            registry=self.registry,
        )
        self._ttft = Histogram(
            "ccgate_time_to_first_token_seconds",
            "Time from a request's arrival to its first output.",
            ("endpoint", "model"),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._duration = Histogram(
            "ccgate_turn_duration_seconds",
            "Time from a request's arrival to the end of its answer.",
            ("endpoint", "model"),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Live(read))

    def observe(
        self,
        *,
        endpoint: str,
        model: str,
        status: str,
        cached: bool,
        key_name: str,
        tokens: dict[str, int],
        cost_usd: float,
        ttft_s: float | None,
        duration_s: float,
    ) -> None:
        """Count one answered request."""
        key = (key_name,) if self._per_key else ()
        self._requests.labels(endpoint, model, status, str(cached).lower(), *key).inc()
        for kind, count in tokens.items():
            if count:
                self._tokens.labels(model, kind, *key).inc(count)
        if cost_usd:
            self._cost.labels(model, *key).inc(cost_usd)
        if ttft_s is not None:
            self._ttft.labels(endpoint, model).observe(ttft_s)
        self._duration.labels(endpoint, model).observe(duration_s)

    def refused(self, *, endpoint: str, model: str, status: str, key_name: str) -> None:
        """Count a request refused before it was admitted (a quota reached)."""
        key = (key_name,) if self._per_key else ()
        self._requests.labels(endpoint, model, status, "false", *key).inc()

    def cache_lookup(self, result: str) -> None:
        """Count a response cache lookup."""
        self._cache.labels(result).inc()

    def render(self) -> bytes:
        """Return the exposition text."""
        return generate_latest(self.registry)
