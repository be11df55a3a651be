"""Verifying the webhooks meter sends (meter's docs/webhooks.md).

    event = meter_client.webhooks.verify(
        request_body, request.headers["Meter-Signature"], secret
    )

`Meter-Signature` is `t=<unix seconds>,v1=<hex>[,v1=<hex>…]`: each `v1` is the HMAC-SHA256,
keyed with an endpoint secret, of `<t>.<body>` — Stripe's scheme
(https://stripe.com/docs/webhooks/signatures#verify-manually). During a secret rotation two `v1`
come, one per secret; any one matching one of yours is enough. Verify the raw bytes as received,
before any JSON parsing: re-encoding changes them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from meter_client.results import MeterClientError

__all__ = ["DEFAULT_TOLERANCE", "WebhookSignatureError", "verify"]

DEFAULT_TOLERANCE = 300


class WebhookSignatureError(MeterClientError):
    """The payload is not a webhook meter signed with one of the given secrets recently."""


def _parse(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise WebhookSignatureError("Meter-Signature: `t` is not an integer") from None
        elif key == "v1":
            signatures.append(value)
    if timestamp is None:
        raise WebhookSignatureError("Meter-Signature has no timestamp (`t=`)")
    if not signatures:
        raise WebhookSignatureError("Meter-Signature has no `v1=` signature")
    return timestamp, signatures


def verify(
    payload: bytes,
    header: str,
    secrets: str | list[str],
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """The event (`id`, `type`, `created`, `tenant`, `data`) when `header` signs `payload` with
    one of `secrets` and its timestamp is within `tolerance` seconds of `now` (default: the
    current time; 0 skips the check). Raises WebhookSignatureError otherwise.

    Deliveries are at least once: the same event may come again (same `id`); dedupe on it."""
    if not header:
        raise WebhookSignatureError("no Meter-Signature header")
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    if not keys:
        raise WebhookSignatureError("no secret to verify with")
    timestamp, signatures = _parse(header)
    current = time.time() if now is None else now
    if tolerance > 0 and abs(current - timestamp) > tolerance:
        raise WebhookSignatureError(
            f"Meter-Signature timestamp is {abs(current - timestamp):.0f} s from now, more than "
            f"the tolerance ({tolerance:g} s): a replay, or a clock far off"
        )
    signed = str(timestamp).encode() + b"." + payload
    for key in keys:
        expected = hmac.new(key.encode(), signed, hashlib.sha256).hexdigest()
        if any(hmac.compare_digest(expected, s) for s in signatures):
            try:
                event: dict[str, Any] = json.loads(payload)
            except ValueError:
                raise WebhookSignatureError("the signed payload is not JSON") from None
            return event
    raise WebhookSignatureError("no signature matches the payload under the given secret(s)")
