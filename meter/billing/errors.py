"""Billing's part of the MeteringError hierarchy (the app's error middleware renders them)."""

from __future__ import annotations

from meter.errors import InvalidRequest, MeteringError


class InvalidSignature(InvalidRequest):
    """A webhook whose Stripe-Signature is missing, wrong or too old."""

    type = "signature_verification_error"


class NotFound(MeteringError):
    status = 404
    type = "not_found"


class Conflict(MeteringError):
    """The request does not fit the object's current state (e.g. resume a live subscription)."""

    status = 409
    type = "conflict"


class PaymentRequired(MeteringError):
    """The provider declined a payment (card errors)."""

    status = 402
    type = "card_error"


class GatewayError(MeteringError):
    """The payment provider failed or refused us (not the client's fault)."""

    status = 502
    type = "gateway_error"


class BillingNotConfigured(MeteringError):
    status = 503
    type = "unavailable"


class StoreUnavailable(MeteringError):
    """Postgres failed mid-request; nothing was applied (Stripe redelivers on a 500)."""

    status = 500
    type = "api_error"
