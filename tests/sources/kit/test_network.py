"""The sources' network streams (sources/kit/network.py) on real sockets:
connecting over several addresses, TLS, reads bounded while a reader is
slow, and the errors httpcore2 expects."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpcore2
import pytest

from exporter.sources.kit import network
from exporter.sources.kit.network import AsyncioBackend, connected_socket
from tests.test_webauth import make_cert


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextmanager
def black_hole() -> Iterator[tuple[str, int]]:
    """An address whose connects neither succeed nor fail: a listener that
    never accepts, its backlog full, so the kernel drops further SYNs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    try:
        for _ in range(4):  # Linux admits backlog + 1 connections
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
            fillers.append(filler)
        yield listener.getsockname()
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@asynccontextmanager
async def server(handler: Any, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    srv = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl_context)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # a client that only connected
    finally:
        writer.close()


def _addresses(monkeypatch: pytest.MonkeyPatch, *addresses: tuple[str, int]) -> None:
    """What getaddrinfo answers for any name: DNS with several records cannot run here."""
    async def getaddrinfo(self: Any, host: str, port: int, **_: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", address) for address in addresses]

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", getaddrinfo)


def test_the_next_address_is_tried_when_one_refuses_or_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> tuple[int, float]:
        async with server(_answer) as port:
            refused = socket.socket()
            refused.bind(("127.0.0.1", 0))  # bound, not listening: refused at once
            with refused, black_hole() as silent:
                _addresses(monkeypatch, refused.getsockname(), silent, ("127.0.0.1", port))
                loop = asyncio.get_running_loop()
                started = loop.time()
                async with asyncio.timeout(5):
                    sock = await connected_socket("vendor.example", 443)
                with sock:
                    return sock.getpeername()[1], loop.time() - started

    port, took = asyncio.run(scenario())
    assert port != 0
    # The refused one moved on at once, the silent one after the delay.
    assert network.HAPPY_EYEBALLS_DELAY <= took < 5


def test_a_cancelled_connect_leaves_no_socket_open(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> int:
        with black_hole() as first, black_hole() as second:
            _addresses(monkeypatch, first, second)
            before = _open_fds()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(network.HAPPY_EYEBALLS_DELAY * 2):  # both attempts under way
                    await connected_socket("vendor.example", 443)
            return _open_fds() - before

    assert asyncio.run(scenario()) == 0


def test_every_address_failing_is_a_connect_error(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        refused = socket.socket()
        refused.bind(("127.0.0.1", 0))
        with refused:
            _addresses(monkeypatch, refused.getsockname(), refused.getsockname())
            await AsyncioBackend().connect_tcp("vendor.example", 443, timeout=5)

    with pytest.raises(httpcore2.ConnectError, match="Connect call failed"):
        asyncio.run(scenario())


def test_a_silent_server_is_a_connect_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        with black_hole() as silent:
            _addresses(monkeypatch, silent)
            await AsyncioBackend().connect_tcp("vendor.example", 443, timeout=0.3)

    with pytest.raises(httpcore2.ConnectTimeout):
        asyncio.run(scenario())


async def _stream(port: int) -> httpcore2.AsyncNetworkStream:
    return await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)


def test_reads_wait_for_data_within_their_timeout_and_see_the_close() -> None:
    async def scenario() -> tuple[bytes, bytes]:
        release = asyncio.Event()

        async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await release.wait()
            writer.write(b"late")
            await writer.drain()
            writer.close()

        async with server(slow) as port:
            stream = await _stream(port)
            with pytest.raises(httpcore2.ReadTimeout):
                await stream.read(100, timeout=0.1)
            release.set()
            data = await stream.read(100, timeout=5)
            end = await stream.read(100, timeout=5)
            await stream.aclose()
            return data, end

    assert asyncio.run(scenario()) == (b"late", b"")


def test_a_reset_connection_is_a_read_error() -> None:
    async def scenario() -> None:
        async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            writer.transport.abort()

        async with server(reset) as port:
            stream = await _stream(port)
            await stream.write(b"GET / HTTP/1.1\r\n\r\n", timeout=5)
            try:
                await stream.read(100, timeout=5)
                await stream.read(100, timeout=5)
            finally:
                await stream.aclose()

    with pytest.raises(httpcore2.ReadError):
        asyncio.run(scenario())


def test_a_slow_reader_holds_at_most_the_high_water_mark_of_what_arrived() -> None:
    total = 16 * network.HIGH_WATER

    async def scenario() -> tuple[int, int]:
        async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"x" * total)
            await writer.drain()
            writer.close()

        async with server(flood) as port:
            stream = await _stream(port)
            receiver = stream._receiver  # type: ignore[attr-defined]
            received, most = 0, 0
            while chunk := await stream.read(64 * 1024, timeout=5):
                received += len(chunk)
                most = max(most, receiver.buffered)
                await asyncio.sleep(0.001)  # slower than the sender
            await stream.aclose()
            return received, most

    received, most = asyncio.run(scenario())
    assert received == total
    # One socket read (asyncio's 256 KiB) may land past the mark before reading pauses.
    assert most <= network.HIGH_WATER + 256 * 1024


def test_tls_checks_the_server_name_and_carries_requests(tmp_path: Path) -> None:
    ca = make_cert(tmp_path / "ca", "test-ca", None, ca=True)
    make_cert(tmp_path / "server", "localhost", ca)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    trusted = ssl.create_default_context(cafile=tmp_path / "ca.crt")

    async def scenario(host: str) -> int:
        async with server(_answer, served) as port, httpcore2.AsyncConnectionPool(
                ssl_context=trusted, network_backend=AsyncioBackend()) as pool:
            response = await pool.request("GET", f"https://{host}:{port}/")
            assert response.content == b"ok"
            return response.status

    assert asyncio.run(scenario("localhost")) == 200
    with pytest.raises(httpcore2.ConnectError, match="certificate verify failed"):
        asyncio.run(scenario("127.0.0.1"))  # the certificate names localhost only
