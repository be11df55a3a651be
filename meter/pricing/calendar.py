"""Month arithmetic on Unix timestamps, as Stripe does it for periods and repeating coupons."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime


def add_months(timestamp: int, months: int) -> int:
    """`timestamp` plus whole calendar months in UTC; a day the target month lacks is clamped to
    its last day (Jan 31 + 1 month = Feb 28/29), as Stripe anchors monthly billing periods."""
    when = datetime.fromtimestamp(timestamp, UTC)
    index = when.month - 1 + months
    year, month = when.year + index // 12, index % 12 + 1
    day = min(when.day, calendar.monthrange(year, month)[1])
    return int(when.replace(year=year, month=month, day=day).timestamp())
