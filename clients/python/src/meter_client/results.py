"""What the client reports back: rejected events, failed batches and reads, running counters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class MeterClientError(Exception):
    """Base of the errors the client raises or reports."""


class ClientClosed(MeterClientError):
    """`record` after `aclose()` began (or while blocked on a full buffer when it did)."""


@dataclass(frozen=True, slots=True)
class RejectedEvent:
    """An event the server refused (`status: rejected`): resending it cannot succeed, so it
    is reported once and dropped. `reason` is the API's stable code (e.g. `too_late`)."""

    id: str | None
    reason: str
    message: str
    event: dict[str, Any]


class BatchFailed(MeterClientError):
    """A batch was not delivered and has been dropped from the buffer.

    Either the server refused the request as a whole (400, 401, 413 and other non-retryable
    statuses: `retryable` False) or every attempt failed (`retryable` True). The `events` keep
    their ids, so recording them again later is safe: whatever did reach the server is answered
    `duplicate`.
    """

    def __init__(
        self,
        message: str,
        *,
        events: list[dict[str, Any]],
        status: int | None,
        error_type: str | None,
        retryable: bool,
        attempts: int,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.events = events
        self.status = status
        self.error_type = error_type
        self.retryable = retryable
        self.attempts = attempts


class AuthenticationFailed(BatchFailed):
    """The server refused the API key (401) or what it may do (403).

    Every later batch would be refused the same way, so the client stops sending: this batch
    and every event still buffered go to `on_error`, and from then on `record`, `flush` and
    `aclose` raise this error, so a wrong or revoked key reaches the caller instead of being
    dropped one log line at a time.
    """


class RequestFailed(MeterClientError):
    """A read (`usage`, `usage_history`) got no answer, or an answer other than 2xx.

    `status` is the HTTP status, or None when no answer arrived (connection refused or reset,
    `request_timeout` passed): the aiohttp or timeout error is the `__cause__`. `error_type`,
    `message` and `param` come from the server's `{"error": {"type", "message", "param"}}`
    (e.g. 400 `invalid_request_error` naming the bad `param`, 404 `not_found`). A refused key is
    a RequestFailed too (401 `authentication_error`): `AuthenticationFailed` carries a batch's
    events, and a read has none; it does not stop the client either. Reads are never retried:
    on 429 or 503 the caller decides whether to read again.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        error_type: str | None = None,
        param: str | None = None,
    ) -> None:
        what = "no response" if status is None else f"HTTP {status}"
        kind = f" {error_type}" if error_type else ""
        super().__init__(f"{what}{kind}: {message}")
        self.message = message
        self.status = status
        self.error_type = error_type
        self.param = param


@dataclass
class ClientStats:
    """Running totals, in events unless named otherwise."""

    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    failed: int = 0
    batches: int = 0
    retries: int = 0
    statuses: dict[str, int] = field(default_factory=dict)  # per attempt: "200", "503", "error"
