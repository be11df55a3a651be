"""Reads of what Stripe holds: meter ids by event name and `event_summaries` totals (SDK, async)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import stripe


class StripeSummaries:
    """Stripe's aggregated value of a meter for a customer over a minute-aligned window."""

    def __init__(self, client: stripe.StripeClient) -> None:
        self._client = client
        self._meters: dict[str, str] = {}

    async def meter_id(self, event_name: str) -> str | None:
        """The id of the active meter for `event_name` (cached; reloaded on a miss)."""
        if event_name not in self._meters:
            page = await self._client.v1.billing.meters.list_async(
                {"status": "active", "limit": 100}
            )
            async for meter in page.auto_paging_iter():
                self._meters[meter.event_name] = meter.id
        return self._meters.get(event_name)

    async def total(
        self, event_name: str, customer: str, start: dt.datetime, end: dt.datetime
    ) -> Decimal | None:
        """The meter's aggregate over [start, end) (minute-aligned); None: no such meter."""
        meter_id = await self.meter_id(event_name)
        if meter_id is None:
            return None
        page = await self._client.v1.billing.meters.event_summaries.list_async(
            meter_id,
            {
                "customer": customer,
                "start_time": int(start.timestamp()),
                "end_time": int(end.timestamp()),
            },
        )
        total = Decimal(0)
        async for summary in page.auto_paging_iter():
            total += Decimal(str(summary.aggregated_value))
        return total
