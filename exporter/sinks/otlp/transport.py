"""OTLP transport: the SDK's exporters, configured explicit > environment > default, and what a failure means.

`resolve()` is pure: `[otlp]` keys win, then the standard variables (the
metrics-specific `OTEL_EXPORTER_OTLP_METRICS_*` before `OTEL_EXPORTER_OTLP_*`),
then the OTLP defaults. Every resolved value is passed to the SDK exporter
explicitly, so both transports behave alike (the SDK's gRPC exporter would let
configured headers replace the environment's, its HTTP one merge them; here
they always merge, key by key, config winning). Two deliberate differences
from opentelemetry-python: `OTEL_EXPORTER_OTLP_TIMEOUT` is read in
milliseconds, as the specification says (the Python SDK reads seconds), and
the default protocol is `http/protobuf`, the specification's default.

Bodies. The sink encodes its own requests (`otlp_wire.py`, ~10x the SDK's
speed); both SDK exporters are given those bytes through one small override
each (`Encoded`), and keep everything else: retries, compression, TLS,
headers, size limits and their internal metrics.

`Transport.export()` is blocking (the sink calls it in a worker thread) and
never raises. The SDK exporters answer only SUCCESS or FAILURE; to tell a
retryable failure from a permanent one, and to read throttling hints, each
attempt's status is recorded on the way: a `requests` response hook (the HTTP
exporter's public `session=` argument) and a gRPC client interceptor on the
exporter's channel.

Retries. The SDK exporters retry transient errors themselves (up to 6 tries,
backoff 1 s, 2 s, 4 s…, honouring Retry-After / RetryInfo), but only within
one call's `timeout`. So one `export()` is bounded by `timeout`, SDK retries
included, and the sink's own retry loop (with its `backoff`…`max_backoff`)
is the only one that goes on: retries never multiply. One guard: the SDK
gives a retry whatever is left of the deadline, which after a jittered
backoff can be a few milliseconds, so the request reaches the collector and
times out before the answer: a duplicate when the batch is sent again. Here an
attempt with less than `min_attempt_seconds()` left is not started (it fails
as a connection error would, before sending); the next `export()` gets a
whole `timeout`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import grpc
import requests
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
from opentelemetry.util.re import parse_env_headers
from requests.adapters import HTTPAdapter

from exporter.retry import parse_retry_after
from exporter.sinks.otlp.config import OtlpConfig

log = logging.getLogger(__name__)

DEFAULT_PROTOCOL = "http/protobuf"
DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
DEFAULT_HTTP_ENDPOINT = "http://localhost:4318/v1/metrics"
HTTP_PATH = "/v1/metrics"
DEFAULT_TIMEOUT = 10.0

# OTLP/gRPC: the codes the specification (and the SDK) call retryable, plus
# RESOURCE_EXHAUSTED (the collector's memory limiter sheds load with it).
RETRYABLE_GRPC = frozenset({
    grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
})
# OTLP/HTTP: the specification's retryable statuses.
RETRYABLE_HTTP = frozenset({429, 502, 503, 504})
MIN_ATTEMPT_SECONDS = 1.0


def min_attempt_seconds(timeout: float) -> float:
    """The least time an attempt must have to be started."""
    return min(MIN_ATTEMPT_SECONDS, timeout / 2)


@dataclass(frozen=True)
class ExporterSettings:
    protocol: str
    endpoint: str
    headers: dict[str, str] = field(repr=False)
    timeout: float
    compression: str
    insecure: bool
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


def _env(environ: Mapping[str, str], suffix: str) -> tuple[str, str] | None:
    """(variable, value) of the first set of OTEL_EXPORTER_OTLP_METRICS_<suffix>, OTEL_EXPORTER_OTLP_<suffix>."""
    for name in (f"OTEL_EXPORTER_OTLP_METRICS_{suffix}", f"OTEL_EXPORTER_OTLP_{suffix}"):
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return None


def _env_choice(environ: Mapping[str, str], suffix: str, allowed: tuple[str, ...], default: str) -> str:
    found = _env(environ, suffix)
    if found is None:
        return default
    name, value = found
    if value.lower() not in allowed:
        log.warning("%s=%r is not supported (one of %s); using %s", name, value, ", ".join(allowed), default)
        return default
    return value.lower()


def http_url(endpoint: str) -> str:
    """A base URL gets `/v1/metrics`, as OTEL_EXPORTER_OTLP_ENDPOINT does; a URL with a path is used as it is."""
    if urlparse(endpoint).path in ("", "/"):
        return endpoint.rstrip("/") + HTTP_PATH
    return endpoint


def resolve(config: OtlpConfig, environ: Mapping[str, str]) -> ExporterSettings:
    protocol = config.protocol or _env_choice(environ, "PROTOCOL", ("grpc", "http/protobuf"), DEFAULT_PROTOCOL)
    grpc_ = protocol == "grpc"

    if config.endpoint:
        endpoint = config.endpoint if grpc_ else http_url(config.endpoint)
    elif signal := environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "").strip():
        endpoint = signal
    elif base := environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        endpoint = base if grpc_ else base.rstrip("/") + HTTP_PATH
    else:
        endpoint = DEFAULT_GRPC_ENDPOINT if grpc_ else DEFAULT_HTTP_ENDPOINT

    found = _env(environ, "HEADERS")
    headers = {k.lower(): v for k, v in parse_env_headers(found[1], liberal=True).items()} if found else {}
    headers.update({k.lower(): v.get_secret_value() for k, v in config.headers.items()})

    timeout = config.timeout
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
        if (found := _env(environ, "TIMEOUT")) is not None:
            try:
                millis = float(found[1])
                if not millis > 0:
                    raise ValueError
                timeout = millis / 1000
            except ValueError:
                log.warning("%s=%r is not a positive number of milliseconds; using %gs", *found, DEFAULT_TIMEOUT)

    compression = config.compression or _env_choice(environ, "COMPRESSION", ("gzip", "none"), "none")

    scheme = urlparse(endpoint).scheme if "://" in endpoint else ""
    if scheme == "https":
        insecure = False
    elif config.insecure is not None:
        insecure = config.insecure
    elif (found := _env(environ, "INSECURE")) is not None:
        insecure = found[1].lower() == "true"
    else:
        insecure = scheme == "http"

    def path(configured: Path | None, suffix: str) -> str | None:
        if configured is not None:
            return str(configured)
        found = _env(environ, suffix)
        return found[1] if found else None

    return ExporterSettings(
        protocol=protocol, endpoint=endpoint, headers=headers, timeout=timeout, compression=compression,
        insecure=insecure, ca_file=path(config.ca_file, "CERTIFICATE"),
        cert_file=path(config.cert_file, "CLIENT_CERTIFICATE"), key_file=path(config.key_file, "CLIENT_KEY"),
    )


# --- what an attempt answered ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one `Transport.export()`: delivered, or why not."""

    ok: bool
    retryable: bool = False
    reason: str = "ok"
    retry_after: float | None = None


SUCCESS = Outcome(True)


class _TooLate(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """An attempt not started: too little of the deadline left (see the module docstring)."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.DEADLINE_EXCEEDED

    def details(self) -> str:
        return "not started: too little time left before the export deadline"

    def trailing_metadata(self) -> tuple[()]:
        return ()

    def initial_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False


class _FloorAdapter(HTTPAdapter):
    """requests' adapter, refusing to start a request with too little time left."""

    def __init__(self, floor: float) -> None:
        super().__init__()
        self.floor = floor

    def send(self, request: Any, stream: bool = False, timeout: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        if isinstance(timeout, int | float) and timeout < self.floor:
            raise requests.exceptions.ConnectTimeout("not started: too little time left before the export deadline")
        return super().send(request, stream=stream, timeout=timeout, **kwargs)


class _Recorder(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """The status of the last attempt, whichever transport made it; for gRPC
    also the guard against attempts with too little time left."""

    def __init__(self, floor: float = 0.0) -> None:
        self._lock = threading.Lock()
        self.last: Outcome | None = None
        self.floor = floor

    def reset(self) -> None:
        with self._lock:
            self.last = None

    def _set(self, outcome: Outcome) -> None:
        with self._lock:
            self.last = outcome

    def on_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        status = response.status_code
        if 200 <= status < 300:
            self._set(SUCCESS)
        else:
            retryable = status in RETRYABLE_HTTP
            hint = parse_retry_after(response.headers.get("Retry-After")) if retryable else None
            self._set(Outcome(False, retryable, f"http_{status}", hint))

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        if details.timeout is not None and details.timeout < self.floor:
            raise _TooLate()  # the SDK sees a failed attempt; the last real status stays recorded
        call = continuation(details, request)
        try:
            code = call.code()
            if code is grpc.StatusCode.OK:
                self._set(SUCCESS)
                return call
            hint = None
            for key, value in call.trailing_metadata() or ():
                if key == "google.rpc.retryinfo-bin":
                    info = RetryInfo()
                    info.ParseFromString(value)
                    hint = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
            self._set(Outcome(False, code in RETRYABLE_GRPC, code.name.lower(), hint))
        except Exception:  # recording must never break the call itself
            log.debug("could not record the gRPC status", exc_info=True)
        return call


@dataclass(frozen=True)
class Encoded:
    """A request already encoded by `otlp_wire` and its number of points."""

    body: bytes
    points: int

    def request(self) -> ExportMetricsServiceRequest:
        # upb parses at C speed (~50 ns a point): the SDK exporters want a
        # message, and re-serialise it to the same bytes.
        request: ExportMetricsServiceRequest = ExportMetricsServiceRequest.FromString(self.body)
        return request


class _RecordingGrpcExporter(GrpcMetricExporter):
    """The SDK's gRPC exporter with its channel wrapped by the recorder (the
    SDK re-creates the channel after UNAVAILABLE, so the wrap is redone
    there), sending `Encoded` requests."""

    def __init__(self, recorder: _Recorder, **kwargs: Any) -> None:
        self._apimetrics_recorder = recorder
        super().__init__(**kwargs)

    def _initialize_channel_and_stub(self) -> None:
        super()._initialize_channel_and_stub()  # type: ignore[no-untyped-call]
        self._client = self._stub(grpc.intercept_channel(self._channel, self._apimetrics_recorder))

    def _translate_data(self, data: Encoded) -> ExportMetricsServiceRequest:  # type: ignore[override]
        return data.request()

    def _count_data(self, data: Encoded) -> int:  # type: ignore[override]
        return data.points


class _EncodedHttpExporter(HttpMetricExporter):
    """The SDK's HTTP exporter, sending `Encoded` requests."""

    def export(self, metrics_data: Encoded, timeout_millis: float | None = 10000,  # type: ignore[override]
               **kwargs: Any) -> MetricExportResult:
        if self._shutdown:
            return MetricExportResult.FAILURE
        return self._export_batch(metrics_data.request())


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def build_exporter(settings: ExporterSettings, recorder: _Recorder) -> MetricExporter:
    if settings.protocol == "grpc":
        credentials = None
        if not settings.insecure:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(settings.ca_file), private_key=_read(settings.key_file),
                certificate_chain=_read(settings.cert_file),
            )
        return _RecordingGrpcExporter(
            recorder,
            endpoint=settings.endpoint,
            insecure=settings.insecure,
            credentials=credentials,
            headers=settings.headers,
            timeout=settings.timeout,
            compression=grpc.Compression.Gzip if settings.compression == "gzip" else grpc.Compression.NoCompression,
        )
    session = requests.Session()
    session.hooks["response"].append(recorder.on_response)
    adapter = _FloorAdapter(recorder.floor)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return _EncodedHttpExporter(
        endpoint=settings.endpoint,
        certificate_file=settings.ca_file,
        client_key_file=settings.key_file,
        client_certificate_file=settings.cert_file,
        headers=settings.headers,
        timeout=settings.timeout,
        compression=HttpCompression.Gzip if settings.compression == "gzip" else HttpCompression.NoCompression,
        session=session,
    )


class Transport:
    """One SDK exporter and the recorder of its attempts. Not thread-safe:
    the sink makes one export at a time."""

    def __init__(self, settings: ExporterSettings) -> None:
        self.settings = settings
        self._recorder = _Recorder(min_attempt_seconds(settings.timeout))
        self._exporter = build_exporter(settings, self._recorder)

    def export(self, data: Encoded) -> Outcome:
        """Send once (with the SDK's retries within `timeout`); never raises."""
        self._recorder.reset()
        try:
            # The exporters above take `Encoded` where the SDK's signature says MetricsData.
            result = self._exporter.export(data)  # type: ignore[arg-type]
        except Exception as exc:  # the SDK's gRPC exporter lets encoding errors out
            log.error("OTLP export failed before sending: %s: %s", type(exc).__name__, exc)
            return Outcome(False, False, "invalid")
        last = self._recorder.last
        if result is MetricExportResult.SUCCESS:
            return SUCCESS
        if last is None or last.ok:
            # No answer at all: connection refused or reset, TLS failure, or a
            # timeout before any response. Worth another try later.
            return Outcome(False, True, "connection")
        return last

    def shutdown(self) -> None:
        """Abort the SDK's retry waits and close the connection; never raises."""
        try:
            self._exporter.shutdown()
        except Exception:
            log.debug("OTLP exporter shutdown failed", exc_info=True)
