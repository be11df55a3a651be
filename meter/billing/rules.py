"""Billing decisions that need no I/O: order safety, status transitions, dunning, entitlements.

Times are unix seconds (Stripe's unit). Everything here is unit-tested in tests/unit/billing.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

# Statuses in which the customer has (or is still owed) service.
ALLOWED_STATUSES = frozenset({"active", "trialing"})
# Statuses after which the subscription never comes back; a move into one is churn.
ENDED_STATUSES = frozenset({"canceled", "incomplete_expired"})
# Statuses of a subscription that exists in Stripe and may still bill (every other status is
# ended): a customer with one of these already has a plan.
LIVE_STATUSES = frozenset({"active", "trialing", "past_due", "paused", "unpaid", "incomplete"})
# Order of preference when a customer has several subscriptions: the one that is "the" plan.
STATUS_RANK = {
    "active": 0,
    "trialing": 1,
    "past_due": 2,
    "paused": 3,
    "unpaid": 4,
    "incomplete": 5,
    "canceled": 6,
    "incomplete_expired": 7,
}


class Order(enum.Enum):
    """What to do with an event's copy of an object, given the copy we hold."""

    APPLY = "apply"
    SKIP = "skip"
    # Same `created` second: the events' order is unknown, so ask Stripe for the current object.
    REFETCH = "refetch"


def order_decision(stored_created: int | None, event_created: int) -> Order:
    """Stripe timestamps events in whole seconds (a test clock stamps a whole advance with a
    handful of instants), so two events about one object often share `created`; only a strictly
    newer event may overwrite, and a tie is settled by the object's current state."""
    if stored_created is None or event_created > stored_created:
        return Order.APPLY
    if event_created < stored_created:
        return Order.SKIP
    return Order.REFETCH


def is_churn(old_status: str | None, new_status: str) -> bool:
    """A subscription that had been live and has now ended."""
    return (
        new_status in ENDED_STATUSES and old_status is not None and old_status not in ENDED_STATUSES
    )


def dunning_due_steps(
    failed_at: int, steps_sent: int, schedule: Sequence[float], now: int
) -> list[int]:
    """The reminder steps (indexes into `schedule`, offsets in seconds after the first failure)
    that are due at `now` and not sent yet. Missed steps are all sent, in order: a reminder that
    was due while the scheduler was down is still owed."""
    return [i for i in range(steps_sent, len(schedule)) if failed_at + schedule[i] <= now]


def grace_over(failed_at: int, grace_s: float, now: int) -> bool:
    return now >= failed_at + grace_s


class Access(enum.Enum):
    ALLOWED = "allowed"
    RESTRICTED = "restricted"


@dataclass(frozen=True, slots=True)
class AccessDecision:
    access: Access
    reason: str
    # End of the past_due grace period (unix s), when one applies.
    grace_until: int | None = None


def access_for(
    status: str | None,
    *,
    failed_at: int | None,
    restricted: bool,
    grace_s: float,
    now: int,
) -> AccessDecision:
    """Plan-aware access: active/trialing allowed; past_due allowed until the grace period after
    the first failed payment ends (or dunning restricted it); everything else restricted."""
    if status is None:
        return AccessDecision(Access.RESTRICTED, "no_subscription")
    if status in ALLOWED_STATUSES:
        return AccessDecision(Access.ALLOWED, status)
    if status == "past_due":
        # Without a recorded failure (it was missed) the grace period starts "now": never
        # restrict a customer on data we don't have.
        until = int((failed_at if failed_at is not None else now) + grace_s)
        if restricted or now >= until:
            return AccessDecision(Access.RESTRICTED, "past_due_grace_expired", until)
        return AccessDecision(Access.ALLOWED, "past_due_grace", until)
    return AccessDecision(Access.RESTRICTED, status)


# The entitlement metadata convention on products and prices (docs/integration.md).
FEATURES_KEY = "features"
LIMIT_PREFIX = "limit."


@dataclass(frozen=True, slots=True)
class Plan:
    """What a plan grants, read from product then price metadata (the price wins):
    `features` = "a,b,c" and `limit.<meter>` = a number."""

    features: tuple[str, ...] = ()
    limits: Mapping[str, Decimal] = field(default_factory=dict)


def plan_from_metadata(*metadatas: Mapping[str, str]) -> Plan:
    features: list[str] = []
    limits: dict[str, Decimal] = {}
    for md in metadatas:
        raw = md.get(FEATURES_KEY)
        if raw:
            features.extend(f.strip() for f in raw.split(",") if f.strip())
        for key, value in md.items():
            if key.startswith(LIMIT_PREFIX):
                try:
                    limits[key.removeprefix(LIMIT_PREFIX)] = Decimal(value)
                except InvalidOperation:
                    continue  # a typo in metadata must not break the endpoint
    return Plan(tuple(dict.fromkeys(features)), limits)


# Stripe meter formulas the reporter can report to: a `sum` meter adds the deltas it is sent
# (our sum and count meters), a `last` meter keeps the latest absolute value (last, max,
# unique_count). A `count` meter counts meter events and ignores their values (API reference,
# billing meter `default_aggregation.formula`), while the reporter sends one event per bucket
# that carries the bucket's whole value: 5 events would be billed as 1.
REPORTABLE_FORMULAS = frozenset({"sum", "last"})


def meter_refusal(
    meter_id: str, event_name: str, formula: str, event_window: str | None = None
) -> str | None:
    """Why meter does not report to this Stripe meter (None: it does), fix included."""
    fix = (
        f"Usage of {event_name!r} is kept and waits, unsent. Fix: create a Stripe meter for "
        f"{event_name!r} with formula 'sum' and no event_time_window (deactivate this one first, "
        "and point your prices at the new one)"
    )
    if event_window is not None:
        # "Stripe only uses the most recent meter event within the hourly or daily window"
        # (docs.stripe.com/billing/subscriptions/usage-based/recording-usage, "Event ingestion"):
        # all but the last of our deltas in a window would be dropped.
        return (
            f"Stripe meter {meter_id} ({event_name!r}) is pre-aggregated (event_time_window "
            f"{event_window!r}): Stripe keeps one event per window, and meter reports deltas. "
            f"{fix}."
        )
    if formula in REPORTABLE_FORMULAS:
        return None
    return (
        f"Stripe meter {meter_id} ({event_name!r}) aggregates with formula {formula!r}, which "
        "meter cannot report to: Stripe would count one event per reported bucket, not your "
        f"events. {fix}; to count events, define the meter as a count locally: "
        f"`meter meters define {event_name} --aggregation count --tenant <tenant>`."
    )
