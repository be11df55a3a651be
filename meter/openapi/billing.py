"""The billing module's routes (meter/billing/routes.py): the Stripe webhook and the
self-service API. Response bodies are described loosely (objects with their main fields) while
that API settles; the error statuses are exact."""

from __future__ import annotations

from meter.openapi.common import Doc, ok, operation, ref

_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "your customer id or the Stripe `cus_` id",
    "schema": {"type": "string", "minLength": 1},
}
_CUSTOMER = "/v1/customers/{id}"
# Statuses of every route that calls Stripe: declined (402), Stripe failing (502), billing not
# configured (503).
_STRIPE = (402, 502, 503)


def _obj(**properties: Doc) -> Doc:
    return {"type": "object", "properties": properties}


_STR = {"type": "string"}
_INT = {"type": "integer", "minimum": 0}

SCHEMAS: Doc = {
    "Subscription": _obj(customer=_STR, stripe_customer=_STR, subscription={"type": "object"}),
    "Entitlements": {"type": "object", "description": "access decision, features and limits"},
}


def _post(
    operation_id: str, summary: str, body: Doc | None, response: Doc, errors: tuple[int, ...]
) -> Doc:
    return {
        "post": operation(
            summary,
            operation_id=operation_id,
            tag="billing",
            parameters=[_ID],
            body=body,
            body_required=False,
            responses={"200": ok("done", response)},
            errors=(400, 404, *errors),
        )
    }


def _get(operation_id: str, summary: str, response: Doc) -> Doc:
    return {
        "get": operation(
            summary,
            operation_id=operation_id,
            tag="billing",
            parameters=[_ID],
            responses={"200": ok("found", response)},
            errors=(404,),
        )
    }


def paths() -> Doc:
    price = {"oneOf": [_STR, {**_obj(price=_STR, quantity=_INT), "required": ["price"]}]}
    return {
        "/stripe/webhook": {
            "post": operation(
                "Stripe webhook endpoint",
                operation_id="receiveStripeWebhook",
                tag="billing",
                public=True,  # authenticated by the Stripe-Signature header instead
                description="Signature verified on the raw body (300 s tolerance); each event "
                "applied exactly once; a database failure answers 500 so that Stripe retries.",
                parameters=[
                    {"name": "Stripe-Signature", "in": "header", "required": True, "schema": _STR}
                ],
                body={"type": "object", "description": "a Stripe event"},
                responses={
                    "200": ok(
                        "recorded (or already seen)",
                        {
                            **_obj(received={"const": True}, outcome=_STR),
                            "required": ["received", "outcome"],
                        },
                    )
                },
                errors=(400, 413, 500, 503),
            )
        },
        f"{_CUSTOMER}/subscription": _get(
            "getCustomerSubscription", "The customer's subscription", ref("Subscription")
        ),
        f"{_CUSTOMER}/entitlements": _get(
            "getCustomerEntitlements", "What the customer may use now", ref("Entitlements")
        ),
        f"{_CUSTOMER}/checkout-session": _post(
            "createCheckoutSession",
            "Start a Stripe Checkout session",
            {
                **_obj(
                    prices={"type": "array", "items": price, "minItems": 1},
                    price=_STR,
                    success_url=_STR,
                    cancel_url=_STR,
                    email=_STR,
                    trial_days=_INT,
                    additional_subscription={
                        "type": "boolean",
                        "default": False,
                        "description": "start a subscription even though the customer has a "
                        "live one (otherwise 409: change its plan instead); Stripe bills metered "
                        "prices on the same meter on each subscription",
                    },
                ),
                "required": ["success_url"],
            },
            {**_obj(id=_STR, url=_STR), "required": ["id", "url"]},
            (409, *_STRIPE),
        ),
        f"{_CUSTOMER}/portal-session": _post(
            "createPortalSession",
            "Open the Stripe billing portal",
            _obj(return_url=_STR),
            {**_obj(url=_STR), "required": ["url"]},
            _STRIPE,
        ),
        f"{_CUSTOMER}/subscription/change-plan": _post(
            "changeSubscriptionPlan",
            "Preview (`preview: true`) or apply a plan change",
            {
                **_obj(
                    price=_STR,
                    item=_STR,
                    quantity=_INT,
                    proration_behavior={"enum": ["create_prorations", "always_invoice", "none"]},
                    proration_date=_INT,
                    preview={"type": "boolean"},
                ),
                "required": ["price"],
            },
            {"type": "object", "description": "the proration preview, or the subscription"},
            (409, *_STRIPE),
        ),
        f"{_CUSTOMER}/subscription/cancel": _post(
            "cancelSubscription",
            "Cancel at period end (or `immediately`: the period's metered usage is invoiced on "
            "a final invoice unless `invoice_now` is false; `prorate` credits unused licensed "
            "time on it)",
            _obj(
                immediately={"type": "boolean"},
                invoice_now={"type": "boolean", "default": True},
                prorate={"type": "boolean", "default": False},
            ),
            ref("Subscription"),
            _STRIPE,
        ),
        f"{_CUSTOMER}/subscription/resume": _post(
            "resumeSubscription",
            "Resume a paused or cancelling subscription",
            None,
            ref("Subscription"),
            (409, *_STRIPE),
        ),
        f"{_CUSTOMER}/payment-method/setup-intent": _post(
            "createPaymentMethodSetupIntent",
            "A SetupIntent to update the card",
            None,
            {**_obj(id=_STR, client_secret=_STR), "required": ["id", "client_secret"]},
            _STRIPE,
        ),
    }
