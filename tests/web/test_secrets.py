"""A vendor that echoes the Authorization header: no trace of the token on any page, JSON, metric or log line.

The token holds every character an escaping changes (quote, backslash, `&`,
`<`, `/`, `+`, `=`), so the JSON-escaped, URL-encoded, repr and HTML forms
all differ from it; the echo comes raw, inside JSON, JSON-escaped in text,
URL-encoded, as a repr (k6's field errors) and cut to its first 20
characters. The forms the test looks for are written here, independently of
the redactor's own list.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest

from exporter import poller
from tests.conftest import ExporterProcess, free_port, write_config
from tests.web.harness import ECHOES, EchoVendor, LiveApp, wait_for

TOKEN = 'Tk9/"q+w=e\\r&t<y>-x7Hq2LmZpR4vB8nK'
FORMS = ("raw", "json", "fields", "escaped", "urlencoded", "prefix")
PART = 8  # the shortest part of a secret the redactor promises to mask


def token_forms(secret: str) -> set[str]:
    return {secret, json.dumps(secret)[1:-1], repr(secret)[1:-1], quote(secret, safe=""), quote(secret),
            quote_plus(secret), html.escape(secret), json.dumps(json.dumps(secret))[1:-1]}


PARTS = {form[i:i + PART] for form in token_forms(TOKEN) for i in range(len(form) - PART + 1)}


def leaks(text: str) -> set[str]:
    """Every part of the token, in any form, that `text` contains."""
    return {part for part in PARTS if part in text}


def strings(node: Any) -> Iterator[str]:
    """Every string of a decoded JSON document, keys included."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def echo_config(vendor: EchoVendor, port: int, forms: tuple[str, ...] = FORMS, interval: str = "30s") -> str:
    sources = "".join(f"""
    [[sources]]
    type = "k6_cloud"
    name = "echo-{form}"
    interval = "{interval}"
    base_url = "{vendor.url}/{form}"
    token = {json.dumps(TOKEN)}
    test_run_ids = [1]
    http = {{ retries = 0 }}
    """ for form in forms)
    return f'[server]\nlisten = "127.0.0.1:{port}"\n' + sources


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_an_echoing_vendor_leaks_the_token_nowhere(tmp_path: Path, log_format: str) -> None:
    assert set(FORMS) < set(ECHOES)
    port = free_port()
    with EchoVendor() as vendor:
        exporter = ExporterProcess(write_config(tmp_path, echo_config(vendor, port)), port, "--log-format",
                                   log_format)
        try:
            exporter.wait_ready()
            url = exporter.url
            targets = wait_for(lambda: (found := httpx.get(f"{url}/api/v1/targets").json())
                               and all(t["health"] == "down" for t in found) and found, "every echo target down")
            bodies = {path: httpx.get(f"{url}{path}").text for path in ("/", "/api/v1/targets", "/api/v1/status")}
            bodies["/metrics"] = httpx.get(f"{url}/metrics", headers={"Accept-Encoding": "identity"}).text
        finally:
            logs = exporter.stop()
        assert any(TOKEN in header for header in vendor.seen)  # the vendor did get, and echo, the token

    assert {t["reason"] for t in targets} == {"auth"}
    for target in targets:  # each echo reached the stored error, masked
        assert "***" in target["last_error"], target
    for path, body in bodies.items():
        assert not leaks(body), path
    page = re.search(r'<script type="application/json" id="initial">(.*?)</script>', bodies["/"], re.S)
    assert page is not None
    for text in strings(json.loads(page.group(1))):
        assert not leaks(text)
    for text in strings(json.loads(bodies["/api/v1/targets"])):
        assert not leaks(text)
    assert "echo-prefix" in logs and "***" in logs  # the failures were logged, masked
    assert not leaks(logs)


def test_the_error_is_masked_where_it_is_stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(poller, "FIRST_POLL_MAX_DELAY", 0.2)
    with EchoVendor() as vendor:
        app = LiveApp(write_config(tmp_path, echo_config(vendor, 0, interval="1h")))
        try:
            wait_for(lambda: all(s.polled for s in app.app.statuses()), "every first poll")
            stored = app.app.statuses()
        finally:
            app.close()
    for form in FORMS:
        message = next(s.message for s in stored if s.source == f"echo-{form}")
        assert "***" in message and not leaks(message), (form, message)
