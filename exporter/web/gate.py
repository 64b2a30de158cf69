"""Per-connection bounds in front of aiohttp's HTTP protocol.

aiohttp bounds one request line and one header (`max_line_size`,
`max_field_size`), the number of headers (`max_headers`) and idle
connections (`keepalive_timeout`, armed from the connection's start). It
does not bound the total size of a request head (128 headers of 8 KiB are
1 MiB a connection), the time a client takes to send it byte by byte, or
the number of open connections; and with `ssl=` on `create_server` a
connection still in its TLS handshake is invisible to it.

`ConnectionGate` is the asyncio protocol the listening socket creates for
every connection. It refuses the connection when `max_connections` are open,
runs the TLS handshake itself (`loop.start_tls`), counts the bytes and lines
of each request head before aiohttp sees them (431 past the limits), and
closes the connection when the head is not complete within `read_timeout`
of the connection's start (the handshake included) or of its first byte
(later requests on a kept-alive connection), or when the answer is not
written within `write_timeout` (a client that stops reading). Everything
else is forwarded to aiohttp's protocol unchanged.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from prometheus_client import CollectorRegistry

from exporter.selfmetrics import process_counter, process_gauge

if TYPE_CHECKING:
    from exporter.web.auth import TlsContext

log = logging.getLogger(__name__)

# Why the server closed a connection on a limit (the `reason` label).
REJECT_REASONS = ("max_connections", "headers_too_large", "read_timeout", "write_timeout")
CAP_LOG_INTERVAL = 60.0


def _plain_answer(status: str, body: str) -> bytes:
    """A whole HTTP answer, written by the gate itself before aiohttp is involved."""
    data = body.encode()
    head = (f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {len(data)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + data


_TOO_LARGE = _plain_answer("431 Request Header Fields Too Large", "request header fields too large\n")
_BUSY = _plain_answer("503 Service Unavailable", "too many open connections (server.max_connections)\n")


@dataclass(frozen=True)
class ServerLimits:
    """What one client can make the server hold ([server] keys of the same names)."""

    max_connections: int = 1024
    read_timeout: float = 10.0
    idle_timeout: float = 75.0
    write_timeout: float = 120.0
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100


class ServerMetrics:
    """The server's own metrics, in the app's registry (or a private one)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        self.rejected = process_counter("apimetrics_http_connections_rejected", registry)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        self.open = process_gauge("apimetrics_http_open_connections", registry)


class _State(enum.Enum):
    HEAD = 1  # receiving a request head: bytes counted, deadline armed
    BUSY = 2  # the head is complete; the request is being served
    IDLE = 3  # kept alive between requests (aiohttp's keepalive_timeout applies)


class Gatekeeper:
    """What the gates of one listening socket share: the limits, the open
    connections, the factory of aiohttp protocols and the metrics."""

    def __init__(self, limits: ServerLimits, make_inner: Callable[[], asyncio.Protocol],
                 tls: TlsContext | None, metrics: ServerMetrics) -> None:
        self.limits = limits
        self.make_inner = make_inner
        self.tls = tls
        self.metrics = metrics
        self.gates: set[ConnectionGate] = set()
        self.by_inner: dict[object, ConnectionGate] = {}
        self._last_cap_log = -math.inf
        self._refused_since_log = 0
        metrics.open.set_function(lambda: len(self.gates))

    def __call__(self) -> ConnectionGate:
        """The protocol factory given to `loop.create_server`."""
        return ConnectionGate(self)

    def gate_of(self, inner: object) -> ConnectionGate | None:
        return self.by_inner.get(inner)

    def at_capacity(self) -> bool:
        if len(self.gates) < self.limits.max_connections:
            return False
        self.metrics.rejected.labels("max_connections").inc()
        self._refused_since_log += 1
        now = asyncio.get_running_loop().time()
        if now - self._last_cap_log >= CAP_LOG_INTERVAL:
            # One line when the cap is reached, then at most one a minute while it lasts.
            since = "" if self._last_cap_log == -math.inf else \
                f" ({self._refused_since_log} refused since the last such line)"
            log.warning("server.max_connections reached, %d HTTP connections open: new connections are closed "
                        "until some end%s", len(self.gates), since)
            self._last_cap_log = now
            self._refused_since_log = 0
        return True

    def close_all(self) -> None:
        for gate in list(self.gates):
            gate.abort()


class ConnectionGate(asyncio.Protocol):
    """One connection: admission, TLS handshake, request-head bounds, then aiohttp."""

    def __init__(self, keeper: Gatekeeper) -> None:
        self.keeper = keeper
        self.raw: asyncio.Transport | None = None
        self.transport: asyncio.Transport | None = None  # what aiohttp writes to (TLS or raw)
        self.inner: asyncio.Protocol | None = None
        self.state = _State.HEAD
        self.head_bytes = 0
        self.head_lines = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._handshake: asyncio.Task[None] | None = None
        self._released = False
        self._refused = False
        self._early: list[bytes] = []

    # --- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        raw = self.raw = cast(asyncio.Transport, transport)
        keeper = self.keeper
        if keeper.at_capacity():
            self._released = True
            if keeper.tls is None:
                raw.write(_BUSY)
            raw.close()
            return
        keeper.gates.add(self)
        self._arm("read_timeout")  # one deadline for the handshake and the first request head
        if keeper.tls is None:
            self._attach(raw)
        else:
            raw.pause_reading()  # no ClientHello byte may reach us before start_tls takes over
            self._handshake = asyncio.get_running_loop().create_task(self._start_tls(raw))

    def data_received(self, data: bytes) -> None:
        if self._refused or self._released:
            return
        if self.state is not _State.BUSY:
            if self.state is _State.IDLE:
                self.state, self.head_bytes, self.head_lines = _State.HEAD, 0, 0
                self._arm("read_timeout")
            # A head is its request line, one line per header and an empty line.
            self.head_bytes += len(data)
            self.head_lines += data.count(b"\n")
            limits = self.keeper.limits
            if self.head_bytes > limits.max_header_bytes or self.head_lines > limits.max_headers + 2:
                self._refuse_head()
                return
        if self.inner is None:
            # TLS: the request can come with the client's last handshake
            # message, decrypted before start_tls() returns to us.
            self._early.append(data)
            return
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        inner, self.inner = self.inner, None
        if inner is not None:
            inner.connection_lost(exc)

    # --- signals from the request handler -----------------------------------------

    def request_started(self) -> None:
        """The head is complete and parsed: stop counting; the answer has its own deadline
        (a client that stops reading would hold the connection and its buffer forever)."""
        self.state = _State.BUSY
        self._arm("write_timeout")

    def request_finished(self) -> None:
        self.state = _State.IDLE
        self._disarm()  # aiohttp's keepalive_timeout (idle_timeout) takes over

    def abort(self) -> None:
        if self.raw is not None:
            self.raw.abort()

    # --- internals ----------------------------------------------------------------

    async def _start_tls(self, raw: asyncio.Transport) -> None:
        assert self.keeper.tls is not None
        timeout = self.keeper.limits.read_timeout
        try:
            transport = await asyncio.get_running_loop().start_tls(
                raw, self, self.keeper.tls.current(), server_side=True,
                ssl_handshake_timeout=timeout, ssl_shutdown_timeout=timeout)
        except OSError as exc:  # ssl.SSLError, a reset, the timeout: the client's business
            log.debug("TLS handshake with %s failed: %r", raw.get_extra_info("peername"), exc)
            transport = None
        except Exception:
            log.exception("TLS handshake with %s failed", raw.get_extra_info("peername"))
            transport = None
        finally:
            self._handshake = None
        if transport is None or self._released:
            # asyncio does not call connection_lost for a handshake cut short.
            self._release()
            raw.abort()
            return
        self._attach(transport)

    def _attach(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.inner = self.keeper.make_inner()
        self.keeper.by_inner[self.inner] = self
        self.inner.connection_made(transport)
        early, self._early = self._early, []
        for data in early:
            self.inner.data_received(data)

    def _arm(self, limit: str) -> None:
        self._disarm()
        seconds = getattr(self.keeper.limits, limit)
        self._deadline = asyncio.get_running_loop().call_later(seconds, self._expired, limit)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, limit: str) -> None:
        self._deadline = None
        if self._released:
            return
        self.keeper.metrics.rejected.labels(limit).inc()
        log.debug("closing the connection of %s: server.%s (%ss) ran out", self._peer(), limit,
                  getattr(self.keeper.limits, limit))
        self.abort()

    def _refuse_head(self) -> None:
        self.keeper.metrics.rejected.labels("headers_too_large").inc()
        log.debug("closing the connection of %s: request head over %d bytes or %d headers", self._peer(),
                  self.keeper.limits.max_header_bytes, self.keeper.limits.max_headers)
        self._refused = True  # nothing more reaches aiohttp; it hears of the close in connection_lost
        self._disarm()
        if self.transport is None:  # still in the TLS handshake
            self.abort()
        else:
            self.transport.write(_TOO_LARGE)
            self.transport.close()

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        self._disarm()
        self.keeper.gates.discard(self)
        if self.inner is not None:
            self.keeper.by_inner.pop(self.inner, None)

    def _peer(self) -> object:
        return self.raw.get_extra_info("peername") if self.raw is not None else None
