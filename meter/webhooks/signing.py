"""The `Meter-Signature` header of an outgoing webhook: signing and verifying it. Pure.

The scheme is Stripe's (https://stripe.com/docs/webhooks/signatures#verify-manually):
`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, one `v1` per secret that signs,
so a receiver holding either the old or the new secret verifies during a rotation. The
timestamp is inside the signed text: a replayed request is refused once it is older than the
receiver's tolerance.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets as random_secrets
from collections.abc import Iterable, Sequence

HEADER = "Meter-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300
SECRET_PREFIX = "whsec_"


class SignatureError(ValueError):
    """The header is missing, malformed, too old, or no signature matches."""


def new_secret() -> str:
    """A fresh signing secret (256 bits), used as it is as the HMAC key."""
    return SECRET_PREFIX + random_secrets.token_urlsafe(32)


def compute(secret: str, timestamp: int, payload: bytes) -> str:
    """The hex HMAC-SHA256 of `<timestamp>.<payload>` under `secret`."""
    signed = str(timestamp).encode() + b"." + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def header(payload: bytes, secrets: Iterable[str], timestamp: int) -> str:
    """The header value signing `payload` at `timestamp` with each of `secrets`."""
    parts = [f"t={timestamp}"]
    parts += [f"{SCHEME}={compute(s, timestamp, payload)}" for s in secrets]
    if len(parts) == 1:
        raise ValueError("a webhook is signed with at least one secret")
    return ",".join(parts)


def parse(value: str) -> tuple[int, list[str]]:
    """(timestamp, v1 signatures) of a header; other schemes are ignored, as Stripe says."""
    timestamp: int | None = None
    signatures: list[str] = []
    for item in value.split(","):
        key, sep, val = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(val)
            except ValueError:
                raise SignatureError("the header's timestamp `t` is not an integer") from None
        elif key == SCHEME:
            signatures.append(val)
    if timestamp is None:
        raise SignatureError("the header has no timestamp `t=`")
    if not signatures:
        raise SignatureError(f"the header has no `{SCHEME}=` signature")
    return timestamp, signatures


def verify(
    payload: bytes,
    value: str,
    secrets: Sequence[str],
    *,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE_S,
) -> int:
    """The header's timestamp when one of its signatures is `payload`'s under one of `secrets`
    and it is at most `tolerance` seconds from `now`; SignatureError otherwise."""
    timestamp, signatures = parse(value)
    if tolerance > 0 and abs(now - timestamp) > tolerance:
        raise SignatureError(f"the timestamp is more than {tolerance:g} s from now")
    for secret in secrets:
        expected = compute(secret, timestamp, payload)
        if any(hmac.compare_digest(expected, s) for s in signatures):
            return timestamp
    raise SignatureError("no signature matches the payload under the given secret(s)")
