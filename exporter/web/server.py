"""The HTTP server: /metrics, /healthz, /readyz, the landing page and POST /-/reload.

A `ThreadingHTTPServer` in its own thread, like prometheus_client's
`start_http_server`: scrapes never wait for the event loop that polls.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.configtypes import split_listen
from exporter.runner import TargetStatus
from exporter.sinks.prometheus import render
from exporter.store import Store
from exporter.web.auth import BasicAuth, BasicAuthConfig, TlsConfig, TlsContext
from exporter.web.pages import landing_page

log = logging.getLogger(__name__)


class AppView(Protocol):
    """What the endpoints need to know about the running app."""

    registry: CollectorRegistry
    store: Store
    clock: Callable[[], float]

    def statuses(self) -> list[TargetStatus]: ...

    def ready(self) -> bool: ...

    def reload_from_thread(self) -> str | None: ...


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    tls: TlsContext | None = None
    auth: BasicAuth | None = None
    lifecycle: bool = False

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.tls is not None:
            # The handshake runs in the handler thread (setup), never here in
            # the accept loop, so a slow client cannot stall other scrapes.
            sock = self.tls.current().wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that hung up (a timed-out poll, a cancelled scrape) is routine.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)
    app: AppView


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = f"api-metrics-exporter/{__version__}"

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        self._dispatch(send_body=True)

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if not self._authorized(path, send_body=True):
            return
        if path != "/-/reload":
            status, body = 404, b"not found\n"
        elif not self.server.lifecycle:
            status, body = 403, b"Lifecycle API is not enabled (server.enable_lifecycle).\n"
        else:
            error = self.server.app.reload_from_thread()
            status, body = (200, b"reloaded\n") if error is None else (500, f"reload failed: {error}\n".encode())
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorized(self, path: str, send_body: bool) -> bool:
        auth = self.server.auth
        if auth is None or not auth.required(path) or auth.check(self.headers.get("Authorization")):
            return True
        body = b"unauthorized\n"
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="api-metrics-exporter"')
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)
        return False

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch(send_body=False)

    def _dispatch(self, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if not self._authorized(path, send_body):
            return
        if path == "/metrics":
            self._send_metrics(send_body)
            return
        routes: dict[str, Callable[[], tuple[int, bytes, dict[str, str]]]] = {
            "/healthz": lambda: (200, b"ok\n", {"Content-Type": "text/plain; charset=utf-8"}),
            "/readyz": self._readyz,
            "/": self._landing,
        }
        route = routes.get(path)
        if route is None:
            status, body, headers = 404, b"not found\n", {"Content-Type": "text/plain; charset=utf-8"}
        else:
            try:
                status, body, headers = route()
            except Exception:  # a broken page must not kill the server thread
                log.exception("error serving %s", path)
                status, body, headers = 500, b"internal error\n", {"Content-Type": "text/plain; charset=utf-8"}
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _send_metrics(self, send_body: bool) -> None:
        app = self.server.app
        parts, headers = render(app.store, app.registry, self.headers.get("Accept"),
                                self.headers.get("Accept-Encoding"), app.clock)
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(sum(len(p) for p in parts)))
        self.end_headers()
        if send_body:
            send_parts(self.connection, parts)

    def _readyz(self) -> tuple[int, bytes, dict[str, str]]:
        text = {"Content-Type": "text/plain; charset=utf-8"}
        if self.server.app.ready():
            return 200, b"ready\n", text
        return 503, b"not ready: some targets have not been polled yet\n", text

    def _landing(self) -> tuple[int, bytes, dict[str, str]]:
        return 200, landing_page(self.server.app.statuses()).encode(), {"Content-Type": "text/html; charset=utf-8"}

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server API
        log.debug("%s - %s", self.address_string(), format % args)


SMALL_PART = 64 * 1024
BATCH_BYTES = 4 * 1024 * 1024


def send_parts(sock: socket.socket, parts: list[bytes]) -> None:
    """Write the parts from this (handler) thread with blocking sends. Large
    parts (a family's cached body) go out as they are, never copied into one
    body; runs of small parts are joined up to a few MiB first, because one
    syscall per tiny buffer costs more than the copy. (One `sendmsg` of all
    parts was measured too: 20-30% slower at 100k series, as the reader
    starts later.)"""
    batch: list[bytes] = []
    size = 0
    for part in parts:
        if len(part) >= SMALL_PART:
            if batch:
                sock.sendall(b"".join(batch))
                batch, size = [], 0
            sock.sendall(part)
            continue
        batch.append(part)
        size += len(part)
        if size >= BATCH_BYTES:
            sock.sendall(b"".join(batch))
            batch, size = [], 0
    if batch:
        sock.sendall(b"".join(batch))


class WebServer:
    def __init__(
        self,
        listen: str,
        app: AppView,
        tls: TlsConfig | None = None,
        basic_auth: BasicAuthConfig | None = None,
        lifecycle: bool = False,
    ) -> None:
        host, port = split_listen(listen)
        self._server = _Server((host, port), _Handler)
        self._server.app = app
        self._server.tls = TlsContext(tls) if tls is not None else None
        self._server.auth = BasicAuth(basic_auth) if basic_auth is not None else None
        self._server.lifecycle = lifecycle
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), name="http", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
