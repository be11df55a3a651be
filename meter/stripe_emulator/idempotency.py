"""`Idempotency-Key` replay, as Stripe does it.

The first request with a key runs and its response is kept (24 h). The same key with the same
method, path and parameters gets that response again, byte for byte, marked `Idempotent-Replayed`.
The same key with anything different is a 400 `idempotency_error`; a key whose first request is
still running is a 409. Server errors (5xx) are not kept, so a retry runs again, as in Stripe.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson

from meter.stripe_emulator.wire import Obj, StripeError

TTL_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Stored:
    fingerprint: str
    status: int
    body: bytes
    created: float


def fingerprint(method: str, path: str, params: Obj) -> str:
    doc = orjson.dumps([method.upper(), path, params], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(doc).hexdigest()


class IdempotencyStore:
    """Responses by (api key, idempotency key)."""

    def __init__(self) -> None:
        self._done: dict[tuple[str, str], Stored] = {}
        self._running: set[tuple[str, str]] = set()

    def begin(self, scope: str, key: str, fp: str, now: float) -> Stored | None:
        """A stored response to replay, or None after marking the key as running.

        Raises Stripe's idempotency errors for a mismatch or a concurrent use.
        """
        slot = (scope, key)
        stored = self._done.get(slot)
        if stored is not None and now - stored.created > TTL_SECONDS:
            del self._done[slot]
            stored = None
        if stored is not None:
            if stored.fingerprint != fp:
                raise StripeError(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with. Try using a key other than "
                    f"'{key}' if you meant to execute a different request.",
                    type_="idempotency_error",
                )
            return stored
        if slot in self._running:
            raise StripeError(
                409,
                "There is currently another in-progress request using this Idempotent Key "
                "(that probably means you submitted twice, and the other request is still "
                "going through): " + key + ". Please try again later.",
                type_="idempotency_error",
            )
        self._running.add(slot)
        return None

    def finish(self, scope: str, key: str, fp: str, status: int, body: bytes, now: float) -> None:
        slot = (scope, key)
        self._running.discard(slot)
        if status < 500:
            self._done[slot] = Stored(fp, status, body, now)

    def abandon(self, scope: str, key: str) -> None:
        """The request died before it produced a response: let a retry run it."""
        self._running.discard((scope, key))

    def clear(self) -> None:
        self._done.clear()
        self._running.clear()
