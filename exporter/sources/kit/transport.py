"""The transport of every source's HTTP client: httpx2's own, its pool on asyncio's transports.

httpx2's `AsyncHTTPTransport` is an httpcore2 connection pool; the sources'
pool is built the same way, on `network.AsyncioBackend` instead of
httpcore2's anyio backend: the same HTTP/1.1 (h11), pool, limits and
keep-alive, with reads and writes that go to asyncio's transports directly,
a request sent in one write, and an idle-connection check that needs no
anyio attributes (see `network`). Measured at 10,000 Bird targets in
docs/performance.md.

httpx2 honours the proxy variables (`HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`…)
only when it builds its transports itself, so with a proxy configured the
sources keep httpx2's own transports.
"""

from __future__ import annotations

from urllib.request import getproxies

import httpcore2
import httpx2

from exporter.sources.kit.network import AsyncioBackend


def source_transport(max_in_flight: int) -> httpx2.AsyncBaseTransport | None:
    """The transport for a source's client; None (httpx2's own) when the
    environment names a proxy, which httpx2 applies to its own only."""
    if {"http", "https", "all"} & getproxies().keys():
        return None
    return SourceTransport(httpx2.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight))


class SourceTransport(httpx2.AsyncHTTPTransport):
    """httpx2's transport (no proxy: httpx2 mounts its own for proxied
    hosts), its connection pool built on `AsyncioBackend`."""

    def __init__(self, limits: httpx2.Limits) -> None:
        super().__init__(limits=limits)
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=httpx2.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=AsyncioBackend(),
        )
