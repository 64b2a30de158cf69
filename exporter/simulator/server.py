"""A loopback HTTP server hosting fakes of the vendor APIs, with fault injection.

Each vendor fake lives under its own path prefix (`/k6/...`), so one server
serves every source: a source's simulated base URL is `{url}/{prefix}`.

`hostile_fixtures=True` adds data that only tests want (see the k6 fake).

Control endpoints, for tests and demos (JSON):

    POST   /_sim/faults     {"path": "regex",
                             "kind": "status|rate_limit|latency|malformed|truncated|lone_surrogate|set|padding",
                             "times": 1, "status": 503, "retry_after": 1, "delay": 0.5,
                             "key": "tainted", "value": true, "size": 33554432}
                            (padding: the answer is `size` bytes, sent over `delay` seconds)
    DELETE /_sim/faults
    GET    /_sim/requests   the last requests received (Authorization redacted), at most REQUEST_LOG
    DELETE /_sim/requests
    POST   /_sim/clock      {"now": 1700000000}  freeze the clock ({"now": null} unfreezes)
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import deque
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from exporter.config.types import split_listen
from exporter.simulator.bird import BirdFake
from exporter.simulator.common import Clock, Fault, SimRequest, SimResponse, Vendor, is_sim_token
from exporter.simulator.flux import FluxFake
from exporter.simulator.k6_cloud import K6CloudFake
from exporter.simulator.pluto import PlutoFake
from exporter.simulator.whatsapp_flows import WhatsAppFlowsFake

log = logging.getLogger(__name__)

class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that hung up (a timed-out poll, a cancelled scrape) is routine.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)
    simulator: Simulator


# Requests kept for GET /_sim/requests and tests: the newest ones only, so a
# demo running for days does not grow (each holds its headers and body).
REQUEST_LOG = 2000


class Simulator:
    def __init__(self, listen: str = "127.0.0.1:0", seed: int = 1, freeze_time: float | None = None,
                 request_log: int = REQUEST_LOG, hostile_fixtures: bool = False) -> None:
        self.seed = seed
        # Test fixtures in the data (k6 tag values with quotes, newlines and
        # colliding keys): the tests turn them on, the demo never shows them.
        self.hostile_fixtures = hostile_fixtures
        self.clock = Clock(freeze_time)
        self.started_at = self.clock()
        fakes: list[Vendor] = [K6CloudFake(self), BirdFake(self), PlutoFake(self), WhatsAppFlowsFake(self),
                               FluxFake(self)]
        self.vendors: dict[str, Vendor] = {v.prefix: v for v in fakes}
        self._faults: list[Fault] = []
        self._requests: deque[SimRequest] = deque(maxlen=request_log)
        self._lock = threading.Lock()
        # Requests being answered now, and the most at once, by the first three
        # segments of their path (`/bird/workspaces/ws-1`): what tests of the
        # exporter's concurrency bounds read (`peak_in_flight`).
        self._active: dict[str, int] = {}
        self._peak: dict[str, int] = {}
        host, port = split_listen(listen)
        self._server = _Server((host, port), _Handler)
        self._server.simulator = self
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def base_url(self, prefix: str) -> str:
        return f"{self.url}/{prefix}"

    def start(self) -> Simulator:
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="simulator",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- control --------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def requests(self) -> list[SimRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()
            self._peak.clear()

    def peak_in_flight(self, prefix: str = "") -> int:
        """The most requests under `prefix` (three path segments, or "" for all) answered at once."""
        with self._lock:
            return self._peak.get(prefix, 0)

    def _enter(self, path: str) -> list[str]:
        keys = ["", "/".join(path.split("/")[:4])]
        with self._lock:
            for key in keys:
                self._active[key] = active = self._active.get(key, 0) + 1
                self._peak[key] = max(self._peak.get(key, 0), active)
        return keys

    def _leave(self, keys: list[str]) -> None:
        with self._lock:
            for key in keys:
                self._active[key] -= 1

    def now(self) -> float:
        return self.clock()

    # --- request handling ---------------------------------------------------

    def _take_fault(self, target: str) -> Fault | None:
        """The next fault whose pattern matches `path?query`, used up by one."""
        with self._lock:
            for fault in self._faults:
                if re.search(fault.path, target):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _record(self, request: SimRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def dispatch(self, request: SimRequest) -> SimResponse:
        if request.path.startswith("/_sim/"):
            return self._control(request)
        prefix, _, rest = request.path.lstrip("/").partition("/")
        vendor = self.vendors.get(prefix)
        if vendor is None:
            return SimResponse(404, b"<html><body>Not Found</body></html>", {"Content-Type": "text/html"})
        self._record(request)
        inner = SimRequest(request.method, "/" + rest, request.query, request.headers, request.body,
                           request.received_at)
        return vendor.handle(inner)

    def _control(self, request: SimRequest) -> SimResponse:
        route = (request.method, request.path)
        if route == ("POST", "/_sim/faults"):
            try:
                self.inject(Fault(**request.json()))
            except (TypeError, ValueError, re.error) as exc:
                return SimResponse(400, {"error": str(exc)})
            return SimResponse(201, {"ok": True})
        if route == ("DELETE", "/_sim/faults"):
            self.clear_faults()
            return SimResponse(200, {"ok": True})
        if route == ("GET", "/_sim/requests"):
            return SimResponse(200, {"requests": [_public(r) for r in self.requests]})
        if route == ("DELETE", "/_sim/requests"):
            self.clear_requests()
            return SimResponse(200, {"ok": True})
        if route == ("POST", "/_sim/clock"):
            self.clock.frozen = request.json().get("now")
            return SimResponse(200, {"now": self.now()})
        return SimResponse(404, {"error": "unknown control endpoint"})


def _public(request: SimRequest) -> dict[str, Any]:
    data = asdict(request)
    data["body"] = request.body.decode("utf-8", "replace")
    # Only the simulator's own demo token is shown; anything else may be real.
    auth = data["headers"].get("authorization")
    if auth is not None and not is_sim_token(auth):
        data["headers"]["authorization"] = "<redacted>"
    return data


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, the body waits
    # for the client's delayed ACK (~40 ms a request on loopback).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802
        self._serve()

    def do_POST(self) -> None:  # noqa: N802
        self._serve()

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve()

    def _serve(self) -> None:
        self._keys: list[str] | None = self.server.simulator._enter(urlsplit(self.path).path)
        try:
            self._answer()
        finally:
            self._answered()

    def _answered(self) -> None:
        """Counted out of `peak_in_flight` as the answer starts: the client
        may send its next request as soon as it has read this one, maybe
        before this thread gets to run again."""
        if self._keys is not None:
            self.server.simulator._leave(self._keys)
            self._keys = None

    def _answer(self) -> None:
        simulator = self.server.simulator
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = SimRequest(self.command, split.path, parse_qs(split.query, keep_blank_values=True),
                             {k.lower(): v for k, v in self.headers.items()}, body, time.time())
        fault = None if split.path.startswith("/_sim/") else simulator._take_fault(self.path)
        if fault is not None and fault.kind in ("status", "rate_limit"):
            simulator._record(request)
            self._fault_response(fault)
            return
        if fault is not None and fault.delay and fault.kind != "padding":
            time.sleep(fault.delay)
        try:
            response = simulator.dispatch(request)
        except Exception as exc:  # a bug in a fake must show as a 500, not a hang
            log.exception("simulator error on %s", split.path)
            response = SimResponse(500, {"error": f"simulator bug: {exc}"})
        if fault is not None and fault.kind == "set" and not isinstance(response.body, bytes):
            response.body = _with_key(response.body, fault.key or "", fault.value)
        payload = response.encoded()
        if fault is not None and fault.kind == "malformed":
            payload = b'{"this is": not json' + payload[:20]
        if fault is not None and fault.kind == "padding":
            payload += b" " * max(0, fault.size - len(payload))
        if fault is not None and fault.kind == "lone_surrogate":
            key = rb'"[^"]*"' if fault.key is None else json.dumps(fault.key).encode()
            payload = re.sub(rb"(" + key + rb': "(?:[^"\\]|\\.)*)"', rb'\1\\ud800"', payload)
        self._answered()
        self.send_response(response.status)
        self.send_header("Content-Type", response.headers.pop("Content-Type", "application/json"))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        if fault is not None and fault.kind == "truncated":
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload[: max(1, len(payload) // 2)])
            self.wfile.flush()
            self.close_connection = True
            return
        self.end_headers()
        if fault is not None and fault.kind == "padding" and fault.delay:
            self._write_slowly(payload, fault.delay)
            return
        self.wfile.write(payload)

    def _write_slowly(self, payload: bytes, seconds: float, pieces: int = 16) -> None:
        """A large answer that takes `seconds` to arrive (a slow vendor), so
        that several are being read at once."""
        step = -(-len(payload) // pieces)
        for start in range(0, len(payload), step):
            self.wfile.write(payload[start:start + step])
            self.wfile.flush()
            time.sleep(seconds / pieces)

    def _fault_response(self, fault: Fault) -> None:
        status = 429 if fault.kind == "rate_limit" else fault.status
        body = json.dumps({"error": {"message": f"injected fault: HTTP {status}"}}).encode()
        self._answered()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if fault.retry_after is not None:
            self.send_header("Retry-After", f"{fault.retry_after:g}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.debug("simulator: " + format, *args)


def _with_key(node: Any, key: str, value: Any) -> Any:
    """A copy of a decoded JSON document whose every `key` is `value` (a copy:
    a fake may answer with objects it keeps)."""
    if isinstance(node, dict):
        return {name: value if name == key else _with_key(child, key, value) for name, child in node.items()}
    if isinstance(node, list):
        return [_with_key(child, key, value) for child in node]
    return node
