"""Deterministic meter event identifiers: the same unit and version always give the same one.

Stripe deduplicates meter events by `identifier` (at least 24 h), so a resend after a timeout or
a crash must carry exactly the identifier of the first try. It is derived from the reported unit
(bucket or billing period) key and its version only; never from time or randomness. Pure.
"""

from __future__ import annotations

import hashlib

MAX_IDENTIFIER = 100
PREFIX = "mtr1"


def unit_key(
    tenant: str,
    customer: str,
    meter: str,
    item: str,
    unit: str,
    unit_start_ms: int,
    dims: str = "",
) -> str:
    """A fixed-length digest of a reported unit's key (ids may be up to 100 chars each). A
    bucket's combination of dimension values is part of it when it has one, so each
    combination is deduplicated on its own; keys without one are as they always were."""
    parts = (tenant, customer, meter, item, unit, str(unit_start_ms))
    raw = "\x1f".join((*parts, dims) if dims else parts)
    return hashlib.sha256(raw.encode()).hexdigest()[:40]


def identifier(key: str, version: int) -> str:
    """`mtr1_<unit key>_<version>`: at most 5 + 40 + 1 + 19 = 65 characters."""
    if version < 1:
        raise ValueError("versions start at 1")
    ident = f"{PREFIX}_{key}_{version}"
    assert len(ident) <= MAX_IDENTIFIER
    return ident
