"""Python client for meter's ingest and usage APIs, and verification of the webhooks meter
sends (`meter_client.webhooks.verify`).

    async with MeterClient("http://meter:8080", api_key) as meter:
        await meter.record("cus_42", "api_calls")            # value 1, id and time generated
        await meter.record("cus_42", "tokens", 1234, id=request_id, properties={"model": "m1"})
        usage = await meter.usage("cus_42", group_by=["model"], filters={"region": "eu"})
        for item in usage["items"]:
            print(item["meter"], item["quantity"], item.get("groups"))

Reads raise `RequestFailed` (`status`, `error_type`, `message`) on an error answer or none.

Policies (batching, retries, errors, memory) are described in `meter_client.aio` and in
meter's docs/client.md.
"""

from meter_client import webhooks
from meter_client.aio import MeterClient
from meter_client.results import (
    AuthenticationFailed,
    BatchFailed,
    ClientClosed,
    ClientStats,
    MeterClientError,
    RejectedEvent,
    RequestFailed,
)
from meter_client.retry import RetryPolicy
from meter_client.sync import MeterClientSync

__all__ = [
    "AuthenticationFailed",
    "BatchFailed",
    "ClientClosed",
    "ClientStats",
    "MeterClient",
    "MeterClientError",
    "MeterClientSync",
    "RejectedEvent",
    "RequestFailed",
    "RetryPolicy",
    "webhooks",
]
