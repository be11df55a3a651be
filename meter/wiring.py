"""Where the aggregator, the reporter and billing meet: the one place that chooses each port's
implementation (meter/core/ports.py) for the processes (`meter serve`, `meter aggregate`,
`meter report`, `meter sync`, `meter dev`). The three packages never import each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI registers its commands before any of their dependencies load
    from meter.core.ports import Attributor, CustomerDirectory, SubtractEvent, UsageUpkeep


def attributor() -> Attributor:
    """The aggregator's billing periods: billing's subscription item periods."""
    from meter.billing.attribution import PostgresAttributor

    return PostgresAttributor()


def customer_directory() -> CustomerDirectory:
    """The reporter's Stripe customer ids: billing's customers."""
    from meter.billing.directory import BillingDirectory

    return BillingDirectory()


def usage_upkeep(dimension_limit: int | None = None) -> UsageUpkeep:
    """Billing's changes to folded usage: the aggregator's cut moves and re-attribution (whose
    cardinality guard is METER_DIMENSION_COMBINATIONS, `dimension_limit`; None: its default)."""
    from aggregator.upkeep import AggregatorUpkeep
    from meter.dimensions import DEFAULT_MAX_COMBINATIONS

    limit = DEFAULT_MAX_COMBINATIONS if dimension_limit is None else dimension_limit
    return AggregatorUpkeep(attributor(), limit)


def subtract_event() -> SubtractEvent:
    """A void's subtraction from the buckets and totals: the aggregator's, which owns them."""
    from aggregator.subtract import subtract_event as aggregator_subtract

    return aggregator_subtract
