"""`PaymentGateway` on Stripe: the official SDK's `StripeClient`, async methods only.

SDK errors are translated here into the MeteringError hierarchy; nothing Stripe-typed leaves.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import orjson
import stripe

from meter.billing.errors import (
    Conflict,
    GatewayError,
    InvalidSignature,
    NotFound,
    PaymentRequired,
)
from meter.billing.gateway import CheckoutRequest, InvoicePreview, Obj, Page, PlanChange
from meter.config import Settings, check_stripe_api_version
from meter.errors import InvalidRequest, Unavailable
from meter.stripe_client import stripe_client

log = logging.getLogger(__name__)

# What a stored subscription needs expanded: its discounts with their coupons' terms, and its
# items' prices with their tiers (Stripe leaves a price's `tiers` out unless expanded:
# https://docs.stripe.com/api/prices/object#price_object-tiers). Four levels, Stripe's maximum
# (https://docs.stripe.com/api/expanding_objects), so a list of subscriptions cannot ask for
# the tiers (`data.items.data.price.tiers` is five): `meter sync` lists the prices first.
DISCOUNTS = "discounts.source.coupon"
ITEM_TIERS = "items.data.price.tiers"
SUBSCRIPTION_EXPAND = [DISCOUNTS, ITEM_TIERS]
# What each kind needs expanded when retrieved.
_RETRIEVE_EXPAND = {"subscription": SUBSCRIPTION_EXPAND, "price": ["tiers"]}
# Stripe's own default; a longer window would accept replayed deliveries.
WEBHOOK_TOLERANCE_S = 300


def webhook_secrets(setting: str | None) -> tuple[str, ...]:
    """STRIPE_WEBHOOK_SECRET: one signing secret, or several separated by commas (the webhook
    endpoint's and the event destination's)."""
    return tuple(s.strip() for s in (setting or "").split(",") if s.strip())


T = TypeVar("T")


def _dict(obj: Any) -> Obj:
    data: Obj = obj.to_dict(recursive=True)
    return data


def translate(exc: stripe.StripeError) -> Exception:
    """A Stripe SDK error as the MeteringError our API answers with."""
    message = exc.user_message or str(exc) or type(exc).__name__
    param = getattr(exc, "param", None)
    if isinstance(exc, stripe.CardError):
        return PaymentRequired(message, param=param)
    if isinstance(exc, stripe.RateLimitError):
        return Unavailable("the payment provider is rate limiting us; retry shortly", retry_after=2)
    if isinstance(exc, stripe.APIConnectionError):
        return Unavailable("the payment provider cannot be reached; retry shortly", retry_after=2)
    if isinstance(exc, stripe.IdempotencyError):
        return Conflict(message)
    if isinstance(exc, stripe.InvalidRequestError):
        if exc.http_status == 404 or exc.code == "resource_missing":
            return NotFound(message, param=param)
        return InvalidRequest(message, param=param)
    return GatewayError(f"payment provider error: {message}")


async def _call(fn: Callable[[], Awaitable[T]]) -> T:
    try:
        return await fn()
    except stripe.StripeError as exc:
        log.warning(
            "stripe request failed",
            extra={"error": type(exc).__name__, "code": exc.code, "status": exc.http_status},
        )
        raise translate(exc) from None


class StripeGateway:
    """The Stripe implementation of `PaymentGateway`."""

    def __init__(self, api_key: str, webhook_secret: str | None, settings: Settings) -> None:
        check_stripe_api_version(stripe.api_version)
        self._http = stripe.AIOHTTPClient(timeout=settings.billing_stripe_timeout_s)
        # Network retries reuse our idempotency keys, so they never create twice.
        self.client = stripe_client(
            api_key,
            api_base=settings.stripe_api_base,
            meter_events_base=settings.stripe_meter_events_base,
            http_client=self._http,
            max_network_retries=settings.billing_stripe_retries,
        )
        self._secrets = webhook_secrets(webhook_secret)

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeGateway | None:
        if not settings.stripe_api_key:
            return None
        return cls(settings.stripe_api_key, settings.stripe_webhook_secret, settings)

    async def close(self) -> None:
        if self._http._cached_session is not None:
            await self._http.close_async()

    # -- webhooks ------------------------------------------------------------------------------
    def verify_event(self, payload: bytes, signature: str | None) -> Obj:
        if not self._secrets:
            raise InvalidSignature(
                "no webhook signing secret is configured (STRIPE_WEBHOOK_SECRET)"
            )
        if not signature:
            raise InvalidSignature("missing Stripe-Signature header")
        # The webhook endpoint and each event destination sign with a secret of their own: a
        # delivery is genuine if one of them verifies it. Snapshot events and thin
        # notifications are signed alike (`WebhookSignature.verify_header` is what both
        # `Webhook.construct_event` and `parse_event_notification` call).
        failure: stripe.SignatureVerificationError | None = None
        for secret in self._secrets:
            try:
                stripe.WebhookSignature.verify_header(
                    payload.decode("utf-8", "replace"), signature, secret, WEBHOOK_TOLERANCE_S
                )
                break
            except stripe.SignatureVerificationError as exc:
                failure = exc
        else:
            assert failure is not None
            raise InvalidSignature(f"bad webhook signature: {failure.user_message or failure}")
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise InvalidRequest("the webhook body is not a Stripe event") from None
        if not isinstance(doc, dict):
            raise InvalidRequest("the webhook body is not a Stripe event")
        event: Obj = doc
        return event

    async def fetch_event(self, id_: str) -> Obj:
        # The notification carries no `data`: the event is read from Stripe by its id, as the
        # SDK's `EventNotification.fetch_event` does.
        event = await _call(lambda: self.client.v2.core.events.retrieve_async(id_))
        return _dict(event)

    # -- reads ---------------------------------------------------------------------------------
    def _service(self, kind: str) -> Any:
        v1 = self.client.v1
        return {
            "customer": v1.customers,
            "product": v1.products,
            "price": v1.prices,
            "billing.meter": v1.billing.meters,
            "subscription": v1.subscriptions,
            "invoice": v1.invoices,
            "invoiceitem": v1.invoice_items,
        }[kind]

    async def retrieve(self, kind: str, id_: str) -> Obj | None:
        expand = _RETRIEVE_EXPAND.get(kind)
        params: Any = {"expand": expand} if expand else None
        try:
            obj = await self._service(kind).retrieve_async(id_, params)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return None
            raise translate(exc) from None
        except stripe.StripeError as exc:
            raise translate(exc) from None
        data = _dict(obj)
        return None if data.get("deleted") else data

    async def list_page(self, kind: str, starting_after: str | None, limit: int) -> Page:
        params: dict[str, Any] = {"limit": limit}
        if starting_after:
            params["starting_after"] = starting_after
        if kind == "subscription":
            params["status"] = "all"
            params["expand"] = [f"data.{DISCOUNTS}"]
        elif kind == "price":
            params["expand"] = ["data.tiers"]
        elif kind == "invoiceitem":
            # Only the items no invoice took yet: the next invoice bills them.
            params["pending"] = True
        page = await _call(lambda: self._service(kind).list_async(params))
        return Page([_dict(o) for o in page.data], bool(page.has_more))

    # -- writes --------------------------------------------------------------------------------
    async def create_customer(
        self, *, email: str | None, metadata: Mapping[str, str], idempotency_key: str
    ) -> Obj:
        params: Any = {"metadata": dict(metadata)}
        if email:
            params["email"] = email
        opts: Any = {"idempotency_key": idempotency_key}
        return _dict(await _call(lambda: self.client.v1.customers.create_async(params, opts)))

    async def create_checkout_session(self, req: CheckoutRequest, idempotency_key: str) -> Obj:
        items = [{"price": p, **({"quantity": q} if q is not None else {})} for p, q in req.prices]
        params: Any = {
            "mode": "subscription",
            "customer": req.customer,
            "line_items": items,
            "success_url": req.success_url,
            "client_reference_id": req.client_reference_id,
            "metadata": dict(req.metadata),
            "subscription_data": {"metadata": dict(req.metadata)},
        }
        if req.cancel_url:
            params["cancel_url"] = req.cancel_url
        if req.trial_days:
            params["subscription_data"]["trial_period_days"] = req.trial_days
        opts: Any = {"idempotency_key": idempotency_key}
        return _dict(
            await _call(lambda: self.client.v1.checkout.sessions.create_async(params, opts))
        )

    async def create_portal_session(
        self, customer: str, return_url: str | None, idempotency_key: str
    ) -> Obj:
        params: Any = {"customer": customer}
        if return_url:
            params["return_url"] = return_url
        opts: Any = {"idempotency_key": idempotency_key}
        return _dict(
            await _call(lambda: self.client.v1.billing_portal.sessions.create_async(params, opts))
        )

    def _change_params(self, change: PlanChange) -> dict[str, Any]:
        item: dict[str, Any] = {"id": change.item, "price": change.price}
        if change.quantity is not None:
            item["quantity"] = change.quantity
        params: dict[str, Any] = {
            "items": [item],
            "proration_behavior": change.proration_behavior,
        }
        if change.proration_date is not None:
            params["proration_date"] = change.proration_date
        return params

    async def preview_change(self, change: PlanChange) -> InvoicePreview:
        params: Any = {
            "subscription": change.subscription,
            "subscription_details": self._change_params(change),
        }
        inv = _dict(await _call(lambda: self.client.v1.invoices.create_preview_async(params)))
        return InvoicePreview(
            currency=inv["currency"],
            amount_due=int(inv["amount_due"]),
            total=int(inv["total"]),
            period_start=inv.get("period_start"),
            period_end=inv.get("period_end"),
            lines=tuple((inv.get("lines") or {}).get("data") or ()),
        )

    async def change_plan(self, change: PlanChange, idempotency_key: str) -> Obj:
        params: Any = {**self._change_params(change), "expand": SUBSCRIPTION_EXPAND}
        opts: Any = {"idempotency_key": idempotency_key}
        sub = change.subscription
        return _dict(
            await _call(lambda: self.client.v1.subscriptions.update_async(sub, params, opts))
        )

    async def cancel(
        self,
        subscription: str,
        *,
        at_period_end: bool,
        idempotency_key: str,
        invoice_now: bool = True,
        prorate: bool = False,
    ) -> Obj:
        opts: Any = {"idempotency_key": idempotency_key}
        subs = self.client.v1.subscriptions
        if at_period_end:
            params: Any = {"cancel_at_period_end": True, "expand": SUBSCRIPTION_EXPAND}
            return _dict(await _call(lambda: subs.update_async(subscription, params, opts)))
        # Both are sent, never left to Stripe's defaults (false): without invoice_now the
        # period's metered usage is on no invoice (https://docs.stripe.com/api/subscriptions/cancel).
        answer: Any = {
            "expand": SUBSCRIPTION_EXPAND,
            "invoice_now": invoice_now,
            "prorate": prorate,
        }
        return _dict(await _call(lambda: subs.cancel_async(subscription, answer, opts)))

    async def resume(self, subscription: str, *, paused: bool, idempotency_key: str) -> Obj:
        opts: Any = {"idempotency_key": idempotency_key}
        subs = self.client.v1.subscriptions
        if paused:
            answer: Any = {"expand": SUBSCRIPTION_EXPAND}
            return _dict(await _call(lambda: subs.resume_async(subscription, answer, opts)))
        params: Any = {"cancel_at_period_end": False, "expand": SUBSCRIPTION_EXPAND}
        return _dict(await _call(lambda: subs.update_async(subscription, params, opts)))

    async def create_setup_intent(self, customer: str, idempotency_key: str) -> Obj:
        params: Any = {"customer": customer, "usage": "off_session"}
        opts: Any = {"idempotency_key": idempotency_key}
        return _dict(await _call(lambda: self.client.v1.setup_intents.create_async(params, opts)))

    async def report_usage(
        self, *, event_name: str, customer: str, value: str, identifier: str, timestamp: int
    ) -> None:
        params: Any = {
            "event_name": event_name,
            "identifier": identifier,
            "timestamp": timestamp,
            "payload": {"stripe_customer_id": customer, "value": value},
        }
        opts: Any = {"idempotency_key": f"meter-event:{identifier}"}
        await _call(lambda: self.client.v1.billing.meter_events.create_async(params, opts))
