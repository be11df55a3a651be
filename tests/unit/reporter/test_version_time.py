"""Versions of an absolute unit (a max/last/unique_count period) never share a second.

Stripe's `last` keeps the latest event's value and does not say which of two events of one
second it keeps, so the oracle here is the strictest reading: a tie may go either way, and
arrival order may be any. The reporter must end at the latest version under every choice.
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from reporter.plan import (
    NO_SECOND_LEFT,
    STRIPE_AHEAD_USED,
    Mark,
    Planned,
    Unit,
    no_second_left,
    plan,
    version_time,
    whole_second,
)

S = dt.timedelta(seconds=1)
START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
END = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
NOW = dt.datetime(2026, 11, 20, 12, 0, 0, 500_000, tzinfo=dt.UTC)


def period_unit(version: int, value: int, last_at: dt.datetime) -> Unit:
    return Unit(
        tenant="acme",
        customer="cus_1",
        meter="peak",
        item="si_1",
        unit="period",
        unit_start=START,
        period_start=START,
        version=version,
        value=Decimal(value),
        absolute=True,
        timestamp=last_at,
    )


def stripe_last(rows: list[tuple[dt.datetime, Decimal]], rng: random.Random) -> Decimal:
    """Stripe's `last` as documented: the latest second's value; a tie goes either way."""
    latest = max(whole_second(t) for t, _ in rows)
    return rng.choice([v for t, v in rows if whole_second(t) == latest])


def test_a_version_sharing_its_second_is_stamped_one_second_later() -> None:
    # A `max` meter: a late event with a bigger value but an earlier timestamp keeps last_at.
    last_at = NOW - dt.timedelta(minutes=2, microseconds=300_000)
    first = plan(
        period_unit(1, 5, last_at), None, closed=False, target=None, now=NOW, period_end=END
    )
    assert first is not None
    assert first.event_time == whole_second(last_at)
    second = plan(
        period_unit(2, 9, last_at), first.mark, closed=False, target=None, now=NOW, period_end=END
    )
    assert second is not None
    assert second.status == "pending"
    assert second.event_time == whole_second(last_at) + S
    assert second.mark == Mark(2, Decimal(9), whole_second(last_at) + S)


def test_a_burst_past_the_allowed_second_is_deferred_then_fits() -> None:
    cap = whole_second(NOW + STRIPE_AHEAD_USED)
    mark = Mark(1, Decimal(5), cap)
    held = plan(period_unit(2, 9, NOW), mark, closed=False, target=None, now=NOW, period_end=END)
    assert held is not None
    assert held.status == "deferred"
    assert held.identifier is None
    assert held.mark == mark  # the build keeps the old mark: the version is planned again
    later = plan(
        period_unit(2, 9, NOW), mark, closed=False, target=None, now=NOW + S, period_end=END
    )
    assert later is not None
    assert later.event_time == cap + S


def test_the_period_end_is_never_crossed_and_a_full_period_is_recorded() -> None:
    in_grace = END + dt.timedelta(minutes=10)
    last = END - S
    assert (
        version_time(last - S, last - S, period_start=START, period_end=END, now=in_grace) == last
    )
    assert version_time(last, last, period_start=START, period_end=END, now=in_grace) is None
    assert no_second_left(last, END)
    assert not no_second_left(last - S, END)
    mark = Mark(1, Decimal(5), last)
    full = plan(
        period_unit(2, 9, last), mark, closed=False, target=None, now=in_grace, period_end=END
    )
    assert full is not None
    assert (full.status, full.note, full.value, full.identifier is not None) == (
        "late",
        NO_SECOND_LEFT,
        9,
        True,
    )
    assert full.mark.version == 2  # recorded once, visibly; not planned again


@given(
    st.lists(
        st.tuples(
            st.integers(0, 50),  # value of the version
            st.integers(-300, 0),  # its last_at, seconds from now (earlier events may arrive)
            st.integers(0, 3),  # seconds our clock moves before the build
            st.integers(0, 999_999),  # microseconds of last_at
        ),
        min_size=1,
        max_size=40,
    ),
    st.integers(0, 2**32),
)
def test_stripe_ends_at_the_latest_version_whatever_its_tie_break(
    versions: list[tuple[int, int, int, int]], seed: int
) -> None:
    rng = random.Random(seed)
    now = NOW
    mark: Mark | None = None
    sent: list[tuple[dt.datetime, Decimal]] = []
    latest_value: Decimal | None = None
    last_at = START

    def build(version: int, value: int) -> Planned | None:
        return plan(
            period_unit(version, value, last_at),
            mark,
            closed=False,
            target=None,
            now=now,
            period_end=END,
        )

    for version, (value, back, tick, micro) in enumerate(versions, start=1):
        now += dt.timedelta(seconds=tick)
        last_at = max(last_at, now + dt.timedelta(seconds=back, microseconds=micro) - S)
        p = build(version, value)
        assert p is not None
        if p.status == "deferred":
            continue
        if p.identifier is not None:
            assert p.status == "pending"
            assert p.event_time is not None
            t = p.event_time
            assert t == whole_second(t)
            assert START <= t < END
            assert t <= now + STRIPE_AHEAD_USED
            assert not sent or t > sent[-1][0]  # strictly after every earlier row
            sent.append((t, p.value))
        mark = p.mark
        latest_value = Decimal(value)
    # Time moves on: the version last built fits, once, at a later second.
    for _ in range(int(STRIPE_AHEAD_USED / S) + 2):
        if mark is not None and mark.version == len(versions):
            break
        now += S
        p = build(len(versions), versions[-1][0])
        assert p is not None
        if p.status != "deferred":
            if p.identifier is not None:
                assert p.event_time is not None
                sent.append((p.event_time, p.value))
            mark = p.mark
            latest_value = Decimal(versions[-1][0])
    assert mark is not None
    assert mark.version == len(versions)
    # Arrival order and tie-break are Stripe's: any will do.
    rng.shuffle(sent)
    if sent:
        assert stripe_last(sent, rng) == latest_value
