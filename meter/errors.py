"""The MeteringError hierarchy. Adapters translate driver/SDK errors into these; the HTTP error
middleware turns them into `{"error": {"type", "message", "param"}}` responses."""

from __future__ import annotations


class MeteringError(Exception):
    """Base of every error meter raises on purpose."""

    status = 500
    type = "api_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class ConfigError(MeteringError):
    """The configuration is invalid; the process cannot start."""

    type = "config_error"


class InvalidRequest(MeteringError):
    """The client's request cannot be understood (bad JSON, wrong shape, too many events)."""

    status = 400
    type = "invalid_request_error"


class PayloadTooLarge(MeteringError):
    status = 413
    type = "invalid_request_error"


class AuthenticationError(MeteringError):
    status = 401
    type = "authentication_error"


class Unavailable(MeteringError):
    """A dependency is down or saturated; nothing was written, retry after `retry_after` s."""

    status = 503
    type = "unavailable"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(Unavailable):
    """The API key is over its request rate; nothing was read or written, retry after
    `retry_after` s. An Unavailable so that the error middleware sends Retry-After."""

    status = 429
    type = "rate_limit_error"


class MigrationError(MeteringError):
    """A migration failed, or an applied migration file was changed afterwards."""

    type = "migration_error"
