"""The payment-provider seam: what meter asks of Stripe, with no Stripe type in it.

Objects come back as plain dicts in Stripe's documented JSON shape (the pinned API version), so
code past this seam depends on the wire format, never on the SDK's classes. Every mutating call
takes an idempotency key that the caller derives from our own record ids and the action.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# The object kinds `meter sync` copies, in this order: catalog before customers before
# subscriptions before invoices, each may refer to the previous; pending invoice items before
# invoices, whose lines say which of them an invoice took meanwhile. (Here, not in sync.py, so
# that the CLI can offer them without importing the database layer.)
ORDER = ("product", "price", "billing.meter", "customer", "subscription", "invoiceitem", "invoice")

Obj = dict[str, Any]

# Object kinds the gateway can fetch and list (Stripe's `object` names).
KINDS = ("customer", "product", "price", "billing.meter", "subscription", "invoiceitem", "invoice")


@dataclass(frozen=True, slots=True)
class Page:
    items: Sequence[Obj]
    has_more: bool


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    customer: str
    prices: Sequence[tuple[str, int | None]]
    success_url: str
    cancel_url: str | None
    client_reference_id: str
    metadata: Mapping[str, str]
    trial_days: int | None = None


@dataclass(frozen=True, slots=True)
class PlanChange:
    subscription: str
    item: str
    price: str
    quantity: int | None
    proration_behavior: str
    proration_date: int | None = None


@dataclass(frozen=True, slots=True)
class InvoicePreview:
    currency: str
    amount_due: int
    total: int
    period_start: int | None
    period_end: int | None
    lines: Sequence[Obj] = field(default_factory=tuple)


class PaymentGateway(Protocol):
    """Everything the billing module needs from a payment provider."""

    def verify_event(self, payload: bytes, signature: str | None) -> Obj:
        """The webhook event in `payload` if its signature is valid and fresh; InvalidSignature
        otherwise. A thin event notification (`object: v2.core.event`) is returned as it came:
        `fetch_event` gets the event it announces."""
        ...

    async def fetch_event(self, id_: str) -> Obj:
        """The full thin event of a verified notification (`GET /v2/core/events/{id}`)."""
        ...

    async def retrieve(self, kind: str, id_: str) -> Obj | None:
        """The current object, or None if it does not exist (deleted)."""
        ...

    async def list_page(self, kind: str, starting_after: str | None, limit: int) -> Page: ...

    async def create_customer(
        self, *, email: str | None, metadata: Mapping[str, str], idempotency_key: str
    ) -> Obj: ...

    async def create_checkout_session(self, req: CheckoutRequest, idempotency_key: str) -> Obj: ...

    async def create_portal_session(
        self, customer: str, return_url: str | None, idempotency_key: str
    ) -> Obj: ...

    async def preview_change(self, change: PlanChange) -> InvoicePreview: ...

    async def change_plan(self, change: PlanChange, idempotency_key: str) -> Obj: ...

    async def cancel(
        self,
        subscription: str,
        *,
        at_period_end: bool,
        idempotency_key: str,
        invoice_now: bool = True,
        prorate: bool = False,
    ) -> Obj:
        """Cancel now, or at the end of the current period. A cancel now with `invoice_now`
        bills the period's un-invoiced metered usage on a final invoice (Stripe's default,
        false, leaves it unbilled); `prorate` credits the unused licensed time on it."""
        ...

    async def resume(self, subscription: str, *, paused: bool, idempotency_key: str) -> Obj:
        """Undo a cancel at period end, or resume a paused subscription."""
        ...

    async def create_setup_intent(self, customer: str, idempotency_key: str) -> Obj: ...

    async def report_usage(
        self, *, event_name: str, customer: str, value: str, identifier: str, timestamp: int
    ) -> None:
        """One v1 meter event; `identifier` is Stripe's dedupe key for it."""
        ...

    async def close(self) -> None: ...
