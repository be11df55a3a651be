"""`MeterClientSync`: the async client on a background thread, for code without an event loop.

A thin wrapper, not a second implementation: every call (the reads `usage` and `usage_history`
too) is handed to the MeterClient running on the thread's own loop and waited for. `record`
therefore blocks while the buffer is full (the same backpressure), and the callbacks run on the
background thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar

from meter_client.aio import Instant, MeterClient
from meter_client.batching import Timestamp
from meter_client.results import ClientStats

T = TypeVar("T")


class MeterClientSync:
    """Same options as MeterClient. Call `close()` (or use `with`): events still buffered when
    the process exits without it are lost, as the thread is a daemon."""

    def __init__(self, url: str, api_key: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="meter-client", daemon=True
        )
        self._thread.start()
        self._closed = False

        async def build() -> MeterClient:
            # Built on its loop, so its asyncio primitives and session belong to that loop.
            return MeterClient(url, api_key, **options)

        try:
            self._client = self._call(build())
        except BaseException:
            self._stop()  # bad options: leave no thread behind
            raise

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __enter__(self) -> MeterClientSync:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def stats(self) -> ClientStats:
        return self._client.stats

    def record(
        self,
        customer: str,
        meter: str,
        value: int | float = 1,
        *,
        id: str | None = None,
        timestamp: Timestamp | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> str:
        """See MeterClient.record; blocks while the buffer is full."""
        return self._call(
            self._client.record(
                customer, meter, value, id=id, timestamp=timestamp, properties=properties
            )
        )

    def usage(
        self,
        customer: str,
        *,
        period: Instant | None = None,
        group_by: Sequence[str] = (),
        filters: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """See MeterClient.usage; raises RequestFailed the same way."""
        return self._call(
            self._client.usage(customer, period=period, group_by=group_by, filters=filters)
        )

    def usage_history(
        self,
        customer: str,
        *,
        from_: Instant | None = None,
        to: Instant | None = None,
        granularity: Literal["hour", "day"] | None = None,
        meter: str | None = None,
        group_by: Sequence[str] = (),
        filters: Mapping[str, str] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """See MeterClient.usage_history; raises RequestFailed the same way."""
        return self._call(
            self._client.usage_history(
                customer,
                from_=from_,
                to=to,
                granularity=granularity,
                meter=meter,
                group_by=group_by,
                filters=filters,
                limit=limit,
                cursor=cursor,
            )
        )

    def flush(self) -> None:
        """See MeterClient.flush."""
        self._call(self._client.flush())

    def close(self) -> None:
        """Flush, close the client and stop the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._call(self._client.aclose())
        finally:
            self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
