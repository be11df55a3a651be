"""STRIPE_WEBHOOK_SECRET lists the signing secrets a delivery may be signed with; the oracle for
signatures is the SDK's own verifier (`stripe.WebhookSignature`), which the emulator's `sign`
must satisfy."""

from __future__ import annotations

import time

import orjson
import pytest

from meter.billing.errors import InvalidSignature
from meter.billing.stripe_gateway import StripeGateway, webhook_secrets
from meter.config import Settings
from meter.stripe_emulator.webhooks import sign


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (None, ()),
        ("", ()),
        ("whsec_a", ("whsec_a",)),
        ("whsec_a,whsec_b", ("whsec_a", "whsec_b")),
        (" whsec_a , whsec_b ,", ("whsec_a", "whsec_b")),
    ],
)
def test_the_setting_is_one_secret_or_several_comma_separated(
    setting: str | None, expected: tuple[str, ...]
) -> None:
    assert webhook_secrets(setting) == expected


def _gateway(secret: str) -> StripeGateway:
    return StripeGateway("sk_test_x", secret, Settings())


BODY = orjson.dumps({"id": "evt_1", "object": "v2.core.event", "type": "x"}).decode()


@pytest.mark.parametrize("signed_with", ["whsec_endpoint", "whsec_destination"])
def test_a_delivery_signed_with_any_listed_secret_is_taken(signed_with: str) -> None:
    gateway = _gateway("whsec_endpoint,whsec_destination")
    event = gateway.verify_event(BODY.encode(), sign(BODY, signed_with, int(time.time())))
    assert event["id"] == "evt_1"


def test_a_delivery_signed_with_no_listed_secret_is_refused() -> None:
    gateway = _gateway("whsec_endpoint,whsec_destination")
    with pytest.raises(InvalidSignature):
        gateway.verify_event(BODY.encode(), sign(BODY, "whsec_other", int(time.time())))
