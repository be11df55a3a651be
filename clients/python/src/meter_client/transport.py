"""One POST of one batch, its outcome classified; the retry loop lives in the client."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from meter_client.retry import is_retryable_status, parse_retry_after


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of one request. `status` is None when no HTTP answer arrived (connection
    refused or reset, timeout): the batch may or may not have been committed."""

    status: int | None
    doc: Any = None
    retry_after: float | None = None
    error: str | None = None

    @property
    def retryable(self) -> bool:
        return self.status is None or is_retryable_status(self.status)

    @property
    def error_type(self) -> str | None:
        err = self.doc.get("error") if isinstance(self.doc, dict) else None
        return str(err.get("type")) if isinstance(err, dict) else None

    def describe(self) -> str:
        if self.status is None:
            return f"no response: {self.error}"
        err = self.doc.get("error") if isinstance(self.doc, dict) else None
        detail = err.get("message") if isinstance(err, dict) else self.error
        return f"HTTP {self.status}: {detail}"


async def post_batch(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    deadline: aiohttp.ClientTimeout,
) -> Attempt:
    """POST the batch; never raises for network trouble, which is an Attempt without status."""
    try:
        async with session.post(url, data=body, headers=headers, timeout=deadline) as response:
            raw = await response.read()
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            status = response.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Attempt(None, error=f"{type(exc).__name__}: {exc}")
    try:
        doc = json.loads(raw) if raw else None
    except ValueError:
        # Not JSON (a proxy's HTML error page, say): the status alone decides what happens next.
        doc = None
    return Attempt(status, doc, retry_after)
