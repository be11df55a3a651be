"""Folding usage: rollup buckets (already summed per item and meter by SQL) plus events that are
accepted but not aggregated yet, into the quantity a meter's aggregation reports. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from meter.events import UsageEvent

ZERO = Decimal(0)
AGGREGATIONS = ("sum", "count", "max", "last", "unique_count")


@dataclass(slots=True)
class Tally:
    """The state of every aggregation over some buckets and events, as a bucket keeps it, so the
    meter's aggregation is picked only at the end (`quantity`)."""

    events: int = 0
    total: Decimal = ZERO
    maximum: Decimal | None = None
    last: Decimal | None = None
    last_key: tuple[int, str] | None = None  # (event time ms, event id) of `last`
    unique: int = 0
    pending: int = 0
    # Delta usage (sum and count meters) the reporter carried into this period from an invoiced
    # one (positive), or out of this one (negative): billed where it was carried.
    carried: Decimal = ZERO
    # Events and their values since the trailing window's start (pricing.trailing_start), for
    # the run-rate projection of sum and count meters.
    recent_events: int = 0
    recent_total: Decimal = ZERO

    def add_rollups(self, row: Any) -> None:
        """Add one row of `queries.ITEM_SNAPSHOT` (a running total) or `USAGE_BY_METER`."""
        self.events += int(row["event_count"])
        self.total += row["value_sum"]
        self.unique += int(row["unique_count"])
        self._max(row["value_max"])
        self.add_last(row)

    def add_recent(self, row: Any) -> None:
        """Add the buckets of the trailing window (`recent_count`, `recent_sum`); their usage is
        already in the running total."""
        self.recent_events += int(row["recent_count"])
        self.recent_total += row["recent_sum"]

    def add_carried(self, value: Decimal) -> None:
        """Add usage carried into (positive) or out of (negative) the period."""
        self.carried += value

    def add_last(self, row: Any) -> None:
        """Add the latest event of some buckets (`last_value`, `last_at`, `last_event_id`)."""
        at_ms = int(row["last_at"].timestamp() * 1000)
        self._last(row["last_value"], (at_ms, row["last_event_id"]))

    def add_event(self, event: UsageEvent, recent_since_ms: int | None = None) -> None:
        """Fold one pending event exactly as the aggregator would (unique values excepted: whether
        a value is new to the period is known only to Postgres, see `report`); it is recent if
        at or after `recent_since_ms`."""
        value = Decimal(event.value)
        if recent_since_ms is not None and event.timestamp_ms >= recent_since_ms:
            self.recent_events += 1
            self.recent_total += value
        self.events += 1
        self.pending += 1
        self.total += value
        self._max(value)
        self._last(value, (event.timestamp_ms, event.id))

    def merge(self, other: Tally) -> None:
        """Add another tally's buckets and events (distinct values are summed: exact only when
        the two never saw the same value)."""
        self.events += other.events
        self.pending += other.pending
        self.total += other.total
        self.unique += other.unique
        self.carried += other.carried
        self.recent_events += other.recent_events
        self.recent_total += other.recent_total
        if other.maximum is not None:
            self._max(other.maximum)
        if other.last is not None and other.last_key is not None:
            self._last(other.last, other.last_key)

    def as_counts(self) -> Tally:
        """This tally's event counts as the values of a sum: a count meter's usage as the
        reporter sends it to a Stripe sum meter of a price mapping (one per event; carried
        usage is counts already)."""
        return Tally(
            events=self.events,
            total=Decimal(self.events),
            pending=self.pending,
            carried=self.carried,
            recent_events=self.recent_events,
            recent_total=Decimal(self.recent_events),
        )

    def _max(self, value: Decimal) -> None:
        if self.maximum is None or value > self.maximum:
            self.maximum = value

    def _last(self, value: Decimal, key: tuple[int, str]) -> None:
        if self.last_key is None or key > self.last_key:
            self.last, self.last_key = value, key

    def quantity(self, aggregation: str) -> Decimal:
        """The quantity the meter reports: sum, count, max, last or unique_count."""
        if aggregation == "count":
            return Decimal(self.events) + self.carried
        if aggregation == "max":
            return self.maximum or ZERO
        if aggregation == "last":
            return self.last or ZERO
        if aggregation == "unique_count":
            return Decimal(self.unique)
        return self.total + self.carried

    def recent(self, aggregation: str) -> Decimal | None:
        """The usage of the trailing window, for a sum or count meter (None otherwise: a distinct
        count has no per-window part here, and gauges hold their value)."""
        if aggregation == "count":
            return Decimal(self.recent_events)
        if aggregation == "sum":
            return self.recent_total
        return None
