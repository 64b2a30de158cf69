"""The sources' network streams: httpcore2's backend interface on asyncio's own transports.

httpcore2 (under httpx2) reads and writes through a network backend; its
own for asyncio is anyio's, which wraps asyncio's transports again and puts
a cancel scope (`fail_after`), an exception map and a checkpoint (one more
pass of the event loop) around every read and write. At 10,000 Bird targets
polled every minute those layers were about a sixth of the exporter's CPU
(a py-spy profile; docs/performance.md). This backend speaks to asyncio's
transports directly: a protocol that keeps what arrived, `asyncio.timeout`
only when a read or write has to wait, and httpcore2's own exceptions.

What it keeps of anyio's behaviour:
- TCP_NODELAY (asyncio sets it on TCP transports), `socket_options` applied
  after connecting, a local address, and every address tried as RFC 8305
  says, families alternating, a new attempt every 250 ms (`connected_socket`);
- TLS through `loop.start_tls` on the same connection, the server name
  checked by the given context;
- reads bounded: past `HIGH_WATER` bytes not yet read, the transport stops
  reading from the socket until the reader catches up, so a server that
  sends faster than a body is consumed cannot fill our memory (the size
  limits and byte budget of `kit/http.py` see every byte as it is read);
- the errors httpcore2 maps for anyio: ConnectError/ConnectTimeout,
  ReadError/ReadTimeout, WriteError/WriteTimeout.

A request's head and body go out in one write (httpcore2 writes each h11
event on its own: two `send` calls and two TLS records for every POST; on
loopback the receiver's work is charged to the sender's `send`): writes wait
in the stream until httpcore2 reads the answer, which it always does next
on an HTTP/1.1 connection (the sources send no CONNECT or Upgrade), or
until they pass `FLUSH_BYTES`. A failed send at that read is passed over as
httpcore2 passes over a failed write of the request: a server may answer
and close before it read the whole request, and the read then gets the
answer or the close.

Whether an idle connection was closed by the server (httpcore2 asks before
reusing it) is answered from what the protocol saw (data, end of stream,
a lost connection) and, for a close the event loop has not read yet, a
`poll(2)` of the socket.
"""

from __future__ import annotations

import asyncio
import itertools
import select
import socket
import ssl
import sys
from collections import deque
from collections.abc import Iterable
from typing import Any

import httpcore2

# Bytes received but not yet read past which the socket is not read any more.
HIGH_WATER = 256 * 1024
# Pending request bytes past which a write is sent at once: a large body
# (a backfill's) is not held twice, and its first bytes leave early.
FLUSH_BYTES = 64 * 1024
# As anyio, after RFC 8305: the next address is tried if one has not
# connected within this time.
HAPPY_EYEBALLS_DELAY = 0.25


class AsyncioBackend(httpcore2.AsyncNetworkBackend):
    """httpcore2's network backend on asyncio transports."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                sock = await connected_socket(host, port, local_address)
                try:
                    transport, protocol = await loop.create_connection(_Receiver, sock=sock)
                except BaseException:
                    sock.close()
                    raise
        except TimeoutError:
            raise httpcore2.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as exc:
            raise httpcore2.ConnectError(str(exc) or type(exc).__name__) from exc
        stream = AsyncioStream(transport, protocol)
        try:
            for option in socket_options or ():
                transport.get_extra_info("socket").setsockopt(*option)
        except OSError as exc:
            await stream.aclose()
            raise httpcore2.ConnectError(str(exc)) from exc
        return stream

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_unix_connection(_Receiver, path)
        except TimeoutError:
            raise httpcore2.ConnectTimeout(f"connecting to {path} timed out") from None
        except OSError as exc:
            raise httpcore2.ConnectError(str(exc) or type(exc).__name__) from exc
        return AsyncioStream(transport, protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def connected_socket(host: str, port: int, local_address: str | None = None) -> socket.socket:
    """A socket connected to one of `host`'s addresses, tried as RFC 8305
    says: families alternating, the next attempt started when one fails or
    has not connected within `HAPPY_EYEBALLS_DELAY`, the first to connect
    kept. Every other socket is closed before this returns or raises,
    cancelled too. (asyncio's own `happy_eyeballs_delay` leaves a socket
    open when it is cancelled as an attempt connects, in Python 3.11.)"""
    loop = asyncio.get_running_loop()
    infos = _interleaved(await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    if not infos:
        raise OSError(f"no address for {host}")
    if len(infos) == 1:
        return await _connect_one(infos[0], local_address)
    errors: list[OSError] = []
    attempts: set[asyncio.Task[socket.socket]] = set()
    try:
        for info in infos:
            attempts.add(loop.create_task(_connect_one(info, local_address)))
            done, attempts = await asyncio.wait(attempts, timeout=HAPPY_EYEBALLS_DELAY,
                                                return_when=asyncio.FIRST_COMPLETED)
            if (won := _first_connected(done, errors)) is not None:
                return won
        while attempts:
            done, attempts = await asyncio.wait(attempts, return_when=asyncio.FIRST_COMPLETED)
            if (won := _first_connected(done, errors)) is not None:
                return won
    finally:
        for attempt in attempts:
            attempt.cancel()  # an attempt closes its socket when cancelled
        if attempts:
            await asyncio.wait(attempts)
            for attempt in attempts:  # one may have connected before it saw the cancel
                if not attempt.cancelled() and attempt.exception() is None:
                    attempt.result().close()
    if len({str(error) for error in errors}) == 1:
        raise errors[0]
    raise OSError("; ".join(str(error) for error in errors))


def _interleaved(infos: list[Any]) -> list[Any]:
    """Addresses alternating by family, the first family first (RFC 8305 §4)."""
    families: dict[int, list[Any]] = {}
    for info in infos:
        families.setdefault(info[0], []).append(info)
    return [info for group in itertools.zip_longest(*families.values()) for info in group if info is not None]


async def _connect_one(info: Any, local_address: str | None) -> socket.socket:
    family, kind, proto, _, address = info
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        if local_address:
            sock.bind((local_address, 0))
        await asyncio.get_running_loop().sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


def _first_connected(done: set[asyncio.Task[socket.socket]], errors: list[OSError]) -> socket.socket | None:
    """The socket of the first attempt in `done` that connected (any other
    that did is closed); the failures go to `errors`."""
    won = None
    for attempt in done:
        error = attempt.exception()
        if error is None:
            if won is None:
                won = attempt.result()
            else:
                attempt.result().close()
        elif isinstance(error, OSError):
            errors.append(error)
        else:
            if won is not None:
                won.close()
            raise error
    return won


class _Receiver(asyncio.Protocol):
    """What arrived on one connection, for one reader; and whether writing
    must wait (the transport's buffer is over its high-water mark)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.ended = False  # end of stream, or the connection lost
        self.error: BaseException | None = None
        self.paused_reading = False
        self.waiter: asyncio.Future[None] | None = None  # a reader's, or a writer's waiting to drain
        self.can_write = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER and not self.paused_reading and self.transport is not None:
            self.paused_reading = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.ended = True
        self._wake()
        return False  # close the transport: HTTP/1.1 has no half-closed use here

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        self.error = exc
        self.can_write = True
        self._wake()

    def pause_writing(self) -> None:
        self.can_write = False

    def resume_writing(self) -> None:
        self.can_write = True
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def take(self, max_bytes: int) -> bytes:
        chunk = self.chunks.popleft()
        if len(chunk) > max_bytes:
            self.chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        self.buffered -= len(chunk)
        if self.paused_reading and self.buffered <= HIGH_WATER // 2 and self.transport is not None:
            self.paused_reading = False
            self.transport.resume_reading()
        return chunk

    async def wait(self, timeout: float | None) -> None:
        """Until something happens on the connection, at most `timeout` seconds
        (TimeoutError)."""
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await self.waiter
        finally:
            self.waiter = None


class AsyncioStream(httpcore2.AsyncNetworkStream):
    def __init__(self, transport: asyncio.Transport, receiver: _Receiver) -> None:
        self._transport = transport
        self._receiver = receiver
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._write_timeout: float | None = None

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._pending:
            try:
                await self._flush()
            except httpcore2.WriteError:
                pass  # the answer, or the close, is still to be read (module docstring)
        receiver = self._receiver
        # A loop: the waiter is also woken when writing may resume.
        while not receiver.chunks and not receiver.ended:
            try:
                await receiver.wait(timeout)
            except TimeoutError:
                raise httpcore2.ReadTimeout(f"no data within {timeout}s") from None
        if receiver.chunks:
            return receiver.take(max_bytes)
        if receiver.error is not None:
            raise httpcore2.ReadError(str(receiver.error) or type(receiver.error).__name__)
        return b""

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
        receiver = self._receiver
        if self._transport.is_closing() or receiver.error is not None:
            raise httpcore2.WriteError("the connection is closed")
        self._transport.write(data)
        while not receiver.can_write and not receiver.ended:
            try:
                await receiver.wait(self._write_timeout)
            except TimeoutError:
                raise httpcore2.WriteTimeout(f"could not write within {self._write_timeout}s") from None
        if receiver.error is not None:
            raise httpcore2.WriteError(str(receiver.error) or type(receiver.error).__name__)

    async def aclose(self) -> None:
        self._pending, self._pending_bytes = [], 0  # a closing connection sends nothing more
        # As anyio: close (TLS says goodbye if it can at once), let the event
        # loop run the close, then drop whatever is left, so that the socket
        # is closed when this returns, even if the loop stops next.
        self._transport.close()
        await asyncio.sleep(0)
        self._transport.abort()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore2.AsyncNetworkStream:
        if self._pending:
            await self._flush()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(self._transport, self._receiver, ssl_context,
                                                 server_hostname=server_hostname)
        except TimeoutError:
            self._transport.close()
            raise httpcore2.ConnectTimeout("TLS handshake timed out") from None
        except (OSError, ssl.SSLError) as exc:
            self._transport.close()
            raise httpcore2.ConnectError(str(exc) or type(exc).__name__) from exc
        if transport is None:
            raise httpcore2.ConnectError("the connection closed during the TLS handshake")
        self._receiver.transport = transport
        return AsyncioStream(transport, self._receiver)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            receiver = self._receiver
            return bool(receiver.chunks) or receiver.ended or socket_readable(self._transport.get_extra_info("socket"))
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        return None


def socket_readable(sock: Any) -> bool:
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

