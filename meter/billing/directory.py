"""The reporter's `CustomerDirectory` on billing's customers table.

An event names a customer by our external id or by its Stripe `cus_` id; both resolve to the
Stripe id of a live (not deleted) customer of the same tenant. A `cus_` id billing has not synced
yet is still a Stripe id (DESIGN: events may name Stripe customers directly). Other unknown names
are left out: their usage waits in the rollups until the customer is synced.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from meter.billing import queries
from meter.billing.convert import STRIPE_CUSTOMER_PREFIX
from meter.core.ports import Conn


class BillingDirectory:
    async def stripe_customer_ids(
        self, conn: Conn, tenant: str, customers: Collection[str]
    ) -> Mapping[str, str]:
        rows = await conn.fetch(queries.STRIPE_IDS_OF_CUSTOMERS, tenant, list(customers))
        found: dict[str, str] = {}
        for row in rows:
            for name in (row["external_id"], row["stripe_id"]):
                if name in customers:
                    found[name] = row["stripe_id"]
        for name in customers:
            if name not in found and name.startswith(STRIPE_CUSTOMER_PREFIX):
                found[name] = name
        return found
