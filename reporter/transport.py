"""Meter events to Stripe through the official SDK (`StripeClient`, async methods only).

`StreamTransport`: the v2 meter event stream (≤100 events a request, session token renewed
before it expires, `temporary_session_expired` → new session). `V1Transport`: v1
`billing.meter_events`, one request per event, the fallback. Both answer a `BatchResult` and
never raise SDK errors: what went wrong becomes "retry" (429, 5xx, no answer: maybe sent) or
"failed" (Stripe refused it for good).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import stripe

from meter.stripe_client import stripe_client
from reporter.backoff import retry_after_seconds, should_retry_header
from reporter.metrics import ReporterMetrics
from reporter.plan import wire_value

log = logging.getLogger(__name__)

MAX_STREAM_EVENTS = 100
_DUPLICATE = "An event already exists with identifier"


@dataclass(frozen=True, slots=True)
class Event:
    """One outbox row as sent."""

    id: int
    identifier: str
    stripe_customer: str
    event_name: str
    value: Decimal
    event_time: dt.datetime


@dataclass
class BatchResult:
    sent: list[Event] = field(default_factory=list)
    retry: list[Event] = field(default_factory=list)
    failed: list[tuple[Event, str]] = field(default_factory=list)
    retry_after: float | None = None
    error: str | None = None


class Transport(Protocol):
    max_batch: int

    async def send(self, events: Sequence[Event]) -> BatchResult: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    retry: bool
    status: int
    retry_after: float | None
    message: str


def classify(exc: stripe.StripeError) -> Verdict:
    """What an SDK error means for the events of the request."""
    status = exc.http_status or 0
    headers: Any = exc.headers
    retry_after = retry_after_seconds(dict(headers) if headers else None)
    message = f"{type(exc).__name__}: {exc.user_message or str(exc)}"[:500]
    if isinstance(exc, stripe.APIConnectionError):
        # Timeout or no answer: the request may have been applied. Resend with the same
        # identifier; Stripe drops it if it was.
        return Verdict(True, 0, None, message)
    if status == 429 or status >= 500:
        return Verdict(True, status, retry_after, message)
    if should_retry_header(dict(headers) if headers else None) is True:
        return Verdict(True, status, retry_after, message)
    return Verdict(False, status, retry_after, message)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_SECOND = dt.timedelta(seconds=1)


def unix_seconds(at: dt.datetime) -> int:
    """The whole unix second `at` lies in (v1 takes integer seconds): floored, exactly, so a
    bucket's last instant never moves into the next second, hour or billing period."""
    return (at - _EPOCH) // _SECOND


def _payload(e: Event) -> dict[str, str]:
    return {"stripe_customer_id": e.stripe_customer, "value": wire_value(e.value)}


def make_client(
    api_key: str, api_base: str | None, meter_events_base: str | None, timeout: float
) -> tuple[stripe.StripeClient, stripe.AIOHTTPClient]:
    """A StripeClient with our own timeout and no SDK retries (we retry, with our limiter)."""
    http = stripe.AIOHTTPClient(timeout=timeout)
    client = stripe_client(
        api_key, api_base=api_base, meter_events_base=meter_events_base, http_client=http
    )
    return client, http


class StreamTransport:
    """The v2 meter event stream."""

    max_batch = MAX_STREAM_EVENTS

    def __init__(
        self,
        client: stripe.StripeClient,
        http: stripe.AIOHTTPClient,
        metrics: ReporterMetrics,
        *,
        renew_before_s: float = 60.0,
    ) -> None:
        self._client = client
        self._http = http
        self._metrics = metrics
        self._renew_before = renew_before_s
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def _session(self, force: bool = False) -> str:
        async with self._lock:
            if force or self._token is None or time.time() >= self._expires - self._renew_before:
                session = await self._client.v2.billing.meter_event_session.create_async()
                self._token = session.authentication_token
                self._expires = dt.datetime.fromisoformat(session.expires_at).timestamp()
                self._metrics.session_renewals.inc()
                log.info("meter event session created", extra={"expires_at": session.expires_at})
            return self._token

    async def send(self, events: Sequence[Event]) -> BatchResult:
        if len(events) > self.max_batch:
            raise ValueError(f"at most {self.max_batch} events per stream request")
        body: Any = {
            "events": [
                {
                    "event_name": e.event_name,
                    "identifier": e.identifier,
                    "payload": _payload(e),
                    "timestamp": e.event_time.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
                }
                for e in events
            ]
        }
        try:
            token = await self._session()
        except stripe.StripeError as exc:
            return self._failure(events, classify(exc), force_retry=True)
        for renewed in (False, True):
            try:
                await self._client.v2.billing.meter_event_stream.create_async(
                    body, {"api_key": token}
                )
            except (stripe.TemporarySessionExpiredError, stripe.AuthenticationError) as exc:
                self._metrics.responses.labels(str(exc.http_status or 401)).inc()
                if renewed:
                    return self._failure(events, classify(exc), force_retry=True)
                try:
                    token = await self._session(force=True)
                except stripe.StripeError as exc2:
                    return self._failure(events, classify(exc2), force_retry=True)
                continue
            except stripe.StripeError as exc:
                verdict = classify(exc)
                self._metrics.responses.labels(str(verdict.status)).inc()
                return self._failure(events, verdict)
            self._metrics.responses.labels("200").inc()
            return BatchResult(sent=list(events))
        raise AssertionError("unreachable")

    def _failure(
        self, events: Sequence[Event], verdict: Verdict, *, force_retry: bool = False
    ) -> BatchResult:
        if verdict.status == 429:
            self._metrics.rate_limited.inc()
        if verdict.retry or force_retry:
            return BatchResult(
                retry=list(events), retry_after=verdict.retry_after, error=verdict.message
            )
        return BatchResult(failed=[(e, verdict.message) for e in events], error=verdict.message)

    async def close(self) -> None:
        if self._http._cached_session is not None:
            await self._http.close_async()


class V1Transport:
    """v1 `billing.meter_events`: one request per event. Events of one (customer, meter) go one
    after another (Stripe limits concurrency per customer and meter); groups run concurrently."""

    max_batch = MAX_STREAM_EVENTS

    def __init__(
        self, client: stripe.StripeClient, http: stripe.AIOHTTPClient, metrics: ReporterMetrics
    ) -> None:
        self._client = client
        self._http = http
        self._metrics = metrics

    async def send(self, events: Sequence[Event]) -> BatchResult:
        groups: dict[tuple[str, str], list[Event]] = {}
        for e in events:
            groups.setdefault((e.stripe_customer, e.event_name), []).append(e)
        result = BatchResult()
        await asyncio.gather(*(self._send_group(g, result) for g in groups.values()))
        return result

    async def _send_group(self, group: list[Event], result: BatchResult) -> None:
        for i, e in enumerate(group):
            params: Any = {
                "event_name": e.event_name,
                "identifier": e.identifier,
                "payload": _payload(e),
                "timestamp": unix_seconds(e.event_time),
            }
            try:
                await self._client.v1.billing.meter_events.create_async(
                    params, {"idempotency_key": e.identifier}
                )
            except stripe.StripeError as exc:
                verdict = classify(exc)
                self._metrics.responses.labels(str(verdict.status)).inc()
                if verdict.status == 429:
                    self._metrics.rate_limited.inc()
                if verdict.status == 400 and _DUPLICATE in str(exc.user_message or exc):
                    # Stripe has it already (an earlier try was applied): that is "sent".
                    result.sent.append(e)
                elif verdict.retry:
                    # Stop this group here, to keep its order; the rest are retried with it.
                    result.retry.extend(group[i:])
                    result.retry_after = max(result.retry_after or 0.0, verdict.retry_after or 0.0)
                    result.error = verdict.message
                    return
                else:
                    result.failed.append((e, verdict.message))
                    result.error = verdict.message
                continue
            self._metrics.responses.labels("200").inc()
            result.sent.append(e)

    async def close(self) -> None:
        if self._http._cached_session is not None:
            await self._http.close_async()
