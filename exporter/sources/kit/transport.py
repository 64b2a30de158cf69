"""The transport of every source's HTTP client: httpx2's own, with a cheaper idle-connection check
and a request sent in one write.

httpcore2's pool asks each idle connection whether the server has closed it
(`get_extra_info("is_readable")`) whenever a request starts or ends. Its
anyio stream answers through anyio's typed attributes, which build a dict
of lambdas on every call: about 25 µs per idle connection, with up to
`max_in_flight` (32) connections kept alive. At 10,000 Bird targets polled
every minute that was a tenth of the exporter's CPU; answered from the
socket the stream keeps, the same benchmark went from 37% to 33% of a core
(`benchmarks/scale.py`, docs/performance.md).

The check itself is httpcore2's: an idle HTTP/1.1 connection whose socket is
readable can only be about to read the server's close, so it is dropped
before a request is sent on it. Everything else (connecting, TLS, reads,
writes, timeouts) is anyio's, through httpcore2's public backend interface.

The stream also sends a request's head and body in one write, where
httpcore2 writes each h11 event on its own: two `send` calls (and two TLS
records, two anyio checkpoints) for every POST. At 10,000 Bird targets the
socket writes were a sixth of the exporter's CPU (a py-spy profile on the
2-core VM; loopback charges the receiver's work to the sender's `send`). So
writes wait in the stream until httpcore2 reads the answer, which it always
does next on an HTTP/1.1 connection, or until they pass `FLUSH_BYTES`.
A failed send at that read is passed over as httpcore2 passes over a failed
write of the request: a server may answer and close before it read the
whole request, and the read then gets the answer or the close.

httpx2 honours the proxy variables (`HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`…)
only when it builds its transports itself, so with a proxy configured the
sources keep httpx2's own transports.
"""

from __future__ import annotations

import select
import socket
import ssl
import sys
from collections.abc import Iterable
from typing import Any
from urllib.request import getproxies

import httpcore2
import httpx2


def source_transport(max_in_flight: int) -> httpx2.AsyncBaseTransport | None:
    """The transport for a source's client; None (httpx2's own) when the
    environment names a proxy, which httpx2 applies to its own only."""
    if {"http", "https", "all"} & getproxies().keys():
        return None
    return SourceTransport(httpx2.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight))


class SourceTransport(httpx2.AsyncHTTPTransport):
    """httpx2's transport (no proxy: httpx2 mounts its own for proxied
    hosts), its connection pool built on `CheapProbeBackend`."""

    def __init__(self, limits: httpx2.Limits) -> None:
        super().__init__(limits=limits)
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=httpx2.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=CheapProbeBackend(),
        )


class CheapProbeBackend(httpcore2.AsyncNetworkBackend):
    """httpcore2's anyio backend, its streams wrapped in `_ProbedStream`."""

    def __init__(self) -> None:
        self._backend = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        return _ProbedStream(await self._backend.connect_tcp(host, port, timeout, local_address, socket_options))

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.AsyncNetworkStream:
        return _ProbedStream(await self._backend.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


# Pending request bytes past which a write is sent at once: a large body
# (a backfill's) is not held twice, and its first bytes leave early.
FLUSH_BYTES = 64 * 1024


class _ProbedStream(httpcore2.AsyncNetworkStream):
    def __init__(self, stream: httpcore2.AsyncNetworkStream) -> None:
        self._stream = stream
        # The raw socket, under TLS too: what httpcore2 itself probes.
        self._socket: socket.socket | None = stream.get_extra_info("socket")
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._write_timeout: float | None = None

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._pending:
            try:
                await self._flush()
            except httpcore2.WriteError:
                pass  # the answer, or the close, is still to be read (module docstring)
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        self._pending.append(buffer)
        self._pending_bytes += len(buffer)
        self._write_timeout = timeout
        if self._pending_bytes >= FLUSH_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending, self._pending_bytes = [], 0
        await self._stream.write(data, self._write_timeout)

    async def aclose(self) -> None:
        self._pending, self._pending_bytes = [], 0  # a closing connection sends nothing more
        await self._stream.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore2.AsyncNetworkStream:
        if self._pending:
            await self._flush()
        return _ProbedStream(await self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return socket_readable(self._socket)
        return self._stream.get_extra_info(info)


def socket_readable(sock: socket.socket | None) -> bool:
    """Whether a read would return at once (data, or the server's close). A
    socket that is gone counts as readable: its next read returns b""."""
    fd = -1 if sock is None else sock.fileno()
    if fd < 0:
        return True
    if sys.platform == "win32" or not hasattr(select, "poll"):
        return bool(select.select([fd], [], [], 0)[0])
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))
