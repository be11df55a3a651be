"""The one way meter builds a `stripe.StripeClient`: our base addresses (the emulator's in dev
and tests, Stripe's when unset), our HTTP client and the SDK's network retries we allow."""

from __future__ import annotations

from typing import Any

import stripe


def stripe_client(
    api_key: str,
    *,
    api_base: str | None,
    meter_events_base: str | None,
    http_client: stripe.HTTPClient,
    max_network_retries: int = 0,
) -> stripe.StripeClient:
    bases: Any = {}  # the SDK's BaseAddresses: only the keys set replace Stripe's defaults
    if api_base:
        bases["api"] = api_base
    if meter_events_base:
        bases["meter_events"] = meter_events_base
    return stripe.StripeClient(
        api_key,
        base_addresses=bases,
        http_client=http_client,
        max_network_retries=max_network_retries,
    )
