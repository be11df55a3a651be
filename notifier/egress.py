"""Where the notifier may connect: a tenant's webhook URL must not reach internal services, so
unless METER_NOTIFIER_PRIVATE_URLS is set every address it connects to must be global. Checked
when connecting (each resolution's answers are filtered), so a name that resolves to a private
address later, after the endpoint was created, is refused too (DNS rebinding)."""

from __future__ import annotations

import socket
from typing import Any

from aiohttp import ClientSession, ClientTimeout, TCPConnector
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from meter.webhooks.endpoints import non_global, private_host

REFUSED = "refused: a private or loopback address (METER_NOTIFIER_PRIVATE_URLS=1 allows it)"


class PrivateAddressRefused(OSError):
    """The URL's host is, or resolves only to, non-global addresses."""

    def __init__(self, host: str) -> None:
        super().__init__(f"{host}: {REFUSED}")


class GlobalOnlyResolver(AbstractResolver):
    """The system's answers without the non-global addresses; none left is an error."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allowed = [r for r in found if not non_global(r["host"])]
        if not allowed:
            raise PrivateAddressRefused(host)
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def refused_outright(url: str) -> bool:
    """An IP literal or localhost the resolver never sees (aiohttp connects to literals as
    they are)."""
    host = URL(url).raw_host
    return host is not None and private_host(host)


def session(*, private: bool, concurrency: int, timeout_s: float, **kw: Any) -> ClientSession:
    """The notifier's HTTP session: global addresses only unless `private`."""
    resolver = None if private else GlobalOnlyResolver()
    return ClientSession(
        timeout=ClientTimeout(total=timeout_s),
        connector=TCPConnector(limit=concurrency, resolver=resolver),
        **kw,
    )
