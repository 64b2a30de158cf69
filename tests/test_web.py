"""The HTTP endpoints of a running app, over real sockets."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exporter.app import App
from exporter.simulator import Simulator
from tests.conftest import free_port, k6_config, settings_from


@pytest.fixture
def running(simulator: Simulator, tmp_path: Path) -> Iterator[tuple[App, str, asyncio.AbstractEventLoop]]:
    port = free_port()
    text = f'[server]\nlisten = "127.0.0.1:{port}"\n' + k6_config(simulator, [103054])
    app = App(settings_from(tmp_path, text))
    loop = asyncio.new_event_loop()
    app.build()
    from exporter.web import WebServer

    app.web = WebServer(app.settings.server.listen, app)
    app.web.start()
    yield app, f"http://127.0.0.1:{port}", loop
    loop.run_until_complete(app.stop())
    loop.close()


def test_readyz_waits_for_first_poll_and_landing_page(running: tuple[App, str, asyncio.AbstractEventLoop]) -> None:
    app, url, loop = running
    assert httpx.get(f"{url}/healthz").status_code == 200
    assert httpx.get(f"{url}/readyz").status_code == 503
    assert "pending" in httpx.get(f"{url}/").text
    loop.run_until_complete(app.poll_all())
    assert httpx.get(f"{url}/readyz").status_code == 200
    page = httpx.get(f"{url}/")
    assert page.headers["content-type"].startswith("text/html")
    assert "k6" in page.text and "103054" in page.text and ">up<" in page.text and "/metrics" in page.text
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
    raw = httpx.Client().send(httpx.Request("GET", f"{url}/metrics", headers=scraper), stream=True)
    assert raw.headers["content-encoding"] == "gzip"
    compressed = b"".join(raw.iter_raw())
    assert compressed.count(b"\x1f\x8b\x08") > 2  # several members
    assert gzip.decompress(compressed) == plain.content

    # Anyone else (a browser, curl, httpx): one gzip member they can all read.
    human = httpx.get(f"{url}/metrics", headers={"Accept": "text/html,*/*"})
    assert human.headers["content-encoding"] == "gzip"
    assert human.content == plain.content
