"""What the status page tests share: an app running as `run` runs it, and a vendor that echoes credentials.

`LiveApp` starts a real `App` (poller, web server on a free port) on an event
loop in a thread of its own, so the test thread talks to it over sockets the
way a browser or a scraper does, and can still run a poll of its own on the
app's loop to change a target's state at a moment of its choosing.

`EchoVendor` is a tiny vendor that answers every request 401 and echoes the
request's `Authorization` header in its body, in the form the first segment
of the path names (raw, inside JSON, JSON-escaped, URL-encoded, cut to 20
characters, or as hostile HTML): what a careless vendor does.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Coroutine
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from exporter.app import App
from exporter.app.settings import load_settings

T = TypeVar("T")


class LiveApp:
    def __init__(self, config: Path) -> None:
        self.app = App(load_settings(config, environ={}), config_path=str(config))
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="live-app", daemon=True)
        self._thread.start()
        try:
            self.call(self.app.start())
        except BaseException:
            self._end_loop()
            raise
        assert self.app.web is not None
        self.url = f"http://127.0.0.1:{self.app.web.port}"
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        """Run `coroutine` on the app's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def poll(self, target_id: str) -> bool:
        """One poll of the target now, on the app's loop (as the poller would)."""
        source, target = next((s, t) for s, t in self.app.targets if t.id == target_id)
        return self.call(self.app.runner.poll(source, target))

    def targets(self, **kwargs: Any) -> list[dict[str, Any]]:
        response = self.http.get("/api/v1/targets", **kwargs)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json; charset=utf-8"
        found: list[dict[str, Any]] = response.json()
        return found

    def status(self, **kwargs: Any) -> dict[str, Any]:
        response = self.http.get("/api/v1/status", **kwargs)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def by_target(self) -> dict[str, dict[str, Any]]:
        return {t["target"]: t for t in self.targets()}

    def close(self) -> None:
        self.http.close()
        try:
            self.call(self.app.stop(), timeout=60)
        finally:
            self._end_loop()

    def _end_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()


def wait_for(check: Callable[[], T], what: str, timeout: float = 60.0) -> T:
    """The first truthy result of `check`, polled; a generous deadline, never a timing assertion."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _raw(header: str) -> tuple[str, bytes]:
    return "text/plain", f"unauthorized: {header}".encode()


def _in_json(header: str) -> tuple[str, bytes]:
    return "application/json", json.dumps({"error": {"code": 6, "message": f"invalid header {header}"}}).encode()


def _field_errors(header: str) -> tuple[str, bytes]:
    # The k6 source adds field_errors to its message as a Python repr: the repr-escaped form.
    body = {"error": {"code": 6, "message": "invalid token", "field_errors": {"authorization": [header]}}}
    return "application/json", json.dumps(body).encode()


def _json_escaped(header: str) -> tuple[str, bytes]:
    return "text/plain", f"rejected header={json.dumps(header)}".encode()


def _url_encoded(header: str) -> tuple[str, bytes]:
    return "text/plain", f"log in again: https://vendor.example/login?auth={quote(header, safe='')}".encode()


def _prefix(header: str) -> tuple[str, bytes]:
    token = header.split(" ", 1)[1]
    return "text/plain", f"token {token[:20]}... is not valid".encode()


HOSTILE = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script></script><!-- &amp; "\'`'


def _hostile(header: str) -> tuple[str, bytes]:
    return "text/plain", HOSTILE.encode()


ECHOES: dict[str, Callable[[str], tuple[str, bytes]]] = {
    "raw": _raw, "json": _in_json, "fields": _field_errors, "escaped": _json_escaped,
    "urlencoded": _url_encoded, "prefix": _prefix, "hostile": _hostile,
}


class EchoVendor:
    """`url/<form>` is a base URL whose every request is answered 401 with
    the Authorization header echoed in that form."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        vendor = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                form = self.path.lstrip("/").split("/", 1)[0]
                header = self.headers.get("Authorization", "")
                vendor.seen.append(header)
                kind, body = ECHOES[form](header) if form in ECHOES else _raw(header)
                self.send_response(401)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="echo-vendor", daemon=True)

    def __enter__(self) -> EchoVendor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
