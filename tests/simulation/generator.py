"""Seeded scenarios for the billing simulation: who is billed for what, and what goes wrong when.

A scenario is one customer (of one tenant) with a subscription of 1-3 metered items, each on its
own meter kind and pricing model, maybe a coupon and a tax rate, and a script: `Action`s at
`Stage`s of each billing period. The runner (run.py) walks every scenario of a batch through the
same stages, period after period:

    EARLY  (once, first) usage of `early` scenarios, before their customers exist in Stripe.
    OPEN   the clock stands just before the period's end; the period's events, late events of the
           previous (finalized) period, duplicates, invalid events and voids are posted; the
           pipeline is drained; the open period is checked.
    GRACE  the clock is past the period's end, before its invoice is finalized (Stripe: about an
           hour); late events of the period are posted and drained.
    CLOSED the invoice is finalized; it is checked against the model.

Faults (kill -9, Stripe 429/5xx/lost responses, the raw log off) belong to the batch, not to one
scenario: the runner draws them per drain and per posting.

New scenario kinds plug in here: a kind is a function that takes the rng and a `Scenario` with
its base usage script and adds its own `Action` subclasses (say `Cancel(now=True)` at OPEN of
period 1); the runner's `Batch.handlers` maps each action type to a handler, which tells the
model its effect (model.py). `KINDS` lists the kinds; `--kinds` picks some.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from typing import Any, ClassVar

from tests.simulation.model import DELTA, Coupon, Price, Tax, Tier

# Our meters: event name → (our aggregation, Stripe formula, local definition?). `last` has no
# local definition on purpose: its formula must reach every tenant from the Stripe meter.
METERS: dict[str, tuple[str, str, bool]] = {
    "sim_sum": ("sum", "sum", False),
    "sim_count": ("count", "sum", True),
    "sim_max": ("max", "last", True),
    "sim_last": ("last", "last", False),
    "sim_uniq": ("unique_count", "last", True),
}
UNIQUE_PROPERTY = "user"
# Dimensions (docs/dimensions.md): sum and count meters are broken down by `model`; four values
# and `none` against a guard of 3 combinations per customer, meter and period, so that `_other`
# is used. Totals do not change with dimensions, so the model needs nothing of them.
DIMENSION_KEY = "model"
DIMENSION_VALUES = ("small", "large", "xl", "code")
DIMENSION_AGGREGATIONS = ("sum", "count")
DIMENSION_LIMIT = 3
# A scenario's own meter (a Stripe meter of its own, so that it can be deactivated alone) is named
# `<our meter><OWN><scenario index>` and behaves as `<our meter>`.
OWN = "_own"


def meter_spec(name: str) -> tuple[str, str, bool]:
    """(our aggregation, Stripe formula, local definition?) of a meter, own ones included."""
    return METERS[name.split(OWN)[0]]


TENANTS = ("sim", "sim-b", "sim-c")  # the first is METER_BILLING_TENANT
DAY = 86400


class Stage(Enum):
    EARLY = "early"  # before the customer exists in Stripe (and so in billing)
    OPEN = "open"
    GRACE = "grace"


@dataclass(frozen=True)
class Event:
    """An event as posted. `valid`: the API must accept it (else reject it, `reason`)."""

    id: str
    tenant: str
    customer: str
    meter: str
    value: Any
    timestamp: Any  # unix seconds (float) or a string
    properties: dict[str, str] | None = None
    valid: bool = True
    reason: str = ""

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "customer": self.customer,
            "meter": self.meter,
            "value": self.value,
            "timestamp": self.timestamp,
        }
        if self.properties is not None:
            out["properties"] = self.properties
        return out


@dataclass(frozen=True)
class Action:
    """Something a scenario does at (period, stage)."""

    period: int
    stage: Stage
    after_drain: ClassVar[bool] = False  # runs after the stage's last drain, not before it


@dataclass(frozen=True)
class Post(Action):
    events: tuple[Event, ...]


@dataclass(frozen=True)
class Void(Action):
    """`meter usage void` of an event posted earlier (sum/count, folded with the raw log on)."""

    event_id: str


@dataclass(frozen=True)
class Reset(Action):
    """`billing_cycle_anchor: {type: now}` on the subscription: the period ends at the clock's
    time (a minute before its planned end, at the OPEN stage) and a full one starts."""


@dataclass(frozen=True)
class Cancel(Action):
    """Cancel through meter's API (`POST …/subscription/cancel`): `now` ends the subscription
    at the clock's time with a final invoice of the period's usage (meter's default,
    `invoice_now`); else it ends at the period's end (`cancel_at_period_end`)."""

    now: bool


@dataclass(frozen=True)
class PriceChange(Action):
    """Replace the price of the item on `meter` by `price` (same meter) mid-period, after the
    period's usage so far was drained (so all of it was reported before the change)."""

    meter: str
    price: Price
    after_drain: ClassVar[bool] = True


@dataclass(frozen=True)
class MeterChange(Action):
    """Replace the price of the item on `meter` by `price` on another meter, `new`, mid-period,
    after the period's usage so far was drained."""

    meter: str
    new: str
    price: Price
    after_drain: ClassVar[bool] = True


@dataclass(frozen=True)
class AddItem(Action):
    """Add a metered item on `meter` mid-period: a meter no item of the subscription has, or
    a second item (another price) on a meter an item bills."""

    meter: str
    price: Price
    after_drain: ClassVar[bool] = True


@dataclass(frozen=True)
class RemoveItem(Action):
    """Delete the item on `meter` mid-period (Stripe's default proration behaviour), after the
    period's usage so far was drained."""

    meter: str
    after_drain: ClassVar[bool] = True


@dataclass(frozen=True)
class Pause(Action):
    """`pause_collection` with `behavior` on the subscription (Stripe API, update a
    subscription): invoices go on being made, with the amounts they would have had."""

    behavior: str


@dataclass(frozen=True)
class Resume(Action):
    """Payment collection resumed (`pause_collection` unset, Stripe API, update a
    subscription): the invoices of this period on are collected again."""


@dataclass(frozen=True)
class MeterStatus(Action):
    """The scenario's own Stripe meter of `meter` deactivated (`active` false) or reactivated
    (Stripe API, billing meters). While it is inactive meter holds its usage (docs/billing.md,
    "Meters and aggregations") and sends it on reactivation."""

    meter: str
    active: bool


@dataclass(frozen=True)
class DeleteCustomer(Action):
    """The customer's Stripe customer deleted (Stripe API, delete a customer): its
    subscription is canceled at once, with no final invoice."""


@dataclass(frozen=True)
class Return(Action):
    """The deleted customer comes back under the same external id: a new Stripe customer and
    subscription, after the stage's drain (usage of the old one drained in between)."""

    after_drain: ClassVar[bool] = True


@dataclass(frozen=True)
class Quantity(Action):
    """The licensed item's quantity changed with `proration_behavior` (`create_prorations` or
    `none`) and `proration_date` at `at` (a share of the time from the period's start to now)."""

    quantity: int
    behavior: str
    at: float


@dataclass(frozen=True)
class Seats:
    """A licensed (per-seat) item billed in advance: cents per seat and period, quantity."""

    unit: int
    quantity: int


SEATS = "seats"  # the licensed item's name in the model and the checks


@dataclass
class Item:
    meter: str
    aggregation: str
    formula: str
    price: Price

    def stripe_price(self) -> dict[str, Any]:
        """The price's parameters for `prices.create` (without product and recurring)."""
        p = self.price
        if p.kind == "per_unit":
            return {"unit_amount_decimal": str(p.unit)}
        if p.kind == "package":
            return {
                "unit_amount": int(p.unit),
                "transform_quantity": {"divide_by": p.package_size, "round": p.package_round},
            }
        tiers = [
            {
                "up_to": "inf" if t.up_to is None else int(t.up_to),
                "unit_amount_decimal": str(t.unit),
                **({"flat_amount": t.flat} if t.flat else {}),
            }
            for t in p.tiers
        ]
        return {"billing_scheme": "tiered", "tiers_mode": p.kind, "tiers": tiers}


@dataclass
class Scenario:
    index: int
    kind: str
    tenant: str
    customer: str  # our external id
    items: list[Item]
    coupon: Coupon | None
    tax: Tax | None
    actions: list[Action] = field(default_factory=list)
    features: set[str] = field(default_factory=set)
    trial_periods: int = 0  # the first periods are a trial (its end: a period boundary)
    billing_mode: str | None = None  # the subscription's `billing_mode[type]` (None: Stripe's)
    twins: list[Item] = field(default_factory=list)  # second items on meters of `items`
    second: list[Item] = field(default_factory=list)  # a second subscription's items
    seats: Seats | None = None  # a licensed item too
    dimension_values: dict[str, tuple[str | None, ...]] = field(default_factory=dict)  # meter →
    # the only dimension values its events draw (None: no key); absent: every value and none
    mappings: list[tuple[str, str, str]] = field(default_factory=list)  # (meter, value, event
    # name): the value priced on its own (docs/dimensions.md, "Pricing per dimension")

    def invoiced_periods(self, periods: int) -> int:
        """How many periods end with an invoice (a cancel ends the subscription)."""
        cancels = [a.period for a in self.actions if isinstance(a, Cancel)]
        deleted = sum(1 for a in self.actions if isinstance(a, DeleteCustomer))
        return (min(cancels) + 1 if cancels else periods) - deleted

    def describe(self) -> str:
        items = ", ".join(f"{i.meter}:{i.aggregation}/{i.price.kind}" for i in self.items)
        items += "".join(f", twin {i.meter}:{i.price.kind}" for i in self.twins)
        items += "".join(f", 2nd sub {i.meter}:{i.price.kind}" for i in self.second)
        coupon = "" if self.coupon is None else f" coupon={self.coupon.duration}"
        tax = (
            ""
            if self.tax is None
            else f" tax={self.tax.percentage}%" + (" incl" if self.tax.inclusive else "")
        )
        feats = ",".join(sorted(self.features))
        for meter, value, name in self.mappings:
            feats += f" map:{meter}[{DIMENSION_KEY}={value}]->{name}"
        if self.trial_periods:
            feats += f" trial={self.trial_periods}"
        resets = [a.period for a in self.actions if isinstance(a, Reset)]
        if resets:
            feats += f" reset@{resets}"
        if self.billing_mode:
            feats += f" mode={self.billing_mode}"
        for a in self.actions:
            if isinstance(a, PriceChange):
                feats += f" price-change@{a.period}:{a.meter}->{a.price.kind}"
            if isinstance(a, MeterChange):
                feats += f" meter-change@{a.period}:{a.meter}->{a.new}:{a.price.kind}"
            if isinstance(a, AddItem):
                feats += f" add@{a.period}:{a.meter}:{a.price.kind}"
            if isinstance(a, RemoveItem):
                feats += f" remove@{a.period}:{a.meter}"
            if isinstance(a, Pause):
                feats += f" pause-{a.behavior}@{a.period}"
            if isinstance(a, Resume):
                feats += f" resume@{a.period}"
            if isinstance(a, Quantity):
                feats += f" qty@{a.period}->{a.quantity}/{a.behavior}"
            if isinstance(a, DeleteCustomer):
                feats += f" deleted@{a.period}"
            if isinstance(a, Return):
                feats += f" back@{a.period}"
            if isinstance(a, MeterStatus):
                verb = "reactivate" if a.active else "deactivate"
                feats += f" {verb}@{a.period}{a.stage.value[0]}:{a.meter}"
            if isinstance(a, Cancel):
                feats += f" cancel{'-now' if a.now else '-at-end'}@{a.period}"
        who = f"#{self.index} {self.kind} {self.tenant}/{self.customer}"
        return f"{who} [{items}]{coupon}{tax} {feats}"


@dataclass(frozen=True)
class Frame:
    """The batch's time frame: every scenario's clock starts at `start`; periods are days.
    `now` is the real time at generation (ingest's limits are in real time)."""

    start: int
    periods: int
    now: float
    late_window_s: int

    def period(self, k: int) -> tuple[int, int]:
        return self.start + k * DAY, self.start + (k + 1) * DAY


# --------------------------------------------------------------------------- prices


def random_price(rng: random.Random) -> Price:
    kind = rng.choice(["per_unit", "graduated", "volume", "package"])
    if kind == "per_unit":
        return Price(
            kind, unit=rng.choice([Decimal("1"), Decimal("3.3"), Decimal("0.75"), Decimal(12)])
        )
    if kind == "package":
        return Price(
            kind,
            unit=Decimal(rng.choice([100, 250, 999])),
            package_size=rng.choice([5, 10, 50]),
            package_round=rng.choice(["up", "up", "down"]),
        )
    # Tiered: no flat fee on the first tier (whether Stripe charges it at zero usage is not
    # documented; the emulator does, see its README).
    first = Decimal(rng.choice([10, 25, 100]))
    tiers = (
        Tier(first, Decimal(rng.choice(["2", "1.5", "4"]))),
        Tier(first * 4, Decimal(rng.choice(["1", "0.8"])), rng.choice([0, 0, 300])),
        Tier(None, Decimal(rng.choice(["0.5", "0.25"])), rng.choice([0, 150])),
    )
    return Price(kind, tiers=tiers)


def random_coupon(rng: random.Random, once: bool) -> Coupon | None:
    roll = rng.random()
    if roll < 0.45:
        return None
    duration = rng.choice(["forever", "forever", "repeating", "once" if once else "forever"])
    if rng.random() < 0.6:
        return Coupon(duration, percent_off=Decimal(rng.choice(["10", "12.5", "25", "50"])))
    return Coupon(duration, amount_off=rng.choice([50, 300, 1234]))


def random_tax(rng: random.Random) -> Tax | None:
    if rng.random() < 0.5:
        return None
    return Tax(Decimal(rng.choice(["19", "8.875", "7", "20"])), rng.random() < 0.4)


# --------------------------------------------------------------------------- events


class EventMaker:
    """Event ids, values and timestamps for one scenario."""

    def __init__(self, rng: random.Random, seed: int, scenario: Scenario) -> None:
        self.rng = rng
        self.prefix = f"s{seed}-{scenario.index}"
        self.scenario = scenario
        self.n = 0
        self.last_seconds: dict[str, set[int]] = {}  # per meter: seconds used (`last` ties)
        self.hours: list[int] = []  # hours used so far: events cluster in some (bucket versions)

    def _id(self) -> str:
        self.n += 1
        return f"{self.prefix}-{self.n}"

    def timestamp(self, meter: str, lo: float, hi: float) -> float:
        """A time in [lo, hi) with millisecond precision; distinct seconds per `last` meter."""
        inside = [h for h in self.hours if lo <= h and h + 3600 <= hi]
        for _ in range(50):
            if inside and self.rng.random() < 0.4:
                hour = self.rng.choice(inside)
                ts = round(self.rng.uniform(hour, hour + 3599.999), 3)
            else:
                ts = round(self.rng.uniform(lo, hi - 0.001), 3)
                self.hours.append(int(ts) // 3600 * 3600)
            second = int(ts)
            if ts < hi and second not in self.last_seconds.setdefault(meter, set()):
                self.last_seconds[meter].add(second)
                return ts
        raise RuntimeError("no free second left for a last-meter event")

    def value(self, aggregation: str) -> Any:
        rng = self.rng
        if aggregation == "sum":
            return rng.choice([1, 2.5, 0.25, 10, 7, 33.3, 120])
        if aggregation in ("max", "last"):
            return rng.choice([3, 7.5, 12, 40, 0.5, 96])
        return rng.choice([1, 2, 5])

    def event(self, item: Item, lo: float, hi: float, ts: float | None = None) -> Event:
        s = self.scenario
        props = None
        if item.aggregation == "unique_count":
            props = {UNIQUE_PROPERTY: f"u{self.rng.randint(1, 6)}"}
        elif item.aggregation in DIMENSION_AGGREGATIONS:
            # One value in five left out: it counts under `none`.
            values = s.dimension_values.get(item.meter, (*DIMENSION_VALUES, None))
            model = self.rng.choice(values)
            props = None if model is None else {DIMENSION_KEY: model}
        return Event(
            self._id(),
            s.tenant,
            s.customer,
            item.meter,
            self.value(item.aggregation),
            self.timestamp(item.meter, lo, hi) if ts is None else ts,
            props,
        )

    def invalid(self, frame: Frame) -> Event:
        """An event the API must reject, with the reason it must give."""
        s = self.scenario
        item = self.rng.choice(s.items)
        lo, hi = frame.period(0)
        good = self.event(item, lo, hi)
        kind = self.rng.choice(["negative", "future", "too_late", "bad_ts", "no_customer"])
        if kind == "negative":
            return _replace(good, value=-5, valid=False, reason="invalid_value")
        if kind == "future":
            return _replace(good, timestamp=frame.now + 3600, valid=False, reason="in_future")
        if kind == "too_late":
            old = frame.now - frame.late_window_s - 7200
            return _replace(good, timestamp=old, valid=False, reason="too_late")
        if kind == "bad_ts":
            return _replace(good, timestamp="yesterday", valid=False, reason="invalid_timestamp")
        return _replace(good, customer="", valid=False, reason="missing_customer")


def _replace(event: Event, **changes: Any) -> Event:
    return dataclasses.replace(event, **changes)


# --------------------------------------------------------------------------- scenarios

# Usage mixes a scenario may draw (each independently), and batch-wide ones: `tenants`
# (customers spread over three tenants, else all in the billing tenant), `once_coupon` (coupons
# may be `once`) and `coupon_tax` (a scenario may have both a coupon and a tax rate, so each
# line's tax depends on its share of the discount).
FEATURES = ("late", "grace_late", "duplicates", "invalid", "voids", "edge_timestamps", "early")
BATCH_FEATURES = ("tenants", "once_coupon", "coupon_tax")


def usage_kind(
    rng: random.Random, scenario: Scenario, frame: Frame, seed: int, features: set[str]
) -> None:
    """The base kind: usage over every period with the drawn mixes."""
    make = EventMaker(rng, seed, scenario)
    drawn = {f for f in FEATURES if rng.random() < 0.5}
    scenario.features = drawn & features
    posted: list[tuple[int, Event]] = []  # (period, event) of valid events
    if "early" in scenario.features:
        # Usage of period 0 that arrives (and is aggregated) before the customer is known: it
        # waits unattributed and is re-attributed when the subscription is synced.
        lo, hi = frame.period(0)
        early = tuple(make.event(item, lo, hi - 120) for item in scenario.items for _ in range(2))
        scenario.actions.append(Post(0, Stage.EARLY, early))
        posted += [(0, e) for e in early]
    for k in range(frame.periods):
        lo, hi = frame.period(k)
        events: list[Event] = []
        for item in scenario.items:
            for _ in range(rng.randint(0, 6)):
                events.append(make.event(item, lo, hi - 120))
        if "edge_timestamps" in scenario.features:
            # 100 µs before the period ends: still this period (timestamps are floored).
            sums = [i for i in scenario.items if i.aggregation in ("sum", "count")]
            if sums:
                events.append(make.event(rng.choice(sums), lo, hi, ts=hi - 0.0004))
        if "late" in scenario.features and k > 0:
            plo, phi = frame.period(k - 1)
            for item in rng.sample(scenario.items, k=min(2, len(scenario.items))):
                events.append(make.event(item, plo, phi))
        if "duplicates" in scenario.features and posted:
            events += [e for _, e in rng.sample(posted, k=min(3, len(posted)))]
        if "invalid" in scenario.features:
            events.append(make.invalid(frame))
        rng.shuffle(events)
        scenario.actions.append(Post(k, Stage.OPEN, tuple(events)))
        if "voids" in scenario.features and posted:
            voidable = [e for p, e in posted if meter_spec(e.meter)[0] in ("sum", "count")]
            if voidable:
                scenario.actions.append(Void(k, Stage.OPEN, rng.choice(voidable).id))
        posted += [(k, e) for e in events if e.valid and e.id not in {x.id for _, x in posted}]
        if "grace_late" in scenario.features:
            grace = [make.event(item, lo, hi) for item in rng.sample(scenario.items, k=1)]
            scenario.actions.append(Post(k, Stage.GRACE, tuple(grace)))


RESET_LEAD_S = 60  # a reset happens this long before the period's planned end


def anchor_reset_kind(
    rng: random.Random, scenario: Scenario, frame: Frame, seed: int, features: set[str]
) -> None:
    """Usage, and a billing-cycle anchor reset at the OPEN stage of one period but the last:
    that period ends `RESET_LEAD_S` early (its invoice bills the ended part) and every later one
    starts as much earlier. No event is drawn in the last `RESET_LEAD_S` before a planned period
    end from the reset on: each hour bucket then lies inside one period of the scenario (the hour
    holding a reset is billed as a whole in the old period, docs/billing.md), and
    `edge_timestamps` (an event at the planned end) does not apply."""
    usage_kind(rng, scenario, frame, seed, features - {"edge_timestamps"})
    k = rng.randrange(frame.periods - 1)
    _drop_tails(scenario, frame, k)
    scenario.actions.append(Reset(k, Stage.OPEN))


def _drop_tails(scenario: Scenario, frame: Frame, first: int) -> None:
    """Drop the events drawn in the last `RESET_LEAD_S` before the planned end of period
    `first` and every later one."""
    tails = [
        (frame.period(j)[1] - RESET_LEAD_S, frame.period(j)[1])
        for j in range(first, frame.periods + 1)
    ]

    def kept(e: Event) -> bool:
        return not any(lo <= float(e.timestamp) < hi for lo, hi in tails) if e.valid else True

    for i, action in enumerate(scenario.actions):
        if isinstance(action, Post):
            scenario.actions[i] = dataclasses.replace(
                action, events=tuple(e for e in action.events if kept(e))
            )


def cancel_now_kind(
    rng: random.Random, scenario: Scenario, frame: Frame, seed: int, features: set[str]
) -> None:
    """Usage, and a cancel now at the OPEN stage of a period: the final invoice bills the
    period's usage up to the cancel; usage after it (posted on, as clients do) is billed
    nowhere. The period's last `RESET_LEAD_S` holds no event (as for a reset)."""
    usage_kind(rng, scenario, frame, seed, features - {"edge_timestamps"})
    k = rng.randrange(frame.periods)
    _drop_tails(scenario, frame, k)
    scenario.actions.append(Cancel(k, Stage.OPEN, now=True))


def cancel_at_end_kind(
    rng: random.Random, scenario: Scenario, frame: Frame, seed: int, features: set[str]
) -> None:
    """Usage, and a cancel at period end at the OPEN stage of a period: that period's invoice
    bills its usage and no renewal; usage after its end is billed nowhere."""
    usage_kind(rng, scenario, frame, seed, features)
    scenario.actions.append(Cancel(rng.randrange(frame.periods), Stage.OPEN, now=False))


def trial_kind(
    rng: random.Random, scenario: Scenario, frame: Frame, seed: int, features: set[str]
) -> None:
    """Usage with the first period a trial (`trial_end` at its end, so later periods keep the
    batch's boundaries): its usage is charged 0, and its late usage is billed nowhere."""
    usage_kind(rng, scenario, frame, seed, features)
    scenario.trial_periods = 1


def price_change_kind(
    rng: random.Random, scenario: Scenario, frame: Frame, seed: int, features: set[str]
) -> None:
    """Usage, and one item's price replaced by another on the same meter at the OPEN stage of
    a period but the last, in classic or flexible billing mode, after that period's usage was
    drained. Stripe bills a metered price the usage of its own window on the item: in flexible
    mode the old price's usage reported so far is invoiced at once at the old price (an invoice
    item, on the period's invoice), in classic mode it is not billed (Stripe docs,
    usage-based/manage-billing-setup, "Update prices mid-cycle"). Only usage drained before the
    change is drawn for that period (no late, grace or voided usage, no tail after the change):
    what meter does with usage of the old window reported later is its own contract."""
    usage_kind(rng, scenario, frame, seed, features & {"duplicates", "invalid"})
    k = rng.randrange(frame.periods - 1)
    _drop_tails(scenario, frame, k)
    if scenario.coupon is not None:
        scenario.tax = None  # the invoice item's line order decides tied discount shares
    scenario.billing_mode = rng.choice(["classic", "flexible"])
    item = rng.choice(scenario.items)
    scenario.actions.append(PriceChange(k, Stage.OPEN, item.meter, random_price(rng)))


def pause_collection_kind(
    rng: random.Random, scenario: Scenario, frame: Frame, seed: int, features: set[str]
) -> None:
    """Usage, and payment collection paused with `mark_uncollectible` at the OPEN stage of a
    period: "invoices continue to generate" and are marked uncollectible instead of being
    charged (Stripe docs, billing/subscriptions/pause-payment): every invoice's amounts are
    the model's as before. (`void` and `keep_as_draft` are not drawn: not covered yet.)"""
    usage_kind(rng, scenario, frame, seed, features)
    k = rng.randrange(frame.periods)
    scenario.actions.append(Pause(k, Stage.OPEN, "mark_uncollectible"))


def _drop_meter(scenario: Scenario, meter: str, lo: float, hi: float) -> None:
    """Drop the valid events of `meter` timestamped in [lo, hi)."""

    def kept(e: Event) -> bool:
        return not (e.valid and e.meter == meter and lo <= float(e.timestamp) < hi)

    for i, action in enumerate(scenario.actions):
        if isinstance(action, Post):
            scenario.actions[i] = dataclasses.replace(
                action, events=tuple(e for e in action.events if kept(e))
            )


def _new_item(rng: random.Random, scenario: Scenario) -> Item | None:
    """An item on a meter none of the scenario's items has (None: every meter is taken)."""
    free = sorted(set(METERS) - {i.meter for i in scenario.items})
    if not free:
        return None
    meter = rng.choice(free)
    return Item(meter, METERS[meter][0], METERS[meter][1], random_price(rng))


def _usage_with(
    rng: random.Random, scenario: Scenario, frame: Frame, seed: int, features: set[str],
    extra: Item | None,
) -> None:  # fmt: skip
    """Usage of the scenario's items and of `extra` (an item it gains later), with `features`
    limited to `duplicates` and `invalid`: only usage drained before a change of its period is
    drawn (no late, grace or voided usage, no `early`), as for `price_change`."""
    base = list(scenario.items)
    scenario.items = base + ([extra] if extra is not None else [])
    usage_kind(rng, scenario, frame, seed, features & {"duplicates", "invalid"})
    scenario.items = base


def _late_of_window(
    rng: random.Random, scenario: Scenario, frame: Frame, seed: int, item: Item, k: int
) -> None:
    """Usage of `item` timestamped in period `k` before a change at its OPEN stage that takes
    its price off, posted after it: in the grace hour (the period's invoice still a draft) and
    at the next OPEN stage (finalized). Stripe bills it on no invoice either way: in flexible
    mode the invoice item billed the usage reported before the change ("previously reported"),
    in classic mode the window bills nothing (docs.stripe.com/billing/subscriptions/usage-based/
    manage-billing-setup, "Update prices mid-cycle"); nor does another item bill its meter."""
    make = EventMaker(rng, seed, scenario)
    make.prefix += "-w"  # ids apart from the base usage's
    lo, hi = frame.period(k)
    for stage, period in ((Stage.GRACE, k), (Stage.OPEN, k + 1)):
        count = rng.randint(1, 2)
        events = tuple(make.event(item, lo, hi - 2 * RESET_LEAD_S) for _ in range(count))
        scenario.actions.append(Post(period, stage, events))


def meter_change_kind(
    rng: random.Random, scenario: Scenario, frame: Frame, seed: int, features: set[str]
) -> None:
    """Usage, and one item's price replaced by a price on another meter at the OPEN stage of a
    period but the last, after that period's usage was drained, in classic or flexible billing
    mode. The old price is billed as in `price_change` (an invoice item of its usage so far in
    flexible mode, nothing in classic); the new price bills the new meter's usage from the
    change on (docs.stripe.com/billing/subscriptions/usage-based/manage-billing-setup, "Update
    prices mid-cycle"). The old meter's usage goes on being posted after the change: no item
    bills it any more, so it is billed nowhere; so is its usage of the old window posted after
    the change (`_late_of_window`). The new meter's usage is posted from the next period on.
    Otherwise limits as for `price_change`."""
    new = _new_item(rng, scenario)
    _usage_with(rng, scenario, frame, seed, features, new)
    k = rng.randrange(frame.periods - 1)
    _drop_tails(scenario, frame, k)
    if scenario.coupon is not None:
        scenario.tax = None  # the invoice item's line order decides tied discount shares
    scenario.billing_mode = rng.choice(["classic", "flexible"])
    if new is None:  # every meter taken (not drawn with at most 3 items of 5 meters)
        return
    _drop_meter(scenario, new.meter, frame.start, frame.period(k + 1)[0])
    old = rng.choice(scenario.items)
    scenario.actions.append(MeterChange(k, Stage.OPEN, old.meter, new.meter, new.price))
    _late_of_window(rng, scenario, frame, seed, old, k)


def items_added_removed_kind(
    rng: random.Random, scenario: Scenario, frame: Frame, seed: int, features: set[str]
) -> None:
    """Usage, an item added and an item deleted, each at the OPEN stage of a period but the
    last (maybe the same), after that period's usage was drained; classic or flexible billing
    mode. The added item bills its meter's usage from its creation (its meter's usage is
    posted from the next period on); the deleted one's price is taken off as in `price_change`
    (flexible: an invoice item of its usage so far; classic: nothing; Stripe docs, usage-based/
    manage-billing-setup, "Update prices mid-cycle") and its meter's usage, posted on, is billed
    nowhere, as is its usage of its last window posted after the deletion (`_late_of_window`).
    The added item is sometimes a second one on a delta meter of another item, at another price.
    A one-item scenario gets a second item first, so one is left. Otherwise limits as for
    `price_change`."""
    if len(scenario.items) == 1:
        second = _new_item(rng, scenario)
        assert second is not None
        scenario.items.append(second)
    removed = rng.choice(scenario.items)
    # Sometimes the added item is a second one on a delta meter an item already bills: it bills
    # that meter's usage from its creation too. Not on an absolute meter: its first window
    # starts at the add, overlapping the other item's with other bounds, which Stripe's one
    # `last` value cannot bill exactly (docs/billing.md, "Absolute meters billed by several
    # items"; meter counts and logs it).
    sharable = [i for i in scenario.items if i.aggregation in DELTA and i != removed]
    added: Item | None
    if sharable and rng.random() < 0.4:
        first = rng.choice(sharable)
        price = random_price(rng)
        while price == first.price:
            price = random_price(rng)
        added, extra = Item(first.meter, first.aggregation, first.formula, price), None
    else:
        added = extra = _new_item(rng, scenario)
    _usage_with(rng, scenario, frame, seed, features, extra)
    k_add, k_remove = rng.randrange(frame.periods - 1), rng.randrange(frame.periods - 1)
    _drop_tails(scenario, frame, min(k_add, k_remove))
    if scenario.coupon is not None:
        scenario.tax = None  # the invoice item's line order decides tied discount shares
    scenario.billing_mode = rng.choice(["classic", "flexible"])
    scenario.actions.append(RemoveItem(k_remove, Stage.OPEN, removed.meter))
    _late_of_window(rng, scenario, frame, seed, removed, k_remove)
    if extra is not None:
        _drop_meter(scenario, extra.meter, frame.start, frame.period(k_add + 1)[0])
    if added is not None:
        scenario.actions.append(AddItem(k_add, Stage.OPEN, added.meter, added.price))


def _shared(rng: random.Random, scenario: Scenario) -> Item:
    """The item whose meter a second item shares (the same window: same subscription or same
    clock): any item, on a delta or an absolute meter. An absolute meter's lines bill the
    customer's one `last` value, which meter sends as the union of every item's usage of the
    window (docs/billing.md, "Absolute meters billed by several items")."""
    return rng.choice(scenario.items)


def shared_meter_kind(
    rng: random.Random, scenario: Scenario, frame: Frame, seed: int, features: set[str]
) -> None:
    """Usage, with a second item of the subscription on the meter of one of its items, at
    another price: a meter event names a customer and a meter, never an item, and every item
    with a price on the meter bills the customer's usage of it (API reference, billing meter
    events and meters), so each of the two lines bills all of it. No coupon with a tax rate
    (two lines of one meter could tie for a discount share)."""
    first = _shared(rng, scenario)
    usage_kind(rng, scenario, frame, seed, features)
    price = random_price(rng)
    while price == first.price:
        price = random_price(rng)
    scenario.twins.append(Item(first.meter, first.aggregation, first.formula, price))
    if scenario.coupon is not None:
        scenario.tax = None


def two_subscriptions_kind(
    rng: random.Random, scenario: Scenario, frame: Frame, seed: int, features: set[str]
) -> None:
    """Usage, with the customer on a second subscription (same clock, so the same periods)
    whose one item is on the meter of one of the first's items, at another price, without
    coupon or tax: a meter event counts on every item with a price on its meter, of either
    subscription (API reference, billing meter events and meters), so each subscription's
    invoice bills the meter's usage (meter's checkout allows this with
    `additional_subscription`, docs/api.md)."""
    first = _shared(rng, scenario)
    usage_kind(rng, scenario, frame, seed, features)
    price = random_price(rng)
    while price == first.price:
        price = random_price(rng)
    scenario.second.append(Item(first.meter, first.aggregation, first.formula, price))


def pause_void_kind(
    rng: random.Random, scenario: Scenario, frame: Frame, seed: int, features: set[str]
) -> None:
    """Usage, and payment collection paused with `void` at the OPEN stage of a period, maybe
    resumed at the OPEN stage of a later one: the invoice of each period that ends while paused
    is voided at its creation (Stripe docs, billing/subscriptions/pause-payment: services "for
    free"). Usage of a voided period reported after the void is billed nowhere (docs/billing.md,
    "Late usage"); a paid period's late usage carried into a voided one is on that invoice.
    No `once` coupon (which invoice uses one up when the first is voided is not documented)."""
    usage_kind(rng, scenario, frame, seed, features)
    if scenario.coupon is not None and scenario.coupon.duration == "once":
        scenario.coupon = None
    k = rng.randrange(frame.periods)
    scenario.actions.append(Pause(k, Stage.OPEN, "void"))
    if k + 1 < frame.periods and rng.random() < 0.6:
        scenario.actions.append(Resume(rng.randrange(k + 1, frame.periods), Stage.OPEN))


def pause_draft_kind(
    rng: random.Random, scenario: Scenario, frame: Frame, seed: int, features: set[str]
) -> None:
    """Usage, and payment collection paused with `keep_as_draft` at the OPEN stage of a period:
    each later invoice stays a draft (`auto_advance` false, Stripe docs, billing/subscriptions/
    pause-payment) until the merchant finalizes it, which the run does at the CLOSED stage, an
    hour after the period's end (so the period's grace-hour usage is on it, as on a cycle
    invoice: "During finalization, Stripe updates the invoice to reflect the latest quantity")."""
    usage_kind(rng, scenario, frame, seed, features)
    scenario.actions.append(Pause(rng.randrange(frame.periods), Stage.OPEN, "keep_as_draft"))


def meter_deactivation_kind(
    rng: random.Random, scenario: Scenario, frame: Frame, seed: int, features: set[str]
) -> None:
    """Usage on Stripe meters of the scenario's own; one of them deactivated at the OPEN stage
    of a period (after its first posting round was drained) and reactivated at its GRACE stage
    (before the invoice is finalized: the held usage is billed in its own period) or at the OPEN
    stage of the next one (after: held delta usage is carried into the open period, an absolute
    value billed nowhere, as late usage)."""
    for item in scenario.items:
        item.meter = f"{item.meter}{OWN}{scenario.index}"
    usage_kind(rng, scenario, frame, seed, features)
    k = rng.randrange(frame.periods)
    meter = rng.choice(scenario.items).meter
    scenario.actions.append(MeterStatus(k, Stage.OPEN, meter, active=False))
    if rng.random() < 0.5:
        scenario.actions.append(MeterStatus(k, Stage.GRACE, meter, active=True))
    else:
        scenario.actions.append(MeterStatus(k + 1, Stage.OPEN, meter, active=True))


def deleted_customer_kind(
    rng: random.Random, scenario: Scenario, frame: Frame, seed: int, features: set[str]
) -> None:
    """Usage, and the customer's Stripe customer deleted at the OPEN stage of a period (its
    subscription canceled at once, uninvoiced: Stripe API reference, delete a customer), the
    stage's usage drained, then the customer back under the same external id with a new Stripe
    customer and subscription starting then (its periods move as after an anchor reset). The
    deleted customer's usage reported after the deletion is billed nowhere (not sent to the new
    customer); usage after the return is billed to the new one. The period's last
    `RESET_LEAD_S` holds no event (as for a reset)."""
    usage_kind(rng, scenario, frame, seed, features - {"edge_timestamps"})
    k = rng.randrange(frame.periods)
    _drop_tails(scenario, frame, k)
    scenario.actions.append(DeleteCustomer(k, Stage.OPEN))
    scenario.actions.append(Return(k, Stage.OPEN))


def quantity_change_kind(
    rng: random.Random, scenario: Scenario, frame: Frame, seed: int, features: set[str]
) -> None:
    """Usage, and a licensed (per-seat) item whose quantity changes at the OPEN stage of one or
    two periods, with `create_prorations` (mostly) or `none` and a `proration_date` inside the
    period: Stripe prorates the change to the second (model.py). No coupon or tax: how Stripe
    shares a discount with, and taxes, a negative proration line is not modelled."""
    usage_kind(rng, scenario, frame, seed, features)
    scenario.coupon, scenario.tax = None, None
    quantity = rng.randint(1, 5)
    scenario.seats = Seats(rng.choice([500, 999, 1234, 2500]), quantity)
    for k in sorted(rng.sample(range(frame.periods), k=rng.randint(1, 2))):
        quantity = rng.choice([q for q in range(1, 9) if q != quantity])
        behavior = rng.choice(["create_prorations", "create_prorations", "none"])
        at = round(rng.uniform(0.05, 0.95), 3)
        scenario.actions.append(Quantity(k, Stage.OPEN, quantity, behavior, at))


def priced_dimensions_kind(
    rng: random.Random, scenario: Scenario, frame: Frame, seed: int, features: set[str]
) -> None:
    """Usage, with one sum item on a meter of the scenario's own (so its mappings touch no other
    customer: mappings are per tenant and meter) broken down by `model`, and one or two of its
    model values priced on their own (docs/dimensions.md, "Pricing per dimension"): per value a
    Stripe meter `<meter>_<value>` (formula sum) with a metered price on it, both on the
    subscription right after the meter's own price, and meter told with `meter meters map`.
    The mapped value's usage is billed by its price, the rest (the other value, events without
    a model) by the meter's own. The meter's events draw from two model values and none, 3
    combinations: never more than the guard admits (`DIMENSION_LIMIT`), so nothing is folded
    into `_other`, whose admissions depend on the arrival order across shards. No usage carried
    into a later period (`late`, `voids`: a void drained after its event's invoice is carried
    too) and no count meter: those are `priced_dimensions_carried`. No tax with a coupon (two
    lines could tie for a discount share)."""
    _priced_dimensions(rng, scenario, frame, seed, features - {"late", "voids"}, ("sum",))


def priced_dimensions_carried_kind(
    rng: random.Random, scenario: Scenario, frame: Frame, seed: int, features: set[str]
) -> None:
    """As `priced_dimensions`, on a sum or count meter and with every usage mix: late usage and
    voids carried into the open period, and a count meter's mapped value (counted events sent
    to a Stripe sum meter)."""
    _priced_dimensions(rng, scenario, frame, seed, features, DIMENSION_AGGREGATIONS)


def _priced_dimensions(
    rng: random.Random, scenario: Scenario, frame: Frame, seed: int, features: set[str],
    aggregations: tuple[str, ...],
) -> None:  # fmt: skip
    delta = [i for i in scenario.items if i.aggregation in aggregations]
    if delta:
        item = rng.choice(delta)
    else:  # the first item becomes one on such a meter (any other is of another aggregation)
        meter = rng.choice(sorted(m for m in METERS if METERS[m][0] in aggregations))
        item = Item(meter, METERS[meter][0], METERS[meter][1], random_price(rng))
        scenario.items[0] = item
    item.meter = f"{item.meter}{OWN}{scenario.index}"
    values = rng.sample(DIMENSION_VALUES, k=2)
    scenario.dimension_values[item.meter] = (*values, None)
    usage_kind(rng, scenario, frame, seed, features)
    at = scenario.items.index(item) + 1
    for value in reversed(values[: rng.randint(1, 2)]):
        name = f"{item.meter}_{value}"
        price = random_price(rng)
        scenario.items.insert(at, Item(name, item.aggregation, "sum", price))
        scenario.mappings.insert(0, (item.meter, value, name))
    if scenario.coupon is not None:
        scenario.tax = None


Kind = Callable[[random.Random, Scenario, Frame, int, set[str]], None]
KINDS: dict[str, Kind] = {
    "usage": usage_kind,
    "anchor_reset": anchor_reset_kind,
    "trial": trial_kind,
    "cancel_now": cancel_now_kind,
    "cancel_at_end": cancel_at_end_kind,
    "price_change": price_change_kind,
    "pause_collection": pause_collection_kind,
    "meter_change": meter_change_kind,
    "items_added_removed": items_added_removed_kind,
    "shared_meter": shared_meter_kind,
    "two_subscriptions": two_subscriptions_kind,
    "pause_void": pause_void_kind,
    "pause_draft": pause_draft_kind,
    "meter_deactivation": meter_deactivation_kind,
    "deleted_customer": deleted_customer_kind,
    "quantity_change": quantity_change_kind,
    "priced_dimensions": priced_dimensions_kind,
    "priced_dimensions_carried": priced_dimensions_carried_kind,
}


def generate(
    seed: int,
    count: int,
    frame: Frame,
    *,
    kinds: tuple[str, ...] = ("usage",),
    features: set[str] | None = None,
    first_index: int = 0,
) -> list[Scenario]:
    """`count` scenarios, the same for the same arguments."""
    rng = random.Random(seed)
    wanted = set(FEATURES + BATCH_FEATURES) if features is None else features
    out: list[Scenario] = []
    used: dict[str, set[str]] = {t: set() for t in TENANTS}
    for i in range(first_index, first_index + count):
        tenant = rng.choice(TENANTS) if "tenants" in wanted else TENANTS[0]
        # Sometimes the same external id as a customer of another tenant: tenants are apart.
        others = sorted({c for t, cs in used.items() if t != tenant for c in cs} - used[tenant])
        customer = rng.choice(others) if others and rng.random() < 0.3 else f"c{i}"
        used[tenant].add(customer)
        meters = rng.sample(sorted(METERS), k=rng.randint(1, 3))
        items = [Item(m, METERS[m][0], METERS[m][1], random_price(rng)) for m in meters]
        coupon = random_coupon(rng, "once_coupon" in wanted)
        kind = rng.choice(kinds)
        tax = random_tax(rng)
        if coupon is not None and "coupon_tax" not in wanted:
            tax = None
        scenario = Scenario(i, kind, tenant, customer, items, coupon, tax)
        KINDS[scenario.kind](rng, scenario, frame, seed, wanted)
        out.append(scenario)
    return out
