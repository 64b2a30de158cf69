"""A test OTLP receiver, gRPC or HTTP, built from opentelemetry-proto: it decodes what really arrives.

It stands in for a Collector's `otlp` receiver on loopback. Tests can stop it
(port closed: connection refused) and start it again on the same port, make
it answer the next requests with an error (a gRPC status with RetryInfo, or
an HTTP status with Retry-After), or make it hang.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

Attributes = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class ReceivedPoint:
    """One data point as it was on the wire."""

    metric: str
    unit: str
    description: str
    type: str  # gauge | sum | histogram | summary | exponential_histogram
    monotonic: bool
    temporality: int
    attributes: Attributes
    time_ns: int
    start_ns: int
    value: Any  # float, or a dict for histograms
    resource: Attributes
    scope: tuple[str, str]

    @property
    def key(self) -> tuple[str, Attributes]:
        return self.metric, self.attributes


@dataclass
class Request:
    body: metrics_service_pb2.ExportMetricsServiceRequest
    headers: dict[str, str]
    encoding: str


@dataclass
class Fault:
    """Answer the next `times` requests with an error."""

    times: int
    grpc_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    http_status: int = 503
    retry_after: float | None = None


def _any(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _attrs(pairs: Any) -> Attributes:
    return tuple((kv.key, _any(kv.value)) for kv in pairs)


def decode(request: metrics_service_pb2.ExportMetricsServiceRequest) -> list[ReceivedPoint]:
    """Every data point of a request, in wire order."""
    points = []
    for rm in request.resource_metrics:
        resource = _attrs(rm.resource.attributes)
        for sm in rm.scope_metrics:
            scope = (sm.scope.name, sm.scope.version)
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                data = getattr(metric, kind)
                monotonic = getattr(data, "is_monotonic", False)
                temporality = getattr(data, "aggregation_temporality", 0)
                for dp in data.data_points:
                    if kind in ("gauge", "sum"):
                        value: Any = dp.as_double if dp.WhichOneof("value") == "as_double" else dp.as_int
                    elif kind == "histogram":
                        value = {
                            "count": dp.count,
                            "sum": dp.sum if dp.HasField("sum") else None,
                            "bucket_counts": list(dp.bucket_counts),
                            "explicit_bounds": list(dp.explicit_bounds),
                            "min": dp.min if dp.HasField("min") else None,
                            "max": dp.max if dp.HasField("max") else None,
                        }
                    else:
                        value = dp
                    points.append(ReceivedPoint(
                        metric.name, metric.unit, metric.description, kind, monotonic, temporality,
                        _attrs(dp.attributes), dp.time_unix_nano, dp.start_time_unix_nano, value, resource, scope,
                    ))
    return points


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[Request] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    hang: float = 0.0
    attempts: int = 0

    def next_fault(self) -> Fault | None:
        with self.lock:
            self.attempts += 1
            while self.faults and self.faults[0].times <= 0:
                self.faults.pop(0)
            if not self.faults:
                return None
            self.faults[0].times -= 1
            return self.faults[0]

    def record(self, request: Request) -> None:
        with self.lock:
            self.requests.append(request)


class _Servicer(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, state: _State) -> None:
        self.state = state

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - gRPC API
        if self.state.hang:
            time.sleep(self.state.hang)
        fault = self.state.next_fault()
        if fault is not None:
            if fault.retry_after is not None:
                info = RetryInfo(retry_delay=Duration(seconds=int(fault.retry_after),
                                                      nanos=int(fault.retry_after % 1 * 1e9)))
                context.set_trailing_metadata((("google.rpc.retryinfo-bin", info.SerializeToString()),))
            context.abort(fault.grpc_code, "injected fault")
        headers = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
        self.state.record(Request(request, headers, headers.get("grpc-encoding", "identity")))
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        state = self.server.state
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if state.hang:
            time.sleep(state.hang)
        if self.path != "/v1/metrics":
            self._answer(404, b"")
            return
        fault = state.next_fault()
        if fault is not None:
            extra = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            self._answer(fault.http_status, b"injected fault", extra)
            return
        encoding = self.headers.get("Content-Encoding", "identity")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        request = metrics_service_pb2.ExportMetricsServiceRequest()
        request.ParseFromString(body)
        state.record(Request(request, {k.lower(): v for k, v in self.headers.items()}, encoding))
        self._answer(200, metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString())

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    state: _State

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up on a hung answer


class OtlpReceiver:
    """`protocol` is `grpc` or `http/protobuf`; `endpoint` is what `[otlp] endpoint` takes."""

    def __init__(self, protocol: str, port: int = 0) -> None:
        self.protocol = protocol
        self.port = port
        self.state = _State()
        self._grpc: grpc.Server | None = None
        self._http: _HttpServer | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OtlpReceiver:
        if self.protocol == "grpc":
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
            metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Servicer(self.state), server)
            self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
            server.start()
            self._grpc = server
        else:
            http = _HttpServer(("127.0.0.1", self.port), _Handler)
            http.state = self.state
            self.port = http.server_address[1]
            threading.Thread(target=http.serve_forever, daemon=True).start()
            self._http = http
        return self

    def stop(self) -> None:
        """Close the port (connections refused) but keep it for `start()`."""
        if self._grpc is not None:
            self._grpc.stop(grace=None).wait()
            self._grpc = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- behaviour ----------------------------------------------------------------

    def fail(self, times: int, grpc_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE, http_status: int = 503,
             retry_after: float | None = None) -> None:
        with self.state.lock:
            self.state.faults.append(Fault(times, grpc_code, http_status, retry_after))

    def hang(self, seconds: float) -> None:
        self.state.hang = seconds

    # --- what arrived ----------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        with self.state.lock:
            return list(self.state.requests)

    @property
    def attempts(self) -> int:
        return self.state.attempts

    def points(self) -> list[ReceivedPoint]:
        return [point for request in self.requests for point in decode(request.body)]

    def wait_for(self, condition: Callable[[OtlpReceiver], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver: condition not met within {timeout}s; got {len(self.points())} points")
            time.sleep(0.02)
