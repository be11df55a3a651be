"""Tenant names, and the parts of composite keys built from names. Pure.

A tenant name is 1..64 characters of `A-Z a-z 0-9 _ . -`, starting with a letter or digit
(`meter keys create` refuses any other). Redis dedupe keys and Stripe idempotency keys join
names with `:`; a part holding `:` could then end where another begins (tenant `acme` with event
`x:inv-42` and tenant `acme:x` with event `inv-42` made one key). Tenant names cannot hold `:`,
and every part that might (a tenant stored before names were checked, customer and event ids)
goes through `key_part`, which escapes `%` and `:` — the key of a part without them is unchanged.
"""

from __future__ import annotations

import re

from meter.errors import InvalidRequest

MAX_TENANT_CHARS = 64
TENANT_CHARSET = "A-Z a-z 0-9 _ . - (starting with a letter or digit)"
_TENANT = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_TENANT_CHARS - 1}}}")


def check_tenant(name: str) -> str:
    """`name` when it is a valid tenant name, else InvalidRequest saying what one is."""
    if _TENANT.fullmatch(name) is None:
        raise InvalidRequest(
            f"tenant {name[:80]!r} is not a tenant name: 1..{MAX_TENANT_CHARS} characters of "
            f"{TENANT_CHARSET}",
            param="tenant",
        )
    return name


def key_part(text: str) -> str:
    """`text` for a `:`-joined key: `%` → `%25`, `:` → `%3A` (reversible, so two different
    parts never give one key; text without either character is returned as it is)."""
    if "%" in text or ":" in text:
        return text.replace("%", "%25").replace(":", "%3A")
    return text
