"""Upstream accounts: what a routing decision costs, and a simulated day of three plans.

Everything runs in this process: ccgate's plan meter (``ccgate.accounts.meter.PlanMeter``)
and its routing choice (``ccgate.accounts.routing.choose``), no server, no CLI, no upstream.

1. **Routing cost.** One ``choose(candidates, meter, "sonnet", current=...)`` per request,
   with 1, 3 and 10 candidate accounts whose meter holds readings in a fixed mix (in list
   order ``allowed, rejected, warning, cooling, allowed, ...``: ``allowed`` = utilisation
   0.2-0.5, ``warning`` = 0.8-0.9 with status ``warning``, ``rejected`` = a ``rejected``
   reading of the 5-hour window (which also starts a cooldown until its reset),
   ``cooling`` = an allowed reading plus a 429 without a report, ``meter.refused``). The
   meter runs on the real clock, as in the gateway. Three kinds of conversation:

   * ``new`` -- ``current=None``: every account's verdict, then the most headroom wins;
   * ``sticky`` -- ``current`` = the last usable account of the list: it stays there;
   * ``moving`` -- ``current`` = a rejected account: the conversation has to move.

   The in-run baseline is ``min(candidates, key=priority)`` over the same list (what a
   router that knows nothing of plans would pay). Decisions are timed in blocks of
   ``BLOCK`` back-to-back calls (``time.perf_counter_ns``; one call of ``min`` is too
   short to time alone), ``choose`` and ``min`` blocks alternate, the order flipped every
   round. Printed per case: the account chosen, median and p99 over the blocks of the time
   per decision (microseconds), the same for ``min``, and the ratio of the medians.

2. **A simulated day.** Three subscription accounts, each with a scripted 5-hour window: a
   capacity in tokens, the utilisation it starts the day at, and its first reset (then
   every 5 hours; the resets are staggered). 20 keys keep ``OPEN_PER_KEY`` conversations
   open each; turns arrive at a steady random rate (a Poisson process, seeded: the script
   is deterministic), each on a random key's random open conversation; a conversation
   lasts a random number of turns and is then replaced by a new one. A turn costs a random
   number of tokens; serving it raises its account's utilisation by tokens / capacity.
   After every served turn the account's report is fed to the meter as the upstream
   reports it: ``meter.observe(account, Reading(...))`` with the 5-hour ``Window``
   (utilisation, reset time, status ``warning`` above 0.75, ``rejected`` at 1.0 or more,
   reset = the window's reset time), then ``meter.succeeded(account)``, in the order the
   gateway does (the report arrives during the turn, the success at its end). The meter's
   clock is the simulated one (``PlanMeter(clock=...)``); at the start each account gets
   one reading (``probe``).

   Two policies play the same script, each with its own meter and windows:

   * ``ccgate`` -- ``choose(candidates, meter, "sonnet", current=<the conversation's
     account or None>)``;
   * ``random`` -- the naive baseline: a random account among those the meter calls
     usable (``meter.verdict(...).usable``), chosen anew for every turn.

   A turn with no account is refused (dropped; the conversation goes on with its next
   turn). Printed per policy: turns served and refused; refusals while an account still
   had headroom by the simulated truth (utilisation under 1.0: a refusal the meter got
   wrong; 0 expected); upstream refusals (the policy chose an account whose window was in
   truth used up: 0 expected, the meter sees every report); continuing turns = served
   turns of a conversation that was already served before; moved = continuing turns
   served on another account than the conversation's previous served turn; prefix reuse =
   (continuing - moved) / continuing, the share of turns whose prompt-cache prefix (and
   warm Claude Code process) was still on their account. Then the ratio of ccgate's reuse
   to the baseline's, and per account: turns served, times it went ``rejected``, windows
   rolled over and the median utilisation a window had when it reset. Last, per policy,
   the news the meter told its ``on_change`` (what the gateway logs and sends to the
   console and the webhooks): ``warning``, ``rejected``, ``recovered``, and how many
   ``recovered`` came while the account's window was in truth still used up.

How to read it: the routing cost is microseconds against a turn that takes seconds; the
ratio says how much the plan meter costs over a plain ``min``, and grows with the number
of accounts (every candidate's verdict is read). In the day, both policies serve about
as many turns (the plans' capacity bounds them, and both skip what the meter refuses);
what differs is reuse: ccgate keeps a conversation on its account until that account is
used up, the baseline scatters it. ``--quick`` (fewer decisions, 2 simulated hours) is a
smoke test: its figures mean little.

Usage (from the project root, with the project's venv)::

    python -m bench.accounts                  # 20,000 decisions per case, 24 simulated hours
    python -m bench.accounts --decisions 50000 --hours 48 --seed 7
    python -m bench.accounts --quick          # a smoke test only
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.report import percentile, print_environment, print_table, ratio
from ccgate.accounts.meter import PlanMeter, PlanState
from ccgate.accounts.plan import WINDOW_LENGTHS, Reading, Status, Window
from ccgate.accounts.routing import Candidate, choose

FAMILY = "sonnet"
FIVE_HOURS = WINDOW_LENGTHS["five_hour"]
#: Decisions timed together: one ``min`` is too short for the timer alone.
BLOCK = 10
DEFAULT_DECISIONS = 20_000
QUICK_DECISIONS = 1_000
SIZES = (1, 3, 10)
MIX = ("allowed", "rejected", "warning", "cooling")

DEFAULT_HOURS = 24.0
QUICK_HOURS = 2.0
DEFAULT_SEED = 20_250_601
#: The day starts at 2025-06-02 00:00 UTC (the meter's reasons print dates).
DAY_START = 1_748_822_400.0
KEYS = 20
OPEN_PER_KEY = 3
TURNS_PER_HOUR = 120.0
TURNS_PER_CONVERSATION = (2, 12)
TOKENS_PER_TURN = (4_000, 30_000)
WARNING_AT = 0.75
NEWS = ("warning", "rejected", "recovered")


# --------------------------------------------------------------------------- 1. routing cost


def five_hour(utilization: float, resets_at: float, status: Status) -> Reading:
    """Return an upstream report of the 5-hour window, as Claude Code passes it on."""
    return Reading(
        observed_at=time.time(),
        source="refusal" if status == "rejected" else "answer",
        status=status,
        binding="five_hour",
        resets_at=resets_at,
        windows=(
            Window(
                "five_hour",
                utilization,
                resets_at,
                status,
                WARNING_AT if status != "allowed" else None,
            ),
        ),
    )


def routing_setup(size: int) -> tuple[list[Candidate], PlanMeter, list[str]]:
    """Return ``size`` candidates, a meter (real clock) holding their readings, their states."""
    meter = PlanMeter()
    resets_at = time.time() + 2 * 3600.0
    candidates = [Candidate(f"acct-{i:02d}", f"account {i}") for i in range(size)]
    states = [MIX[i % len(MIX)] for i in range(size)]
    for i, (candidate, state) in enumerate(zip(candidates, states, strict=True)):
        if state == "allowed":
            meter.observe(candidate.id, five_hour(0.2 + 0.03 * i, resets_at, "allowed"))
        elif state == "warning":
            meter.observe(candidate.id, five_hour(0.8 + 0.01 * i, resets_at, "warning"))
        elif state == "rejected":
            meter.observe(candidate.id, five_hour(1.0, resets_at, "rejected"))
        else:
            meter.observe(candidate.id, five_hour(0.4, resets_at, "allowed"))
            meter.refused(candidate.id, until=time.time() + 600.0, reason="429", limit="rate_limit")
    return candidates, meter, states


def time_blocks(
    work: Sequence[Callable[[], object]], blocks: int
) -> tuple[list[float], list[float]]:
    """Time ``blocks`` blocks of ``BLOCK`` calls of each of two callables, alternating.

    Return each callable's seconds per call, one value per block.
    """
    first, second = work
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(max(3, blocks // 20)):  # warm-up
        first()
        second()
    for round_ in range(blocks):
        order = (0, 1) if round_ % 2 == 0 else (1, 0)
        for which in order:
            call = work[which]
            start = time.perf_counter_ns()
            for _ in range(BLOCK):
                call()
            times[which].append((time.perf_counter_ns() - start) / BLOCK / 1e9)
    return times


@dataclass(frozen=True)
class CostRow:
    """One case of the routing cost."""

    size: int
    conversation: str
    chosen: str
    choose_s: list[float]
    min_s: list[float]


def priority(candidate: Candidate) -> int:
    """Return a candidate's priority (the baseline's key)."""
    return candidate.priority


def decisions_of(
    candidates: list[Candidate], meter: PlanMeter, current: str | None
) -> tuple[Callable[[], object], Callable[[], object]]:
    """Return one ``choose`` decision and one plain ``min`` over the same candidates."""

    def decide() -> object:
        return choose(candidates, meter, FAMILY, current=current)

    def plain() -> object:
        return min(candidates, key=priority)

    return decide, plain


def routing_cost(decisions: int) -> list[CostRow]:
    """Time ``choose`` and a plain ``min`` for every size and kind of conversation."""
    rows: list[CostRow] = []
    blocks = max(1, decisions // BLOCK)
    for size in SIZES:
        candidates, meter, states = routing_setup(size)
        usable = [c.id for c, s in zip(candidates, states, strict=True) if s in MIX[::2]]
        rejected = [c.id for c, s in zip(candidates, states, strict=True) if s == "rejected"]
        cases: list[tuple[str, str | None]] = [("new", None), ("sticky", usable[-1])]
        if rejected:
            cases.append(("moving", rejected[0]))
        for conversation, current in cases:
            choice = choose(candidates, meter, FAMILY, current=current)
            chosen = choice.account.id if choice.account else "none"
            if choice.moved:
                chosen += " (moved)"
            choose_s, min_s = time_blocks(decisions_of(candidates, meter, current), blocks)
            rows.append(CostRow(size, conversation, chosen, choose_s, min_s))
    return rows


def us(seconds: float) -> str:
    """Format seconds as microseconds."""
    return f"{seconds * 1e6:.2f}"


def print_routing_cost(rows: list[CostRow], decisions: int) -> None:
    """Print the routing-cost table."""
    print("1. routing cost: one choose() per request (microseconds per decision)")
    for size in SIZES:
        _, _, states = routing_setup(size)
        counts = ", ".join(f"{states.count(s)} {s}" for s in MIX if s in states)
        print(f"  {size} candidate(s): {counts}")
    print(f"  {decisions} decisions per case, timed in blocks of {BLOCK}; p99 is over the blocks")
    print()
    table: list[list[str]] = []
    for row in rows:
        med, p99 = statistics.median(row.choose_s), percentile(row.choose_s, 99)
        base_med, base_p99 = statistics.median(row.min_s), percentile(row.min_s, 99)
        table.append(
            [
                f"{row.size} accounts, {row.conversation}",
                row.chosen,
                us(med),
                us(p99),
                us(base_med),
                us(base_p99),
                ratio(med, base_med),
            ]
        )
    head = ["case", "chosen", "choose med", "p99", "min() med", "p99", "choose/min ratio"]
    print_table(head, table)
    print()


# --------------------------------------------------------------------------- 2. a simulated day


@dataclass(frozen=True)
class PlanScript:
    """One subscription account's scripted 5-hour window."""

    id: str
    name: str
    #: Tokens that fill the window (utilisation 0 to 1).
    capacity: float
    #: Utilisation at the start of the day (usage from before).
    start: float
    #: Seconds from the start of the day to the window's first reset (then every 5 hours).
    first_reset: float


PLANS = (
    PlanScript("max-a", "max A", 4_000_000, 0.60, 1.5 * 3600),
    PlanScript("max-b", "max B", 3_000_000, 0.35, 3.0 * 3600),
    PlanScript("pro-c", "pro C", 1_500_000, 0.10, 4.5 * 3600),
)


@dataclass(frozen=True)
class Arrival:
    """One turn of the script: when (seconds into the day), whose, and its tokens."""

    at: float
    key: int
    conversation: int
    turn: int
    tokens: int


def day_script(hours: float, seed: int) -> list[Arrival]:
    """Return the turns of the day: a steady random rate over keys and their conversations."""
    rng = random.Random(seed)
    ids = iter(range(1_000_000_000))
    # Per key, its open conversations: [id, turns played, turns it will have].
    open_: list[list[list[int]]] = [
        [[next(ids), 0, rng.randint(*TURNS_PER_CONVERSATION)] for _ in range(OPEN_PER_KEY)]
        for _ in range(KEYS)
    ]
    arrivals: list[Arrival] = []
    at = 0.0
    while True:
        at += rng.expovariate(TURNS_PER_HOUR / 3600.0)
        if at >= hours * 3600.0:
            return arrivals
        key = rng.randrange(KEYS)
        slot = rng.randrange(OPEN_PER_KEY)
        conversation = open_[key][slot]
        if conversation[1] >= conversation[2]:
            conversation = [next(ids), 0, rng.randint(*TURNS_PER_CONVERSATION)]
            open_[key][slot] = conversation
        conversation[1] += 1
        tokens = rng.randint(*TOKENS_PER_TURN)
        arrivals.append(Arrival(at, key, conversation[0], conversation[1], tokens))


@dataclass
class Truth:
    """What the upstream knows of one account's 5-hour window (the simulation's truth)."""

    plan: PlanScript
    used: float
    resets_at: float
    rejections: int = 0
    fills_at_reset: list[float] = field(default_factory=list)
    served: int = 0

    def roll(self, now: float) -> None:
        """Empty the window at each reset time up to ``now``."""
        while now >= self.resets_at:
            self.fills_at_reset.append(min(self.used, 1.0))
            self.used = 0.0
            self.resets_at += FIVE_HOURS

    @property
    def status(self) -> Status:
        """Return the window's status as the upstream reports it."""
        if self.used >= 1.0:
            return "rejected"
        return "warning" if self.used > WARNING_AT else "allowed"

    def reading(self, now: float, source: str | None = None) -> Reading:
        """Return the upstream's report of this window at ``now``."""
        status = self.status
        return Reading(
            observed_at=now,
            source=source or ("refusal" if status == "rejected" else "answer"),
            status=status,
            binding="five_hour",
            resets_at=self.resets_at,
            windows=(
                Window(
                    "five_hour",
                    round(min(self.used, 1.0), 4),
                    self.resets_at,
                    status,
                    WARNING_AT if status != "allowed" else None,
                ),
            ),
        )


class SimClock:
    """A settable clock for the meter."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


#: A policy: (candidates, meter, the conversation's account or None) -> an account or None.
Policy = Callable[[Sequence[Candidate], PlanMeter, str | None], str | None]


def ccgate_policy(
    candidates: Sequence[Candidate], meter: PlanMeter, current: str | None
) -> str | None:
    """ccgate's choice: ``routing.choose``."""
    choice = choose(candidates, meter, FAMILY, current=current)
    return choice.account.id if choice.account is not None else None


def random_policy(seed: int) -> Policy:
    """Return the naive baseline: a random usable account for every turn."""
    rng = random.Random(seed)

    def pick(candidates: Sequence[Candidate], meter: PlanMeter, current: str | None) -> str | None:
        usable = [c.id for c in candidates if meter.verdict(c.id, FAMILY).usable]
        return rng.choice(usable) if usable else None

    return pick


@dataclass
class Day:
    """What one policy made of the day."""

    policy: str
    served: int = 0
    refused: int = 0
    refused_with_headroom: int = 0
    upstream_refused: int = 0
    continuing: int = 0
    moved: int = 0
    tokens: int = 0
    decide_s: float = 0.0
    truths: dict[str, Truth] = field(default_factory=dict)
    #: What the meter told ``on_change``, by name (``warning``, ``rejected``, ``recovered``).
    news: dict[str, int] = field(default_factory=dict)
    #: ``recovered`` told while the account's window was in truth still used up.
    false_recoveries: int = 0

    def note(self, account: str, state: PlanState, news: tuple[str, ...]) -> None:
        """Count the meter's news (its ``on_change``)."""
        for item in news:
            self.news[item] = self.news.get(item, 0) + 1
            if item == "recovered" and self.truths[account].used >= 1.0:
                self.false_recoveries += 1

    @property
    def reuse(self) -> float | None:
        """Return the share of continuing turns that stayed on their account."""
        return (self.continuing - self.moved) / self.continuing if self.continuing else None


def play_day(name: str, policy: Policy, arrivals: Sequence[Arrival]) -> Day:
    """Play the script with ``policy``; return its figures."""
    clock = SimClock(DAY_START)
    day = Day(name)
    meter = PlanMeter(clock=clock, on_change=day.note)
    candidates = [Candidate(p.id, p.name) for p in PLANS]
    day.truths = {p.id: Truth(p, p.start, DAY_START + p.first_reset) for p in PLANS}
    for plan_id, truth in day.truths.items():
        meter.observe(plan_id, truth.reading(clock.now, "probe"))
    accounts: dict[int, str] = {}
    for arrival in arrivals:
        clock.now = DAY_START + arrival.at
        for truth in day.truths.values():
            truth.roll(clock.now)
        previous = accounts.get(arrival.conversation)
        start = time.perf_counter()
        account = policy(candidates, meter, previous)
        day.decide_s += time.perf_counter() - start
        if account is None:
            day.refused += 1
            if any(t.used < 1.0 for t in day.truths.values()):
                day.refused_with_headroom += 1
            continue
        truth = day.truths[account]
        if truth.used >= 1.0:  # the meter let through what the upstream refuses
            day.upstream_refused += 1
            day.refused += 1
            meter.observe(account, truth.reading(clock.now, "refusal"))
            continue
        truth.used += arrival.tokens / truth.plan.capacity
        if truth.used >= 1.0:
            truth.rejections += 1
        truth.served += 1
        # As the gateway does: the report comes during the turn, the success at its end.
        meter.observe(account, truth.reading(clock.now))
        meter.succeeded(account)
        day.served += 1
        day.tokens += arrival.tokens
        if previous is not None:
            day.continuing += 1
            if account != previous:
                day.moved += 1
        accounts[arrival.conversation] = account
    return day


def pct(value: float | None) -> str:
    """Format a share as a percentage."""
    return f"{value * 100:.1f}%" if value is not None else "-"


def print_day(days: list[Day], arrivals: list[Arrival], hours: float) -> None:
    """Print the simulated day's figures."""
    conversations = len({a.conversation for a in arrivals})
    print(f"2. a simulated day: {hours:g} hours, {len(PLANS)} subscription accounts, {KEYS} keys")
    print(
        f"  {len(arrivals)} turns ({TURNS_PER_HOUR:g}/hour, Poisson) in {conversations} "
        f"conversations ({OPEN_PER_KEY} open per key, {TURNS_PER_CONVERSATION[0]}-"
        f"{TURNS_PER_CONVERSATION[1]} turns each), {TOKENS_PER_TURN[0]}-{TOKENS_PER_TURN[1]} "
        "tokens per turn"
    )
    for plan in PLANS:
        print(
            f"  {plan.name}: {plan.capacity / 1e6:g}M tokens per 5-hour window, starts at "
            f"{plan.start:.0%}, first reset at {plan.first_reset / 3600:g} h"
        )
    print()
    head = [
        "policy",
        "served",
        "refused",
        "refused w/ headroom",
        "upstream 429",
        "continuing",
        "moved",
        "prefix reuse",
        "M tokens",
        "us/decision",
    ]
    rows = [
        [
            d.policy,
            str(d.served),
            str(d.refused),
            str(d.refused_with_headroom),
            str(d.upstream_refused),
            str(d.continuing),
            str(d.moved),
            pct(d.reuse),
            f"{d.tokens / 1e6:.1f}",
            us(d.decide_s / len(arrivals)) if arrivals else "-",
        ]
        for d in days
    ]
    print_table(head, rows)
    print()
    head = ["account", "policy", "served", "went rejected", "rollovers", "median fill at reset"]
    rows = []
    for plan in PLANS:
        for d in days:
            truth = d.truths[plan.id]
            fills = truth.fills_at_reset
            rows.append(
                [
                    plan.name,
                    d.policy,
                    str(truth.served),
                    str(truth.rejections),
                    str(len(fills)),
                    pct(statistics.median(fills)) if fills else "-",
                ]
            )
    print_table(head, rows)
    print()
    ours, naive = days
    print(
        f"prefix reuse ccgate / random: {ratio(ours.reuse, naive.reuse)} "
        f"({pct(ours.reuse)} vs {pct(naive.reuse)} of continuing turns kept their account)"
    )
    print(
        f"served ccgate / random: {ratio(ours.served, naive.served)}; refused while an account "
        f"had headroom: ccgate {ours.refused_with_headroom}, random {naive.refused_with_headroom}"
    )
    for d in days:
        told = ", ".join(f"{name} {d.news.get(name, 0)}" for name in NEWS)
        print(
            f"meter news, {d.policy}: {told} "
            f"({d.false_recoveries} recovered while the window was still used up)"
        )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse and check the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.accounts",
        description="Routing cost of choose() and a simulated day of three subscription plans.",
    )
    parser.add_argument(
        "--decisions",
        type=int,
        default=DEFAULT_DECISIONS,
        help=f"timed decisions per case (default {DEFAULT_DECISIONS})",
    )
    parser.add_argument(
        "--hours", type=float, default=DEFAULT_HOURS, help=f"simulated hours ({DEFAULT_HOURS:g})"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="the day's random seed")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke test: {QUICK_DECISIONS} decisions, {QUICK_HOURS:g} simulated hours",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.decisions, args.hours = QUICK_DECISIONS, QUICK_HOURS
    if args.decisions < BLOCK:
        parser.error(f"--decisions must be at least {BLOCK}")
    if args.hours <= 0:
        parser.error("--hours must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run both parts and print the report; return the exit code."""
    args = parse_args(argv)
    print_environment(
        [
            ("routing", f"{args.decisions} decisions per case, sizes {SIZES}, family {FAMILY}"),
            ("simulated day", f"{args.hours:g} hours, seed {args.seed}"),
        ]
    )
    rows = routing_cost(args.decisions)
    print_routing_cost(rows, args.decisions)
    arrivals = day_script(args.hours, args.seed)
    days = [
        play_day("ccgate", ccgate_policy, arrivals),
        play_day("random", random_policy(args.seed + 1), arrivals),
    ]
    print_day(days, arrivals, args.hours)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
