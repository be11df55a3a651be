"""What the client reports back: rejected events, failed batches, running counters."""

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
