"""The sources' HTTP client (sources/kit/http.py) on real sockets: what a
request carries, connections the server closed, proxies from the
environment, TLS, and how each network failure is counted. The retries,
budgets and vendor errors are tested through the sources against the
simulator (tests/sources/, tests/test_runner.py)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from exporter.app.settings import load_settings
from exporter.config.load import ConfigError
from exporter.config.source import HttpConfig
from exporter.errors import PollError
from exporter.sources.kit.http import USER_AGENT, HttpClient, proxy_for, query
from tests.test_webauth import make_cert

BODY = b'{"ok": true}'
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy",
                   "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _client(url: str, **config: Any) -> HttpClient:
    return HttpClient(base_url=url, config=HttpConfig(**{"retries": 0, **config}),
                      headers={"Authorization": "AccessKey k"})


async def _get(url: str, **config: Any) -> bytes:
    client = _client(url, **config)
    try:
        return await client.get("/x")
    finally:
        await client.aclose()


class RequestRecorder:
    """Reads whole requests (head and Content-Length body) on kept-alive
    connections and answers each with `answer`; records what arrived."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.answer = ANSWER

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = next((int(line.split(b":", 1)[1]) for line in head.lower().split(b"\r\n")
                               if line.startswith(b"content-length:")), 0)
                self.requests.append(head + await reader.readexactly(length))
                writer.write(self.answer)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()


async def _recorded(base_url: str, method: str, path: str, params: Any, body: Any) -> bytes:
    recorder = RequestRecorder()
    server = await asyncio.start_server(recorder.handle, "127.0.0.1", 0)
    url = base_url.replace("{port}", str(server.sockets[0].getsockname()[1]))
    client = _client(url)
    try:
        assert await client.request(method, path, params=params, json_body=body) == BODY
    finally:
        await client.aclose()
        server.close()
    [request] = recorder.requests
    return request


def _parts(request: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head, body = request.split(b"\r\n\r\n", 1)
    line, *fields = head.split(b"\r\n")
    return line, {name.lower(): value.strip() for name, value in (f.split(b":", 1) for f in fields)}, body


@pytest.mark.parametrize(("base_url", "path", "params", "body", "line"), [
    ("http://127.0.0.1:{port}", "/workspaces/ws/reporting/flowruns/flow/f 1/metrics", None,
     {"groupBy": ["status"], "periodGroup": "hour"},
     b"POST /workspaces/ws/reporting/flowruns/flow/f%201/metrics HTTP/1.1"),
    ("http://127.0.0.1:{port}/v21.0/", "123/metrics", [("metric_name", "ENDPOINT_REQUEST_COUNT"),
                                                       ("since", "2026-12-01")], None,
     b"GET /v21.0/123/metrics?metric_name=ENDPOINT_REQUEST_COUNT&since=2026-12-01 HTTP/1.1"),
    ("http://127.0.0.1:{port}/k6/cloud/v6", "/test_runs(1)/query_range_k6(metric='vus')", {"step": 60}, None,
     b"GET /k6/cloud/v6/test_runs(1)/query_range_k6(metric='vus')?step=60 HTTP/1.1"),
    ("http://127.0.0.1:{port}/api/", "/v1/metrics/a%2Fb", [("tags[k]", "é ü/?&+"), ("flag", True)],
     {"q": "ünï", "n": 1.5}, b"POST /api/v1/metrics/a%2Fb?tags%5Bk%5D=%C3%A9+%C3%BC/?%26%2B&flag=true HTTP/1.1"),
])
def test_a_request_carries_the_path_query_headers_and_json_body(
        base_url: str, path: str, params: Any, body: Any, line: bytes) -> None:
    method = "POST" if body is not None else "GET"
    request = asyncio.run(_recorded(base_url, method, path, params, body))
    got_line, headers, got_body = _parts(request)
    assert got_line == line
    assert headers[b"user-agent"] == USER_AGENT.encode()
    assert headers[b"accept"] == b"application/json"
    assert headers[b"authorization"] == b"AccessKey k"
    assert b"cookie" not in headers
    if body is None:
        assert got_body == b"" and b"content-type" not in headers
    else:
        assert headers[b"content-type"] == b"application/json"
        assert json.loads(got_body) == body
        assert got_body == json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


async def _writes(bodies: list[Any], monkeypatch: pytest.MonkeyPatch) -> tuple[list[bytes], list[int]]:
    """What arrived, and the sizes of what the client handed to its socket
    (the server's own transports write to the client's port)."""
    recorder = RequestRecorder()
    server = await asyncio.start_server(recorder.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    writes: list[int] = []
    inner_write = asyncio.selector_events._SelectorSocketTransport.write  # type: ignore[attr-defined]

    def counted(self: asyncio.Transport, data: bytes) -> None:
        if self.get_extra_info("peername")[1] == port:
            writes.append(len(data))
        inner_write(self, data)

    monkeypatch.setattr(asyncio.selector_events._SelectorSocketTransport, "write", counted)  # type: ignore[attr-defined]
    client = _client(f"http://127.0.0.1:{port}")
    try:
        for body in bodies:
            await client.request("POST" if body is not None else "GET", "/x", json_body=body)
    finally:
        await client.aclose()
        server.close()
    return recorder.requests, writes


def test_a_request_goes_out_in_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two writes (head, then body) cost a second send and, on loopback, the
    # receiver's wake-up: a sixth of the CPU at 10,000 targets with httpx2.
    requests, writes = asyncio.run(_writes([{"periodGroup": "hour"}, None, {"big": "x" * 300_000}], monkeypatch))
    assert len(requests) == 3
    assert writes == [len(request) for request in requests]


def test_no_cookie_is_sent_back_and_no_redirect_followed() -> None:
    async def scenario() -> tuple[list[bytes], PollError]:
        recorder = RequestRecorder()
        recorder.answer = ANSWER.replace(b"\r\n\r\n", b"\r\nSet-Cookie: session=abc; Path=/\r\n\r\n", 1)
        srv = await asyncio.start_server(recorder.handle, "127.0.0.1", 0)
        # A name, not an address: aiohttp's cookie jar would refuse an address's cookies anyway.
        url = f"http://localhost:{srv.sockets[0].getsockname()[1]}"
        client = _client(url)
        try:
            await client.get("/first")
            recorder.answer = (b"HTTP/1.1 302 Found\r\nLocation: " + url.encode() +
                               b"/elsewhere\r\nContent-Length: 0\r\n\r\n")
            with pytest.raises(PollError) as caught:
                await client.get("/second")
        finally:
            await client.aclose()
            srv.close()
        return recorder.requests, caught.value

    requests, error = asyncio.run(scenario())
    assert [_parts(request)[0] for request in requests] == [b"GET /first HTTP/1.1", b"GET /second HTTP/1.1"]
    assert b"cookie" not in _parts(requests[1])[1]
    assert "HTTP 302" in str(error)


def test_a_long_response_header_line_is_read() -> None:
    usage = b"X-Business-Use-Case-Usage: " + b"x" * (12 * 1024)  # past aiohttp's default of 8 KiB

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(ANSWER.replace(b"\r\n\r\n", b"\r\n" + usage + b"\r\n\r\n", 1))
        await writer.drain()
        writer.close()

    async def scenario() -> bytes:
        async with server(answer) as port:
            return await _get(f"http://127.0.0.1:{port}")

    assert asyncio.run(scenario()) == BODY


def test_query_values_read_as_httpx_writes_them() -> None:
    assert query({"a": True, "b": False, "c": None, "d": 1.5, "e": 0}) == \
        [("a", "true"), ("b", "false"), ("c", ""), ("d", "1.5"), ("e", "0")]
    assert query([("ids[]", 1), ("ids[]", 2)]) == [("ids[]", "1"), ("ids[]", "2")]
    assert query(None) is None and query([]) is None


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


def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    async def scenario() -> tuple[list[bytes], int]:
        server = OneAnswerServer()
        async with server as url:
            client = _client(url)  # no retries: a dead connection reused would fail the second
            try:
                bodies = []
                for _ in range(2):
                    bodies.append(await client.get("/x"))
                    await asyncio.sleep(0.3)  # the server has closed the idle connection by now
            finally:
                await client.aclose()
        return bodies, server.connections

    assert asyncio.run(scenario()) == ([BODY, BODY], 2)


async def _through_the_proxy(monkeypatch: pytest.MonkeyPatch, no_proxy: str | None) -> tuple[bytes, list[bytes]]:
    proxy = OneAnswerServer()
    async with proxy as proxy_url:
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        if no_proxy is not None:
            monkeypatch.setenv("NO_PROXY", no_proxy)
        try:
            body = await _get("http://vendor.invalid/api")
        except PollError as exc:
            body = exc.reason.encode()
    return body, proxy.lines


def test_a_proxy_from_the_environment_carries_the_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    body, lines = asyncio.run(_through_the_proxy(monkeypatch, None))
    assert body == BODY
    assert lines == [b"GET http://vendor.invalid/api/x HTTP/1.1"]  # absolute form: sent to the proxy


def test_no_proxy_sends_the_requests_straight(monkeypatch: pytest.MonkeyPatch) -> None:
    body, lines = asyncio.run(_through_the_proxy(monkeypatch, "example.com,vendor.invalid"))
    assert body == b"connection"  # vendor.invalid has no address
    assert lines == []


def test_the_proxy_variables_are_read_as_curl_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    vendor = URL("https://api.vendor.example/v1")
    assert proxy_for(vendor) is None
    monkeypatch.setenv("ALL_PROXY", "http://all:3128")
    assert proxy_for(vendor) == "http://all:3128"
    monkeypatch.setenv("HTTPS_PROXY", "proxy.internal:3128")  # no scheme: an HTTP proxy
    assert proxy_for(vendor) == "http://proxy.internal:3128"
    assert proxy_for(URL("http://api.vendor.example")) == "http://all:3128"
    monkeypatch.setenv("NO_PROXY", ".vendor.example")
    assert proxy_for(vendor) is None


def test_a_socks_proxy_is_a_config_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[[sources]]\ntype = "bird_flow_runs"\nname = "bird"\naccess_key = "k"\n'
                      'workspace_id = "ws"\nflow_ids = ["f"]\n')
    monkeypatch.setenv("HTTPS_PROXY", "socks5://proxy.internal:1080")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    assert caught.value.lines() == [
        "sources[0].base_url: HTTPS_PROXY: a socks5:// proxy; only http:// and https:// proxies are supported"]


# --- network failures, each counted under its reason -----------------------------------------


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


def _failure(coroutine: Any) -> PollError:
    with pytest.raises(PollError) as caught:
        asyncio.run(coroutine)
    return caught.value


def test_a_refused_connection_is_a_connection_error() -> None:
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    with refused:
        error = _failure(_get(f"http://127.0.0.1:{refused.getsockname()[1]}"))
    assert error.reason == "connection"
    assert "ClientConnectorError" in str(error) and "GET /x" in str(error)


def test_a_silent_address_is_a_timeout_after_the_connect_timeout() -> None:
    with black_hole() as (host, port):
        error = _failure(_get(f"http://{host}:{port}", connect_timeout=0.3))
    assert error.reason == "timeout"


def test_a_server_that_never_answers_is_a_timeout_after_the_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()  # until the client gives up
        finally:
            writer.close()

    async def scenario() -> bytes:
        async with server(silent) as port:
            return await _get(f"http://127.0.0.1:{port}", read_timeout=0.3)

    assert _failure(scenario()).reason == "timeout"


@pytest.mark.parametrize("answer", [
    b"",  # closed before a byte
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"cut",  # a body cut short
    b"NOT HTTP AT ALL\r\n\r\n",
])
def test_a_broken_answer_is_a_connection_error(answer: bytes) -> None:
    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    async def scenario() -> bytes:
        async with server(broken) as port:
            return await _get(f"http://127.0.0.1:{port}")

    assert _failure(scenario()).reason == "connection"


def test_a_cancelled_poll_leaves_no_socket_open() -> None:
    async def scenario() -> int:
        with black_hole() as (host, port):
            client = _client(f"http://{host}:{port}")
            before = _open_fds()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):  # the poll's deadline, mid-connect
                    await client.get("/x")
            await client.aclose()
            await asyncio.sleep(0)
            return _open_fds() - before

    assert asyncio.run(scenario()) == 0


def test_tls_checks_the_certificate_and_the_server_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = make_cert(tmp_path / "ca", "test-ca", None, ca=True)
    make_cert(tmp_path / "server", "localhost", ca)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(ANSWER)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass  # a client that refused the certificate
        finally:
            writer.close()

    async def scenario(host: str) -> bytes:
        async with server(answer, served) as port:
            return await _get(f"https://{host}:{port}")

    untrusted = _failure(scenario("localhost"))  # the system's trust store does not know test-ca
    assert untrusted.reason == "connection" and "certificate verify failed" in str(untrusted)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.crt"))
    assert asyncio.run(scenario("localhost")) == BODY
    wrong_name = _failure(scenario("127.0.0.1"))  # the certificate names localhost only
    assert wrong_name.reason == "connection" and "certificate verify failed" in str(wrong_name)
