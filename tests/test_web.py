"""The HTTP endpoints of a running app, over real sockets."""

from __future__ import annotations

import asyncio
import gzip
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from exporter.app import App
from exporter.simulator import Simulator
from exporter.web import ServerLimits, WebServer
from exporter.web.status import ProcessView, ReloadView, TargetView
from tests.conftest import free_port, k6_config, settings_from


@pytest.fixture
def running(simulator: Simulator, tmp_path: Path) -> Iterator[tuple[App, str, asyncio.AbstractEventLoop]]:
    port = free_port()
    text = f'[server]\nlisten = "127.0.0.1:{port}"\n' + k6_config(simulator, [103054])
    app = App(settings_from(tmp_path, text))
    loop = asyncio.new_event_loop()
    app.build()
    app.web = WebServer(app.settings.server.listen, app)
    app.web.start()
    yield app, f"http://127.0.0.1:{port}", loop
    loop.run_until_complete(app.stop())
    loop.close()


def test_readyz_waits_for_first_poll_and_landing_page(running: tuple[App, str, asyncio.AbstractEventLoop]) -> None:
    app, url, loop = running
    assert httpx.get(f"{url}/healthz").status_code == 200
    assert httpx.get(f"{url}/readyz").status_code == 503
    assert '"health":"pending"' in httpx.get(f"{url}/").text
    loop.run_until_complete(app.poll_all())
    assert httpx.get(f"{url}/readyz").status_code == 200
    page = httpx.get(f"{url}/")
    assert page.headers["content-type"].startswith("text/html")
    assert '"source":"k6"' in page.text and '"target":"103054"' in page.text and '"health":"up"' in page.text
    assert 'href="metrics"' in page.text
    assert httpx.get(f"{url}/nope").status_code == 404


def test_metrics_text_openmetrics_and_gzip(running: tuple[App, str, asyncio.AbstractEventLoop]) -> None:
    app, url, loop = running
    loop.run_until_complete(app.poll_all())
    plain = httpx.get(f"{url}/metrics", headers={"Accept-Encoding": "identity"})
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "k6_vus" in plain.text
    om = httpx.get(f"{url}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0",
                                              "Accept-Encoding": "identity"})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")
    assert om.text == app.exposition("application/openmetrics-text; version=1.0.0").decode()

    # A scraper's Accept: gzip members, one per pre-rendered block.
    scraper = {"Accept-Encoding": "gzip", "Accept": "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"}
    with httpx.Client() as client:
        raw = client.send(httpx.Request("GET", f"{url}/metrics", headers=scraper), stream=True)
        try:
            assert raw.headers["content-encoding"] == "gzip"
            compressed = b"".join(raw.iter_raw())
        finally:
            raw.close()
    assert compressed.count(b"\x1f\x8b\x08") > 2  # several members
    assert gzip.decompress(compressed) == plain.content

    # Anyone else (a browser, curl, httpx): one gzip member they can all read.
    human = httpx.get(f"{url}/metrics", headers={"Accept": "text/html,*/*"})
    assert human.headers["content-encoding"] == "gzip"
    assert human.content == plain.content


class FakeView:
    """An AppView of fixed parts whose reload blocks until the test releases it."""

    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts
        self.reloading = threading.Event()
        self.release = threading.Event()

    def metrics_body(self, accept: str | None, accept_encoding: str | None) -> tuple[list[bytes], dict[str, str]]:
        return self.parts, {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}

    def target_views(self) -> list[TargetView]:
        return []

    def process_view(self) -> ProcessView:
        return ProcessView(0.0, 0.0, ReloadView(True, 0.0, None, 0.0), None, 0, 1)

    def ready(self) -> bool:
        return True

    def reload_from_thread(self) -> str | None:
        self.reloading.set()
        return None if self.release.wait(30) else "not released"


def test_large_bodies_in_parts_and_head() -> None:
    # Family bodies of a few MiB between runs of tiny parts, as at 1M series.
    parts = [b"# tiny\n"] * 1000 + [bytes([65 + i]) * (3 << 20) for i in range(8)] + [b"x 1\n"] * 5000
    web = WebServer("127.0.0.1:0", FakeView(parts))
    web.start()
    try:
        url = f"http://127.0.0.1:{web.port}/metrics"
        body = httpx.get(url, timeout=30).content
        assert body == b"".join(parts)
        head = httpx.head(url, timeout=30)
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) == len(body)
    finally:
        web.stop()


def test_the_server_thread_waits_at_most_a_millisecond_for_the_gil() -> None:
    # A scrape needs the GIL at each round of writing a large body; 5 ms
    # (CPython's default) per round while polls run showed in /metrics p99.
    default = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    web = WebServer("127.0.0.1:0", FakeView([b"up 1\n"]))
    try:
        web.start()
        assert sys.getswitchinterval() <= 0.001
    finally:
        web.stop()
        sys.setswitchinterval(default)


def test_a_reload_runs_while_the_server_keeps_answering() -> None:
    view = FakeView([b"up 1\n"])
    web = WebServer("127.0.0.1:0", view, lifecycle=True)
    web.start()
    url = f"http://127.0.0.1:{web.port}"
    answers: list[httpx.Response] = []
    poster = threading.Thread(target=lambda: answers.append(httpx.post(f"{url}/-/reload", timeout=60)))
    poster.start()
    try:
        assert view.reloading.wait(30)
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        assert httpx.get(f"{url}/metrics", timeout=10).text == "up 1\n"
        assert poster.is_alive()  # the reload is still blocked, and the server answered meanwhile
    finally:
        view.release.set()
        poster.join()
        web.stop()
    assert answers[0].status_code == 200 and answers[0].text == "reloaded\n"


def test_a_client_that_stops_reading_is_cut_off() -> None:
    registry = CollectorRegistry()
    web = WebServer("127.0.0.1:0", FakeView([b"x" * (8 << 20)] * 8), limits=ServerLimits(write_timeout=1),
                    registry=registry)
    web.start()
    try:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", web.port))
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads the 64 MiB
            deadline = time.monotonic() + 60
            while not registry.get_sample_value("apimetrics_http_connections_rejected_total",
                                                {"reason": "write_timeout"}):
                assert time.monotonic() < deadline, "the stalled answer was never cut off"
                time.sleep(0.1)
            sock.settimeout(30)
            received = 0
            try:
                while chunk := sock.recv(1 << 20):
                    received += len(chunk)
            except ConnectionResetError:
                pass
            assert received < 64 << 20  # cut off, not completed
        assert httpx.get(f"http://127.0.0.1:{web.port}/healthz", timeout=10).status_code == 200
    finally:
        web.stop()


def test_kept_alive_connections_are_closed_when_idle() -> None:
    web = WebServer("127.0.0.1:0", FakeView([b"up 1\n"]), limits=ServerLimits(read_timeout=60, idle_timeout=1))
    web.start()
    try:
        with socket.create_connection(("127.0.0.1", web.port), timeout=30) as sock:
            for _ in range(2):  # kept alive between requests…
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = b""
                while not answer.endswith(b"\r\n\r\nok\n"):
                    answer += sock.recv(4096)
                assert answer.startswith(b"HTTP/1.1 200 ")
            started = time.monotonic()
            assert sock.recv(1) == b""  # …and closed once idle, long before read_timeout
            assert time.monotonic() - started < 30
    finally:
        web.stop()
