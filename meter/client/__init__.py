"""Python client for meter's ingest API.

    async with MeterClient("http://meter:8080", api_key) as meter:
        await meter.record("cus_42", "api_calls")            # value 1, id and time generated
        await meter.record("cus_42", "tokens", 1234, id=request_id, properties={"model": "m1"})

Policies (batching, retries, errors, memory) are described in `meter.client.aio` and the README.
"""

from meter.client.aio import MeterClient
from meter.client.results import (
    BatchFailed,
    ClientClosed,
    ClientStats,
    MeterClientError,
    RejectedEvent,
)
from meter.client.retry import RetryPolicy
from meter.client.sync import MeterClientSync

__all__ = [
    "BatchFailed",
    "ClientClosed",
    "ClientStats",
    "MeterClient",
    "MeterClientError",
    "MeterClientSync",
    "RejectedEvent",
    "RetryPolicy",
]
