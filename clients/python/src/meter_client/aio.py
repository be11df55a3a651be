"""`MeterClient`: buffers usage events and delivers them in batches, with retries; reads usage.

Policies (meter's docs/client.md):
- Batches go when `max_batch` events are buffered, when the oldest has waited `flush_interval`,
  on `flush()` and on `aclose()`; one request is in flight at a time, so events are sent in the
  order they were recorded.
- Retries (429, 5xx, network errors, timeouts) resend the same bytes with the same ids, after
  exponential backoff with jitter and at least the server's Retry-After; a resend of something
  already committed is answered `duplicate` and counted once.
- Nothing is raised from the background: a batch refused as a whole (400/413: never retried)
  or still failing after `retry.max_attempts` is dropped and handed to `on_error` as a
  `BatchFailed` with its events; an event answered `rejected` goes to `on_rejected`. Both
  default to a log line with the event id, status and reason.
- A refused key (401/403) is the exception: no later batch could succeed, so the client stops,
  hands everything buffered to `on_error` and raises `AuthenticationFailed` from `record`,
  `flush` and `aclose`.
- Memory is bounded: at most `max_buffered` events are held, sent or not. When the buffer is
  full, `record` waits for space (backpressure) — space frees as batches are delivered or given
  up, so a long outage slows producers down instead of losing events or memory.
- Reads (`usage`, `usage_history`) are one GET each, on the same connection pool, key and
  `request_timeout`, never retried and independent of the buffer: a non-2xx answer or no
  answer raises `RequestFailed` (a refused key too: 401, without stopping the client).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote

import aiohttp

from meter_client.batching import (
    Timestamp,
    batch_body,
    batch_take,
    encode_event,
    new_event_id,
    next_send_in,
    wire_timestamp,
)
from meter_client.results import (
    AuthenticationFailed,
    BatchFailed,
    ClientClosed,
    ClientStats,
    RejectedEvent,
    RequestFailed,
)
from meter_client.retry import RetryPolicy
from meter_client.transport import Attempt, post_batch

log = logging.getLogger("meter_client")

MAX_BATCH = 1000  # the API's per-request maximum
LOGGED_IDS = 20  # ids named in one log line; `BatchFailed.events` has them all
_AUTH_STATUSES = frozenset({401, 403})
_USER_AGENT = "meter-client"

Instant = datetime | int | str  # a time as the usage API takes it: see `query_instant`


def log_rejected(event: RejectedEvent) -> None:
    """The default `on_rejected`: one warning naming the event, its status and the reason."""
    log.warning(
        "meter rejected event %s: status=rejected reason=%s (%s)",
        event.id,
        event.reason,
        event.message,
        extra={"event_id": event.id, "status": "rejected", "reason": event.reason},
    )


def log_failed(error: BatchFailed) -> None:
    """The default `on_error`: one error naming the dropped events, the HTTP status and why."""
    ids = [str(e.get("id")) for e in error.events]
    named = ", ".join(ids[:LOGGED_IDS])
    if len(ids) > LOGGED_IDS:
        named += f" and {len(ids) - LOGGED_IDS} more"
    status = "no response" if error.status is None else error.status
    reason = error.error_type or "unavailable"
    log.error(
        "meter dropped %d event(s) %s: status=%s reason=%s (%s)",
        len(ids),
        named,
        status,
        reason,
        error.message,
        extra={"event_ids": ids, "status": error.status, "reason": reason},
    )


@dataclass(frozen=True, slots=True)
class _Pending:
    seq: int
    body: bytes
    recorded_at: float  # loop time


def _decoded(batch: list[_Pending]) -> list[dict[str, Any]]:
    return [json.loads(p.body) for p in batch]


def query_instant(value: Instant, name: str) -> str:
    """A time parameter as the usage API takes it: unix seconds, or text passed as is (ISO 8601,
    or `current`/`previous` for `period`). A datetime must be timezone-aware, as in `record`."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{name} must be timezone-aware; meter never guesses a zone")
        return str(int(value.timestamp()))
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"{name} must be a datetime, unix seconds (int) or text")
    return str(value)


def breakdown_query(group_by: Sequence[str], filters: Mapping[str, str] | None) -> dict[str, str]:
    """`group_by=a,b` and `filter[<key>]=<value>` (docs/dimensions.md); nothing when unset."""
    query: dict[str, str] = {}
    # A str is a Sequence[str] too: taken as the comma-separated text, not split into letters.
    keys = group_by if isinstance(group_by, str) else ",".join(group_by)
    if keys:
        query["group_by"] = keys
    for key, value in (filters or {}).items():
        query[f"filter[{key}]"] = value
    return query


def customer_path(customer: str) -> str:
    """`/v1/customers/{customer}`, the id quoted whole (a `/` in it stays part of the id)."""
    # URLs normalize `.` and `..` segments away (even percent-encoded), so no request names them.
    if customer in ("", ".", ".."):
        raise ValueError(f"customer {customer!r} cannot be named in a URL path")
    return "/v1/customers/" + quote(customer, safe="")


def _error_fields(doc: Any) -> tuple[str | None, str | None, str | None]:
    """(type, message, param) of the server's `{"error": {...}}`, each None when absent."""
    err = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(err, dict):
        return None, None, None
    return _text(err.get("type")), _text(err.get("message")), _text(err.get("param"))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class MeterClient:
    """Async client for `POST /v1/events` and the usage reads; use as
    `async with MeterClient(url, key) as meter`."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        max_batch: int = MAX_BATCH,
        max_batch_bytes: int = 1_000_000,
        flush_interval: float = 1.0,
        max_buffered: int = 100_000,
        retry: RetryPolicy | None = None,
        request_timeout: float = 10.0,
        on_rejected: Callable[[RejectedEvent], None] = log_rejected,
        on_error: Callable[[BatchFailed], None] = log_failed,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if not 1 <= max_batch <= MAX_BATCH:
            raise ValueError(f"max_batch must be between 1 and {MAX_BATCH}")
        if max_buffered < max_batch:
            raise ValueError("max_buffered must be at least max_batch")
        self._base = url.rstrip("/")
        self._url = self._base + "/v1/events"
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
        }
        self._read_headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
        self._max_batch = max_batch
        self._max_batch_bytes = max_batch_bytes
        self._interval = flush_interval
        self._max_buffered = max_buffered
        self._retry = retry or RetryPolicy()
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._on_rejected = on_rejected
        self._on_error = on_error
        self._session = session
        self._own_session = session is None
        self.stats = ClientStats()

        self._buffer: deque[_Pending] = deque()
        self._in_flight = 0
        self._seq = 0  # the last sequence number handed out
        self._done_seq = 0  # every event up to this one is delivered or given up
        self._flush_seq = 0  # events up to this one go without waiting for the interval
        self._changed = asyncio.Condition()
        self._wakeup = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._refused: AuthenticationFailed | None = None  # set once, the client stops for good

    async def __aenter__(self) -> MeterClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def buffered(self) -> int:
        """Events held: waiting in the buffer or in the request in flight."""
        return len(self._buffer) + self._in_flight

    async def record(
        self,
        customer: str,
        meter: str,
        value: int | float = 1,
        *,
        id: str | None = None,
        timestamp: Timestamp | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> str:
        """Buffer one usage event; returns its id (generated when not given).

        Pass your own `id` when the usage has a natural key (a request id, a job id): then even
        a crash-and-replay of your own code is counted once. Waits while the buffer is full.
        """
        self._raise_if_refused()
        if self._closing:
            raise ClientClosed("the client is closed")
        event_id = new_event_id() if id is None else id
        body = encode_event(
            event_id, customer, meter, value, wire_timestamp(timestamp, time.time()), properties
        )
        if self.buffered >= self._max_buffered:
            async with self._changed:
                await self._changed.wait_for(
                    lambda: (
                        self._closing
                        or self._refused is not None
                        or self.buffered < self._max_buffered
                    )
                )
            self._raise_if_refused()
            if self._closing:
                raise ClientClosed("the client closed while record() waited for buffer space")
        self._seq += 1
        self._buffer.append(_Pending(self._seq, body, asyncio.get_running_loop().time()))
        if len(self._buffer) in (1, self._max_batch):
            self._wakeup.set()  # the sender's decision changes only at these sizes
        self._ensure_sender()
        return event_id

    async def flush(self) -> None:
        """Return once every event recorded before the call is delivered or reported failed.

        Raises AuthenticationFailed once the server has refused the key.
        """
        target = self._seq
        if self._done_seq >= target:
            self._raise_if_refused()
            return
        self._flush_seq = max(self._flush_seq, target)
        self._ensure_sender()
        self._wakeup.set()
        async with self._changed:
            await self._changed.wait_for(lambda: self._done_seq >= target)
        self._raise_if_refused()

    async def aclose(self) -> None:
        """Flush everything, then release the connection pool. Idempotent.

        Raises AuthenticationFailed (after releasing everything) if the server refused the key.
        """
        if self._closed:
            return
        self._closing = True
        async with self._changed:
            self._changed.notify_all()  # record() calls waiting for space give up
        with contextlib.suppress(AuthenticationFailed):
            await self.flush()
        if self._sender is not None:
            self._wakeup.set()
            await self._sender
        if self._own_session and self._session is not None:
            await self._session.close()
        self._closed = True
        self._raise_if_refused()

    async def usage(
        self,
        customer: str,
        *,
        period: Instant | None = None,
        group_by: Sequence[str] = (),
        filters: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """`GET /v1/customers/{customer}/usage`: usage, amounts and projected invoice of one
        billing period, as the server's JSON (docs/api.md).

        `customer` is your customer id or the `cus_` id. `period` is `current` (the server's
        default), `previous`, or an instant inside the wanted period. `group_by` (up to 3
        dimension keys) and `filters` (`{"region": "eu"}`: `filter[region]=eu`) add `groups` to
        each metered item (docs/dimensions.md). Not retried; raises `RequestFailed` on a
        non-2xx answer (400 bad parameter, 401 key, 404 unknown customer or period) or none,
        `ClientClosed` once `aclose()` began.
        """
        query = breakdown_query(group_by, filters)
        if period is not None:
            query["period"] = query_instant(period, "period")
        return await self._get(customer_path(customer) + "/usage", query)

    async def usage_history(
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
        """`GET /v1/customers/{customer}/usage/history`: one page of aggregated usage per meter
        and hour or day, as the server's JSON (docs/api.md).

        The server's parameters, `from_` standing for `from` (a Python keyword): `from_`/`to`
        (default the last 7 days up to now; whole buckets), `granularity` (hour by default),
        `meter`, `limit` ((meter, time) slots per page, 1..1000, default 100) and `cursor` (the
        previous page's `next_cursor`; pages go on while `has_more`). With `group_by` each row
        carries `dimensions`. Not retried; raises `RequestFailed` like `usage`.
        """
        query = breakdown_query(group_by, filters)
        if from_ is not None:
            query["from"] = query_instant(from_, "from_")
        if to is not None:
            query["to"] = query_instant(to, "to")
        optional = {"granularity": granularity, "meter": meter, "cursor": cursor}
        query |= {name: value for name, value in optional.items() if value is not None}
        if limit is not None:
            query["limit"] = str(limit)
        return await self._get(customer_path(customer) + "/usage/history", query)

    async def _get(self, path: str, query: Mapping[str, str]) -> dict[str, Any]:
        """One GET; the answer's JSON object, or RequestFailed."""
        if self._closing:
            raise ClientClosed("the client is closed")
        session = self._open_session()
        try:
            async with session.get(
                self._base + path, params=query, headers=self._read_headers, timeout=self._timeout
            ) as response:
                status = response.status
                reason = response.reason or ""
                raw = await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RequestFailed(f"{type(exc).__name__}: {exc}", status=None) from exc
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = None  # a proxy's HTML error page, say: the status still says what went wrong
        if 200 <= status < 300:
            if isinstance(doc, dict):
                return doc
            raise RequestFailed("the answer is not a JSON object", status=status)
        error_type, message, param = _error_fields(doc)
        raise RequestFailed(
            message or reason or "no error message",
            status=status,
            error_type=error_type,
            param=param,
        )

    def _open_session(self) -> aiohttp.ClientSession:
        # Created on first use, not in __init__: a session belongs to the loop running then.
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": _USER_AGENT})
        return self._session

    def _raise_if_refused(self) -> None:
        if self._refused is not None:
            raise self._refused.with_traceback(None)

    def _ensure_sender(self) -> None:
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wakeup.clear()
            head = self._buffer[0] if self._buffer else None
            wait = next_send_in(
                len(self._buffer),
                0.0 if head is None else loop.time() - head.recorded_at,
                max_batch=self._max_batch,
                interval=self._interval,
                flushing=head is not None and (self._closing or head.seq <= self._flush_seq),
            )
            if wait is None and self._closing:
                return
            if self._refused is not None and self._buffer:
                # Nothing can be delivered with this key: give the rest up, reported, at once.
                wait = 0.0
            if wait != 0.0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wakeup.wait()
                continue
            head_sizes = [len(p.body) for p in itertools.islice(self._buffer, self._max_batch)]
            count = batch_take(head_sizes, self._max_batch, self._max_batch_bytes)
            batch = [self._buffer.popleft() for _ in range(count)]
            self._in_flight = count
            try:
                if self._refused is not None:
                    self._give_up_refused(batch)
                else:
                    await self._send(batch)
            except Exception as exc:  # a bug must not stop delivery of everything after it
                log.exception("meter client: unexpected error sending a batch")
                self._fail(batch, f"unexpected error: {exc!r}", None, None, False, 0)
            async with self._changed:
                self._in_flight = 0
                self._done_seq = batch[-1].seq
                self._changed.notify_all()

    async def _send(self, batch: list[_Pending]) -> None:
        session = self._open_session()
        body = batch_body([p.body for p in batch])
        self.stats.batches += 1
        attempt = 0
        while True:
            result = await post_batch(session, self._url, body, self._headers, self._timeout)
            key = "error" if result.status is None else str(result.status)
            self.stats.statuses[key] = self.stats.statuses.get(key, 0) + 1
            attempt += 1
            if result.status == 200:
                self._delivered(batch, result)
                return
            if result.status in _AUTH_STATUSES:
                self._refused = AuthenticationFailed(
                    result.describe(),
                    events=_decoded(batch),
                    status=result.status,
                    error_type=result.error_type,
                    retryable=False,
                    attempts=attempt,
                )
                self.stats.failed += len(batch)
                self._report(self._on_error, self._refused)
                async with self._changed:
                    self._changed.notify_all()  # record() calls waiting for space raise
                return
            if not result.retryable or attempt >= self._retry.max_attempts:
                self._fail(
                    batch,
                    result.describe(),
                    result.status,
                    result.error_type,
                    result.retryable,
                    attempt,
                )
                return
            self.stats.retries += 1
            # The same `body` goes again: same ids, so whatever was committed is a duplicate.
            await asyncio.sleep(self._retry.delay(attempt - 1, result.retry_after, random.random()))

    def _delivered(self, batch: list[_Pending], result: Attempt) -> None:
        doc = result.doc if isinstance(result.doc, dict) else {}
        items = doc.get("results")
        if not isinstance(items, list) or len(items) != len(batch):
            # Answered 200, so committed; but we cannot tell what was rejected.
            log.error("meter client: unreadable 200 response", extra={"events": len(batch)})
            return
        self.stats.accepted += int(doc.get("accepted", 0))
        self.stats.duplicates += int(doc.get("duplicates", 0))
        self.stats.rejected += int(doc.get("rejected", 0))
        for pending, item in zip(batch, items, strict=True):
            if isinstance(item, dict) and item.get("status") == "rejected":
                rejected = RejectedEvent(
                    id=item.get("id"),
                    reason=str(item.get("reason")),
                    message=str(item.get("message", "")),
                    event=json.loads(pending.body),
                )
                self._report(self._on_rejected, rejected)

    def _fail(
        self,
        batch: list[_Pending],
        message: str,
        status: int | None,
        error_type: str | None,
        retryable: bool,
        attempts: int,
    ) -> None:
        self.stats.failed += len(batch)
        error = BatchFailed(
            message,
            events=_decoded(batch),
            status=status,
            error_type=error_type,
            retryable=retryable,
            attempts=attempts,
        )
        self._report(self._on_error, error)

    def _give_up_refused(self, batch: list[_Pending]) -> None:
        """A batch left behind after the key was refused: reported, never sent."""
        assert self._refused is not None
        refused = self._refused
        self.stats.failed += len(batch)
        error = AuthenticationFailed(
            refused.message,
            events=_decoded(batch),
            status=refused.status,
            error_type=refused.error_type,
            retryable=False,
            attempts=0,
        )
        self._report(self._on_error, error)

    @staticmethod
    def _report(callback: Callable[[Any], None], value: object) -> None:
        try:
            callback(value)
        except Exception:  # the caller's callback must not stop delivery
            log.exception("meter client: callback raised")
