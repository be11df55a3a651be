"""What a webhook endpoint may be: its URL, the event types it takes, a rotation's overlap. Pure.

Each check raises InvalidRequest naming the field at fault, so a client's mistake is a 400 that
says what to fix (and the CLI prints the same sentence).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from typing import Any, Final

from yarl import URL

from meter.errors import InvalidRequest
from meter.webhooks.events import EVENT_TYPES

MAX_URL_CHARS: Final = 2048
# A rotated-out secret keeps signing this long by default (Stripe's roll offers up to 7 days).
DEFAULT_OVERLAP_S: Final = 24 * 3600
MAX_OVERLAP_S: Final = 7 * 24 * 3600
WILDCARD: Final = "*"


# IPv6 prefixes that carry an IPv4 address in their last 32 bits (NAT64 RFC 6052, SIIT): judged
# by that address, so 64:ff9b::a9fe:a9fe is 169.254.169.254.
_EMBEDDING = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("::ffff:0:0:0/96"))
# Refused whole: IPv4-compatible addresses (deprecated) and local-use NAT64 (RFC 8215).
_REFUSED = (ipaddress.IPv6Network("::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


def non_global(address: str) -> bool:
    """An IP address (text) no tenant's webhook may reach unless METER_NOTIFIER_PRIVATE_URLS:
    loopback, private, link-local, shared, reserved, unspecified or multicast, an IPv4 address
    inside IPv6 (mapped, NAT64, 6to4) judged as itself. Not an IP address: False."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # a zone id (fe80::1%eth0) aside
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in net for net in _REFUSED):
            return True
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
        elif any(ip in net for net in _EMBEDDING):
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return not ip.is_global or ip.is_multicast


def private_host(host: str) -> bool:
    """A URL host that names a non-global address outright: an IP literal (IPv4 in any form
    the C library reads, 127.1 or 2130706433 or 0x7f.0.0.1) or localhost."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost") or non_global(name):
        return True
    try:
        packed = socket.inet_aton(name)  # numeric IPv4 forms getaddrinfo would accept too
    except OSError:
        return False
    return non_global(socket.inet_ntoa(packed))


def check_url(value: Any, *, allow_private: bool) -> str:
    """An absolute http(s) URL with a host, without credentials or a fragment; a host that is
    a non-global address outright only with `allow_private` (a name resolving to one is refused
    by the notifier when it connects, notifier/egress.py)."""
    if not isinstance(value, str) or not value:
        raise InvalidRequest("`url` is required: an http:// or https:// URL", param="url")
    if len(value) > MAX_URL_CHARS:
        raise InvalidRequest(f"`url` is longer than {MAX_URL_CHARS} characters", param="url")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidRequest("`url` must not contain spaces or control characters", param="url")
    try:
        url = URL(value)
        host = url.raw_host
    except (ValueError, TypeError, UnicodeError):
        raise InvalidRequest("`url` is not a valid URL", param="url") from None
    if url.scheme not in ("http", "https"):
        raise InvalidRequest("`url` must start with http:// or https://", param="url")
    if not host:
        raise InvalidRequest("`url` has no host", param="url")
    if url.user is not None or url.password is not None:
        raise InvalidRequest("`url` must not hold credentials (user:password@)", param="url")
    if url.fragment:
        raise InvalidRequest("`url` must not have a #fragment", param="url")
    if not allow_private and private_host(host):
        raise InvalidRequest(
            f"`url` points at a private or loopback address ({host}); webhooks go to public "
            "addresses only unless the operator sets METER_NOTIFIER_PRIVATE_URLS=1",
            param="url",
        )
    return value


def check_event_types(value: Any) -> list[str]:
    """A non-empty list of known event types (or `*`: every type, now and later), deduplicated
    in their order."""
    known = ", ".join(EVENT_TYPES)
    if not isinstance(value, list) or not value:
        raise InvalidRequest(
            f"`enabled_events` is required: a non-empty list of event types ({known}, or *)",
            param="enabled_events",
        )
    types: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or (item not in EVENT_TYPES and item != WILDCARD):
            shown = repr(item)[:80]
            raise InvalidRequest(
                f"`enabled_events[{i}]` {shown} is not an event type: one of {known}, or *",
                param="enabled_events",
            )
        if item not in types:
            types.append(item)
    return types


def subscribes(enabled_events: Sequence[str], event_type: str) -> bool:
    return WILDCARD in enabled_events or event_type in enabled_events


def check_overlap(value: Any) -> int:
    """Seconds a rotated-out secret keeps signing: 0 (it stops now) .. 7 days; default 24 h."""
    if value is None:
        return DEFAULT_OVERLAP_S
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_OVERLAP_S:
        raise InvalidRequest(
            f"`expires_in` is whole seconds from 0 to {MAX_OVERLAP_S} (7 days)",
            param="expires_in",
        )
    return value


def check_flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(f"`{name}` is true or false", param=name)
    return value


def unknown_fields(doc: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise InvalidRequest(f"unknown field `{unknown[0][:80]}`", param=unknown[0][:80])
