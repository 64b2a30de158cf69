"""The sources' transport (sources/kit/transport.py) and its network streams
(sources/kit/network.py): idle connections the server closed are noticed, a
request goes out in one write, and proxies from the environment still apply.
Real sockets, a real asyncio server."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx2
import pytest

from exporter.config.source import HttpConfig
from exporter.sources.kit import network
from exporter.sources.kit.http import HttpClient
from exporter.sources.kit.network import AsyncioStream, socket_readable
from exporter.sources.kit.transport import SourceTransport, source_transport

BODY = b'{"ok": true}'
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)


class OneAnswerServer:
    """Answers one request per connection (keeping it alive, as far as the
    headers say), then closes the connection: what a server whose keep-alive
    timeout is shorter than the client's does. Records request lines."""

    def __init__(self) -> None:
        self.connections = 0
        self.lines: list[bytes] = []
        self.handlers: list[asyncio.Task[None]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append(task)
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.lines.append(head.split(b"\r\n", 1)[0])
            writer.write(ANSWER)
            await writer.drain()
            await asyncio.sleep(0.05)
        finally:
            writer.close()
            await writer.wait_closed()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *_: object) -> None:
        self.server.close()
        await self.server.wait_closed()
        await asyncio.gather(*self.handlers, return_exceptions=True)


def test_a_socket_is_readable_once_its_peer_wrote_or_closed() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert not socket_readable(ours)
        theirs.sendall(b"x")
        assert socket_readable(ours)
        ours.recv(1)
        theirs.close()
        assert socket_readable(ours)  # the next read returns b"": the close
    assert socket_readable(ours)  # closed here: fileno() is -1
    assert socket_readable(None)


async def _two_requests(probe_works: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[list[int | str], int]:
    if not probe_works:
        inner = AsyncioStream.get_extra_info
        monkeypatch.setattr(AsyncioStream, "get_extra_info",
                            lambda self, info: False if info == "is_readable" else inner(self, info))
    server = OneAnswerServer()
    results: list[int | str] = []
    async with server as url, httpx2.AsyncClient(transport=SourceTransport(httpx2.Limits())) as client:
        for _ in range(2):
            try:
                results.append((await client.get(f"{url}/x")).status_code)
            except httpx2.TransportError as exc:
                results.append(type(exc).__name__)
            await asyncio.sleep(0.3)  # the server has closed the idle connection by now
    return results, server.connections


def test_an_idle_connection_the_server_closed_is_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    results, connections = asyncio.run(_two_requests(True, monkeypatch))
    assert results == [200, 200]
    assert connections == 2
    # The same without the probe: the second request goes out on the dead
    # connection and fails, so the pool above did ask our stream.
    results, _ = asyncio.run(_two_requests(False, monkeypatch))
    assert results[0] == 200 and results[1] != 200


def test_the_sources_use_it_unless_the_environment_names_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(source_transport(8), SourceTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert source_transport(8) is None


async def _through_the_proxy(monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, list[bytes]]:
    proxy = OneAnswerServer()
    async with proxy as proxy_url:
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        client = HttpClient(base_url="http://vendor.invalid/api", config=HttpConfig())
        try:
            body = await client.get("/metrics")
        finally:
            await client.aclose()
    return body, proxy.lines


def test_a_proxy_from_the_environment_still_carries_the_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    body, lines = asyncio.run(_through_the_proxy(monkeypatch))
    assert body == BODY
    assert lines == [b"GET http://vendor.invalid/api/metrics HTTP/1.1"]  # absolute form: sent to the proxy


class RequestRecorder:
    """Reads whole requests (head and Content-Length body) on kept-alive
    connections and answers each; records what arrived."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = next((int(line.split(b":", 1)[1]) for line in head.lower().split(b"\r\n")
                               if line.startswith(b"content-length:")), 0)
                self.requests.append(head + await reader.readexactly(length))
                writer.write(ANSWER)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()


async def _posts(bodies: list[bytes], monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[bytes], list[int]]:
    recorder = RequestRecorder()
    server = await asyncio.start_server(recorder.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    # What the client's transports hand to their sockets (the server's own
    # transports write to the client's port).
    writes: list[int] = []
    inner_write = asyncio.selector_events._SelectorSocketTransport.write  # type: ignore[attr-defined]

    def counted(self: asyncio.Transport, data: bytes) -> None:
        if self.get_extra_info("peername")[1] == port:
            writes.append(len(data))
        inner_write(self, data)

    monkeypatch.setattr(asyncio.selector_events._SelectorSocketTransport, "write", counted)  # type: ignore[attr-defined]
    statuses = []
    try:
        async with httpx2.AsyncClient(transport=SourceTransport(httpx2.Limits())) as client:
            for body in bodies:
                statuses.append((await client.post(f"{url}/x", content=body)).status_code)
    finally:
        server.close()
    return statuses, recorder.requests, writes


def test_a_request_goes_out_in_one_write_and_arrives_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    bodies = [b'{"periodGroup": "hour"}', b"[]"]
    statuses, requests, writes = asyncio.run(_posts(bodies, monkeypatch))
    assert statuses == [200, 200]
    assert [request.endswith(b"\r\n\r\n" + body) for request, body in zip(requests, bodies, strict=True)] == [True] * 2
    assert writes == [len(request) for request in requests]  # one write each, head and body together


def test_a_large_body_arrives_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    body = bytes(range(256)) * (3 * network.FLUSH_BYTES // 256)
    statuses, requests, writes = asyncio.run(_posts([body], monkeypatch))
    assert statuses == [200]
    assert requests[0].endswith(b"\r\n\r\n" + body)
    assert len(writes) == 1 and writes[0] == len(requests[0])  # one chunk from httpx2: head and body at once


@pytest.mark.parametrize(("base_url", "path", "params", "body"), [
    ("https://api.bird.com", "/workspaces/ws/reporting/flowruns/flow/f 1/metrics", None, {"groupBy": ["status"]}),
    ("https://graph.facebook.com/v21.0/", "123/metrics", [("metric_name", "ENDPOINT_REQUEST_COUNT"),
                                                          ("since", "2026-12-01")], None),
    ("http://127.0.0.1:8080/k6/cloud/v6", "/test_runs(1)/query_range_k6(metric='vus')", {"step": 60}, None),
    ("https://flux.example/api/", "/v1/metrics/query", {"a": "é ü/?&"}, {"q": "ünï", "n": 1.5}),
])
def test_a_request_is_the_one_httpx2s_client_would_build(base_url: str, path: str, params: Any, body: Any) -> None:
    client = HttpClient(base_url=base_url, config=HttpConfig(), headers={"Authorization": "AccessKey k"})
    ours = client.build_request("POST" if body else "GET", path, params, body)
    theirs = client._client.build_request("POST" if body else "GET", path, params=params, json=body)
    assert (ours.method, ours.url, ours.headers.multi_items(), ours.content, ours.extensions) == \
        (theirs.method, theirs.url, theirs.headers.multi_items(), theirs.content, theirs.extensions)
    asyncio.run(client.aclose())
