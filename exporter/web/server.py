"""The HTTP server: /metrics, /healthz, /readyz, the status page and its JSON, POST /-/reload.

aiohttp's low-level server on an event loop of its own, in a thread of its
own, like prometheus_client's `start_http_server`: scrapes never wait for
the event loop that polls. One thread serves every connection (no thread
per client); blocking work (a bcrypt check, a reload) goes to a small pool.
What a client can make it hold is bounded (`ServerLimits`): aiohttp's
parser bounds each line and the header count, `gate.ConnectionGate` the
whole request head, its deadline, the TLS handshake and the number of open
connections. Authentication is decided as soon as the head is parsed,
before any body is read.

The server knows the application only through `AppView`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.config.server import BasicAuthConfig, TlsConfig
from exporter.config.types import split_listen
from exporter.web.auth import BasicAuth, TlsContext
from exporter.web.gate import Gatekeeper, ServerLimits, ServerMetrics
from exporter.web.pages import PAGE_HEADERS, status_page
from exporter.web.status import ProcessView, Summary, TargetView

if TYPE_CHECKING:
    from exporter.config.server import ServerConfig

log = logging.getLogger(__name__)

# Go's net.Listen uses the kernel's somaxconn; so do we (the kernel caps it).
BACKLOG = max(128, socket.SOMAXCONN)
SMALL_PART = 64 * 1024
BATCH_BYTES = 4 * 1024 * 1024
TEXT = "text/plain; charset=utf-8"
SERVER = f"api-metrics-exporter/{__version__}"


class AppView(Protocol):
    """What the endpoints need from the running application."""

    def metrics_body(self, accept: str | None, accept_encoding: str | None) -> tuple[list[bytes], dict[str, str]]:
        """The /metrics body as parts, and its headers (Content-Type, Content-Encoding)."""
        ...

    def target_views(self) -> list[TargetView]:
        """Every target, failing first (status.ordered). Called from the HTTP thread."""
        ...

    def process_view(self) -> ProcessView: ...

    def ready(self) -> bool: ...

    def reload_from_thread(self) -> str | None:
        """Blocking; the error, or None."""
        ...


class _ClientErrorLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp logs a malformed request with a traceback at ERROR; it is the
    client's mistake (a scanner, TLS spoken to a plain port): DEBUG."""

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        self.debug(msg, *args, exc_info=exc_info, **kwargs)


class WebServer:
    def __init__(
        self,
        listen: str,
        view: AppView,
        *,
        limits: ServerLimits | None = None,
        tls: TlsConfig | None = None,
        basic_auth: BasicAuthConfig | None = None,
        lifecycle: bool = False,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.view = view
        self.limits = limits if limits is not None else ServerLimits()
        self.lifecycle = lifecycle
        self.tls = TlsContext(tls) if tls is not None else None
        self.auth = BasicAuth(basic_auth) if basic_auth is not None else None
        self.metrics = ServerMetrics(registry)
        self._sock = _listening_socket(listen)  # bound now: a busy port fails here, and `port` is known
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="http-work")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._keeper: Gatekeeper | None = None
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._ready = threading.Event()
        self._error: Exception | None = None

    @classmethod
    def from_config(cls, config: ServerConfig, view: AppView, registry: CollectorRegistry | None = None) -> WebServer:
        return cls(config.listen, view, limits=limits_of(config), tls=config.tls, basic_auth=config.basic_auth,
                   lifecycle=config.enable_lifecycle, registry=registry)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def start(self) -> None:
        _ensure_fd_limit(self.limits.max_connections + 256)
        _hand_over_the_gil_sooner()
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(timeout=10)
        else:
            self._sock.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- the server thread --------------------------------------------------------

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            server = loop.run_until_complete(self._open())
        except Exception as exc:  # noqa: BLE001 - any failure to open is reported to start()
            self._error = exc
            self._sock.close()
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            if self._keeper is not None:
                self._keeper.close_all()
            loop.run_until_complete(_settle(loop))
            loop.close()

    async def _open(self) -> asyncio.AbstractServer:
        limits = self.limits
        handlers = web.Server(
            self._handle,
            keepalive_timeout=limits.idle_timeout,
            # The gate bounds the whole head; aiohttp's own bounds only back it up.
            max_line_size=limits.max_header_bytes,
            max_field_size=limits.max_header_bytes,
            max_headers=limits.max_headers,
            lingering_time=0,  # an unread body (POST /-/reload has none) closes the connection
            access_log=None,
            logger=_ClientErrorLogger(log, {}),
        )
        self._keeper = Gatekeeper(limits, handlers, self.tls, self.metrics)
        return await asyncio.get_running_loop().create_server(self._keeper, sock=self._sock, backlog=BACKLOG)

    # --- requests -----------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        gate = self._keeper.gate_of(request.protocol) if self._keeper is not None else None
        if gate is not None:
            gate.request_started()
        try:
            try:
                response = await self._route(request)
            except ConnectionError:
                raise
            except Exception:  # a broken page must not take the server down
                log.exception("error serving %s %s", request.method, request.path)
                response = _text(500, "internal error\n")
            # Written here, not by aiohttp after we return, so that the whole
            # answer is under the gate's write deadline.
            await response.prepare(request)
            await response.write_eof()
            return response
        except ConnectionError:  # the client hung up mid-answer: routine
            log.debug("client %s went away", request.remote)
            raise
        finally:
            if gate is not None:
                gate.request_finished()

    async def _route(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.raw_path.split("?", 1)[0]
        if not await self._authorized(request, path):
            response = _text(401, "unauthorized\n")
            response.headers["WWW-Authenticate"] = 'Basic realm="api-metrics-exporter"'
            return response
        if request.method == "POST":
            return await self._post(path)
        if request.method not in ("GET", "HEAD"):
            response = _text(405, "method not allowed\n")
            response.headers["Allow"] = "GET, HEAD, POST"
            return response
        if path == "/metrics":
            return await self._metrics(request)
        if path == "/healthz":
            return _text(200, "ok\n")
        if path == "/readyz":
            if self.view.ready():
                return _text(200, "ready\n")
            return _text(503, "not ready: some targets have not been polled yet\n")
        if path in PAGES:
            # In the pool: with 10,000 targets a page takes ~60 ms to build,
            # which this loop spends serving scrapes meanwhile.
            return await asyncio.get_running_loop().run_in_executor(self._pool, self._page, path)
        return _text(404, "not found\n")

    def _page(self, path: str) -> web.Response:
        """The status page or its JSON, from a copy of the app's state."""
        targets = self.view.target_views()
        if path == "/api/v1/targets":
            return _json([target.json() for target in targets])
        summary = Summary.of(__version__, self.view.process_view(), targets)
        if path == "/api/v1/status":
            return _json(summary.json())
        return web.Response(body=status_page(summary, targets).encode(), headers={**PAGE_HEADERS, "Server": SERVER})

    async def _authorized(self, request: web.BaseRequest, path: str) -> bool:
        auth = self.auth
        if auth is None or not auth.required(path):
            return True
        header = request.headers.get("Authorization")
        if auth.cached(header):
            return True
        # bcrypt takes milliseconds to a tenth of a second: never on this loop.
        return await asyncio.get_running_loop().run_in_executor(self._pool, auth.check, header)

    async def _post(self, path: str) -> web.StreamResponse:
        if path != "/-/reload":
            return _text(404, "not found\n")
        if not self.lifecycle:
            return _text(403, "Lifecycle API is not enabled (server.enable_lifecycle).\n")
        # The reload runs on the app's loop; this one keeps serving meanwhile.
        error = await asyncio.get_running_loop().run_in_executor(self._pool, self.view.reload_from_thread)
        return _text(200, "reloaded\n") if error is None else _text(500, f"reload failed: {error}\n")

    async def _metrics(self, request: web.BaseRequest) -> web.StreamResponse:
        parts, headers = self.view.metrics_body(request.headers.get("Accept"), request.headers.get("Accept-Encoding"))
        response = web.StreamResponse(headers={**headers, "Server": SERVER})
        response.content_length = sum(len(part) for part in parts)
        await response.prepare(request)
        if request.method != "HEAD":
            await write_parts(response, parts)
        await response.write_eof()
        return response


async def write_parts(response: web.StreamResponse, parts: list[bytes]) -> None:
    """Write the parts without joining them into one body: a family's cached
    body (the large parts) goes out as it is, as a memoryview so the
    transport does not copy the unsent rest of it once more. Runs of small
    parts are joined up to a few MiB first, because one write per tiny
    buffer costs more than the copy."""
    batch: list[bytes] = []
    size = 0
    for part in parts:
        if len(part) >= SMALL_PART:
            if batch:
                await response.write(b"".join(batch))
                batch, size = [], 0
            await response.write(memoryview(part))
            continue
        batch.append(part)
        size += len(part)
        if size >= BATCH_BYTES:
            await response.write(b"".join(batch))
            batch, size = [], 0
    if batch:
        await response.write(b"".join(batch))


# How long a thread that wants the GIL waits for the one holding it: a
# scrape of a large body needs it at each round of writing (the socket takes
# a few MiB at a time), and CPython hands it over from a busy poll loop only
# after the switch interval, 5 ms by default. At 10,000 targets, alternate
# runs: /metrics median 60 → 50-53 ms and p99 92-94 → 77-85 ms with 1 ms,
# CPU unchanged (docs/performance.md).
SWITCH_INTERVAL = 0.001


def _hand_over_the_gil_sooner() -> None:
    if sys.getswitchinterval() > SWITCH_INTERVAL:
        sys.setswitchinterval(SWITCH_INTERVAL)


def limits_of(config: ServerConfig) -> ServerLimits:
    return ServerLimits(max_connections=config.max_connections, read_timeout=config.read_timeout,
                        idle_timeout=config.idle_timeout, write_timeout=config.write_timeout,
                        max_header_bytes=config.max_header_bytes,
                        max_headers=config.max_headers)


PAGES = ("/", "/api/v1/targets", "/api/v1/status")


def _json(document: object) -> web.Response:
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    return web.Response(body=body, headers={"Content-Type": "application/json; charset=utf-8", "Server": SERVER,
                                            "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


def _text(status: int, body: str) -> web.Response:
    return web.Response(status=status, body=body.encode(), headers={"Content-Type": TEXT, "Server": SERVER})


def _listening_socket(listen: str) -> socket.socket:
    host, port = split_listen(listen)
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _ensure_fd_limit(needed: int) -> None:
    """Raise the soft limit on open files so `max_connections` fit (as the Go
    runtime raises it to the hard limit at start): at the limit, accept()
    fails and every client is turned away, the scraper too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        target = soft
        log.debug("cannot raise the open-file limit: %s", exc)
    if target < needed:
        log.warning("the open-file limit (%d) is below server.max_connections plus the exporter's own files (%d)",
                    target, needed)


async def _settle(loop: asyncio.AbstractEventLoop) -> None:
    """Let the aborted connections' callbacks run, then end what is left."""
    await asyncio.sleep(0)
    tasks = [task for task in asyncio.all_tasks(loop) if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
