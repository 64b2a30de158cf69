"""The OTLP sink over real sockets: a test receiver (gRPC and HTTP) decodes what arrives.

Every test runs for both protocols. Collector outages are real: the
receiver's port is closed (connection refused), answers errors, or hangs.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import App
from exporter.app.settings import load_settings
from exporter.cli import simulator_for
from exporter.model import Change, Family, HistogramValue, Kind, Sample, Snapshot, SummaryValue, TargetKey
from exporter.selfmetrics import ProcessMetrics
from exporter.simulator import SIMULATOR_TOKEN
from exporter.sinks.otlp.config import OtlpConfig
from exporter.sinks.otlp.points import OtlpMetric, OtlpType
from exporter.sinks.otlp.sink import OtlpSink
from tests.conftest import REPO, Collector, free_port, k6_config, settings_from
from tests.otlp_receiver import OtlpReceiver, ReceivedPoint
from tests.sinks.otlp.test_points import collector_name

PROTOCOLS = ["grpc", "http/protobuf"]


@pytest.fixture(params=PROTOCOLS)
def receiver(request: pytest.FixtureRequest) -> Iterator[OtlpReceiver]:
    with OtlpReceiver(request.param) as r:
        yield r


def prometheus_name(point: ReceivedPoint) -> str:
    """The name the Collector would give this point's metric."""
    kind = {"gauge": OtlpType.GAUGE, "sum": OtlpType.SUM, "histogram": OtlpType.HISTOGRAM}[point.type]
    return collector_name(OtlpMetric(point.metric, point.unit, kind, point.monotonic))


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


def comparable(point: ReceivedPoint) -> Any:
    """A number, or a histogram as (cumulative counts, finite bounds, sum)."""
    if point.type != "histogram":
        return float(point.value)
    return (tuple(itertools.accumulate(point.value["bucket_counts"])), tuple(point.value["explicit_bounds"]),
            point.value["sum"])


def expected_entries(sample: Sample, poll_time: float) -> dict[tuple[str, Any], tuple[int, Any]]:
    """What the Collector must end up with for one sample, stated from the
    sample: {(Prometheus name, attributes): (time in ns, value)}."""
    when = round((sample.timestamp if sample.timestamp is not None else poll_time) * 1e9)
    name, labels, value = sample.family.name, sample.labels, sample.value
    if isinstance(value, HistogramValue):
        finite = tuple(bound for bound, _ in value.buckets if not math.isinf(bound))
        counts = tuple(float(round(count)) for _, count in value.buckets)
        return {(name, labels): (when, (counts, finite, value.sum))}
    if isinstance(value, SummaryValue):
        entries = {(name, (*labels, ("quantile", repr(float(q))))): (when, float(v)) for q, v in value.quantiles}
        # _count and _sum are the ledger's totals: at the poll time, whatever the quantiles' time.
        polled = round(poll_time * 1e9)
        if value.count is not None:
            entries[(f"{name}_count", labels)] = (polled, float(value.count))
        if value.sum is not None:
            entries[(f"{name}_sum", labels)] = (polled, float(value.sum))
        return entries
    return {(sample.family.exposed_name, labels): (when, float(value))}


# --- every source, end to end ----------------------------------------------------------------------


def test_every_source_arrives_with_names_values_attributes_and_times(receiver: OtlpReceiver, tmp_path: Path) -> None:
    """The shipped exporter.toml lists every source against the simulator."""
    token = tmp_path / "token"
    token.write_text("Bearer t0ken-from-file\n")
    settings = load_settings(REPO / "exporter.toml", environ={
        "APIMETRICS_OTLP__ENABLED": "true", "APIMETRICS_OTLP__PROTOCOL": receiver.protocol,
        "APIMETRICS_OTLP__ENDPOINT": receiver.endpoint, "APIMETRICS_OTLP__COMPRESSION": "gzip",
        "APIMETRICS_OTLP__HEADERS": json.dumps({"x-tenant": "acme", "authorization_file": str(token)}),
        "APIMETRICS_OTLP__RESOURCE_ATTRIBUTES": '{"deployment.environment": "test"}',
    })
    snapshots: list[Snapshot] = []

    async def go(app: App) -> bool:
        app.runner.sinks.append(Collector(snapshots))
        app.build()
        try:
            return await app.poll_all()
        finally:
            await app.stop()  # flushes the queue

    with simulator_for(settings) as simulator_url:
        app = App(settings, simulator_url=simulator_url)
        asyncio.run(go(app))
    assert {s.key.source for s in snapshots} == {source.name for source in settings.sources}

    expected = {}
    for snapshot in snapshots:
        for sample in snapshot.samples:
            expected.update(expected_entries(sample, snapshot.taken_at))

    points = receiver.points()
    received = {(prometheus_name(p), p.attributes): (p.time_ns, comparable(p)) for p in points}
    assert len(received) == len(points), "a point arrived twice"
    assert received.keys() == expected.keys()
    for key, (time_ns, value) in expected.items():
        assert received[key][0] == time_ns, key
        assert same(received[key][1], value), key

    # Types: counters are monotonic cumulative sums starting at the ledger's start.
    bird = [p for p in points if p.metric == "bird_flow_runs"]
    assert bird and all(p.type == "sum" and p.monotonic and p.temporality == 2 and 0 < p.start_ns < p.time_ns
                        for p in bird)
    assert {(p.type, p.unit) for p in points if p.metric == "k6_http_req_duration"} == {("gauge", "s")}

    # What /metrics shows is what the Collector would write.
    shown = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for family in text_string_to_metric_families(app.exposition().decode()) for s in family.samples}
    for (name, labels), (_, value) in expected.items():
        labels = tuple(sorted(labels))
        if isinstance(value, tuple):  # a histogram: its _count, and a _sum only where OTLP has one
            assert shown[(f"{name}_count", labels)] == value[0][-1]
            assert ((f"{name}_sum", labels) in shown) == (value[2] is not None)
        else:
            assert same(shown[(name, labels)], value), name

    resource = dict(points[0].resource)
    assert resource["service.name"] == "api-metrics-exporter"
    assert resource["deployment.environment"] == "test"
    assert {"service.version", "service.instance.id"} <= resource.keys()
    headers = receiver.requests[0].headers
    assert headers["x-tenant"] == "acme" and headers["authorization"] == "Bearer t0ken-from-file"
    if receiver.protocol == "http/protobuf":
        assert receiver.requests[0].encoding == "gzip"


def test_k6_points_carry_the_vendor_time(receiver: OtlpReceiver, simulator: Any, tmp_path: Path) -> None:
    """Checked against the simulator's API directly, not against our samples."""
    text = k6_config(simulator, [103055]) + otlp_toml(receiver)
    app = App(settings_from(tmp_path, text))

    async def go() -> None:
        app.build()
        try:
            await app.poll_all()
        finally:
            await app.stop()

    asyncio.run(go())
    base = f"{simulator.base_url('k6')}/loadtests/v2"
    auth = {"Authorization": f"Token {SIMULATOR_TOKEN}"}
    metrics = httpx.get(f"{base}/metrics", params={"test_run_id": 103055}, headers=auth).json()["k6-metrics"]
    vus = next(m for m in metrics if m["name"] == "vus")
    serie = httpx.get(f"{base}/series", params={"test_run_id": 103055, "ids[]": vus["id"], "method": "value"},
                      headers=auth).json()["k6-serie"][0]["values"]
    newest = max(serie, key=lambda v: v["timestamp"])
    from exporter.sources.kit.timeparse import parse_timestamp

    (point,) = [p for p in receiver.points() if p.metric == "k6_vus"]
    assert point.time_ns == round(parse_timestamp(newest["timestamp"]) * 1e9)
    assert point.value == float(newest["value"]) and point.type == "gauge" and point.unit == ""


def otlp_toml(receiver: OtlpReceiver, **extra: Any) -> str:
    lines = ["[otlp]", "enabled = true", f'protocol = "{receiver.protocol}"', f'endpoint = "{receiver.endpoint}"']
    lines += [f"{key} = {value!r}".replace("'", '"') for key, value in extra.items()]
    return "\n" + "\n".join(lines) + "\n"


# --- the sink on its own ----------------------------------------------------------------------------

GAUGE = Family("g_seconds", Kind.GAUGE, "g", "seconds")
COUNTER = Family("c", Kind.COUNTER, "c")


def poll(index: int, series: int = 2) -> Snapshot:
    """The index-th poll: `series` gauges stamped by the vendor at 1000 + index, and a counter."""
    samples = [Sample(GAUGE, (("s", str(n)),), float(index), timestamp=1000.0 + index) for n in range(series)]
    samples.append(Sample(COUNTER, (), float(index), created=900.0))
    return Snapshot(TargetKey("src", "tgt"), Change.POLLED, index + 1, (), tuple(samples), 2000.0 + index, 1e9)


def make_sink(receiver: OtlpReceiver, **overrides: Any) -> tuple[OtlpSink, CollectorRegistry]:
    registry = CollectorRegistry()
    config = OtlpConfig(enabled=True, protocol=receiver.protocol, endpoint=receiver.endpoint,
                        **{"timeout": 1.0, "backoff": 0.05, "max_backoff": 0.2, **overrides})
    return OtlpSink(config, ProcessMetrics(registry), "test-instance", environ={}), registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_collector_down_then_up_every_point_once_in_order(receiver: OtlpReceiver) -> None:
    sink, registry = make_sink(receiver, max_batch_points=25)
    polls = 40

    async def go() -> None:
        receiver.stop()
        sink.start()
        for index in range(polls):
            sink.publish(poll(index))
            await asyncio.sleep(0.01)
        await until(lambda: value(registry, "apimetrics_otlp_exported_points_total", result="retryable") > 0)
        assert value(registry, "apimetrics_otlp_queue_points") == polls * 3
        receiver.start()
        await until(lambda: len(receiver.points()) >= polls * 3)
        await sink.stop()

    asyncio.run(go())
    points = receiver.points()
    assert len(points) == polls * 3  # none lost, none duplicated
    by_series: dict[Any, list[float]] = {}
    for point in points:
        by_series.setdefault(point.key, []).append(point.value)
    assert by_series == {key: [float(i) for i in range(polls)] for key in by_series}
    assert len(by_series) == 3
    # Requests arrive in queue order: no request holds an older poll than its predecessor.
    spans = [[p.value for p in decode_request(r)] for r in receiver.requests]
    assert all(max(a) <= min(b) for a, b in itertools.pairwise(spans))
    assert value(registry, "apimetrics_otlp_exported_points_total", result="success") == polls * 3
    assert value(registry, "apimetrics_otlp_dropped_points_total", reason="queue_full") == 0
    assert value(registry, "apimetrics_otlp_queue_points") == 0


def decode_request(request: Any) -> list[ReceivedPoint]:
    from tests.otlp_receiver import decode

    return decode(request.body)


def test_collector_down_past_the_queue_size_drops_the_oldest(receiver: OtlpReceiver) -> None:
    sink, registry = make_sink(receiver, max_queue_points=50, max_batch_points=10)
    polls, per_poll = 100, 3
    highest = 0.0

    async def go() -> None:
        nonlocal highest
        receiver.stop()
        sink.start()
        for index in range(polls):
            sink.publish(poll(index))
            highest = max(highest, value(registry, "apimetrics_otlp_queue_points"))
            await asyncio.sleep(0.002)
        await until(lambda: value(registry, "apimetrics_otlp_exported_points_total", result="retryable") > 0)
        receiver.start()
        await until(lambda: value(registry, "apimetrics_otlp_queue_points") == 0)
        await sink.stop()

    asyncio.run(go())
    points = receiver.points()
    dropped = value(registry, "apimetrics_otlp_dropped_points_total", reason="queue_full")
    assert highest <= 50 + 10  # the queue, plus at most one batch in flight
    assert dropped > 0 and len(points) + dropped == polls * per_poll
    assert len({(p.key, p.time_ns) for p in points}) == len(points)
    # The newest points survived: every gauge point of the last polls arrived.
    newest = {p.value for p in points if p.metric == "g"}
    assert set(map(float, range(polls - 10, polls))) <= newest


@pytest.mark.parametrize(("grpc_code", "http_status"), [(grpc.StatusCode.UNAVAILABLE, 503),
                                                        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429)])
def test_throttling_hint_is_honoured_and_points_arrive_once(
    receiver: OtlpReceiver, grpc_code: grpc.StatusCode, http_status: int
) -> None:
    receiver.fail(2, grpc_code=grpc_code, http_status=http_status, retry_after=1)
    sink, registry = make_sink(receiver, timeout=1.5, backoff=0.05, max_backoff=5.0)

    async def go() -> float:
        sink.start()
        started = time.monotonic()
        sink.publish(poll(0))
        await until(lambda: len(receiver.points()) == 3)
        elapsed = time.monotonic() - started
        await sink.stop()
        return elapsed

    elapsed = asyncio.run(go())
    assert receiver.attempts == 3 and len(receiver.points()) == 3
    assert elapsed >= 1.9  # two waits of the hinted second, not the 50 ms backoff
    assert value(registry, "apimetrics_otlp_dropped_points_total", reason="rejected") == 0


def test_a_permanent_error_drops_only_that_batch(receiver: OtlpReceiver) -> None:
    receiver.fail(1, grpc_code=grpc.StatusCode.INVALID_ARGUMENT, http_status=400)
    sink, registry = make_sink(receiver)

    async def go() -> None:
        sink.start()
        sink.publish(poll(0))
        await until(lambda: value(registry, "apimetrics_otlp_dropped_points_total", reason="rejected") == 3)
        sink.publish(poll(1))
        await until(lambda: len(receiver.points()) == 3)
        await sink.stop()

    asyncio.run(go())
    assert {p.value for p in receiver.points()} == {1.0}
    assert receiver.attempts == 2  # a permanent error is not retried
    assert value(registry, "apimetrics_otlp_exported_points_total", result="rejected") == 3


def test_stop_flushes_within_the_grace(receiver: OtlpReceiver) -> None:
    sink, registry = make_sink(receiver, shutdown_grace=8.0)

    async def go() -> None:
        receiver.stop()
        sink.start()
        for index in range(5):
            sink.publish(poll(index))
        await until(lambda: value(registry, "apimetrics_otlp_exported_points_total", result="retryable") > 0)
        asyncio.get_running_loop().call_later(0.5, receiver.start)
        await sink.stop()

    asyncio.run(go())
    assert len(receiver.points()) == 15
    assert value(registry, "apimetrics_otlp_dropped_points_total", reason="shutdown") == 0


def test_stop_gives_up_at_the_grace_and_counts_what_is_left(receiver: OtlpReceiver) -> None:
    sink, registry = make_sink(receiver, shutdown_grace=1.0)

    async def go() -> float:
        receiver.stop()
        sink.start()
        sink.publish(poll(0))
        started = time.monotonic()
        await sink.stop()
        return time.monotonic() - started

    elapsed = asyncio.run(go())
    assert elapsed < 2.0
    assert value(registry, "apimetrics_otlp_dropped_points_total", reason="shutdown") == 3
    assert value(registry, "apimetrics_otlp_queue_points") == 0


def test_histograms_and_summaries_on_the_wire(receiver: OtlpReceiver) -> None:
    histogram = Family("h_seconds", Kind.HISTOGRAM, "h", "seconds")
    summary = Family("flux_latency_seconds", Kind.SUMMARY, "s", "seconds")
    samples = (
        Sample(histogram, (("a", "1"),), HistogramValue(((0.5, 1.0), (1.0, 3.0), (math.inf, 4.0))), created=10.0),
        Sample(summary, (("a", "1"),), SummaryValue(((0.5, 0.2), (0.9, 0.7)), count=9.0, sum=3.0),
               timestamp=20.0, created=10.0),
    )
    sink, _ = make_sink(receiver)

    async def go() -> None:
        sink.start()
        sink.publish(Snapshot(TargetKey("src", "tgt"), Change.POLLED, 1, (), samples, 30.0, 60.0))
        await until(lambda: len(receiver.points()) == 5)
        await sink.stop()

    asyncio.run(go())
    got = {(prometheus_name(p), p.attributes): p for p in receiver.points()}
    h = got[("h_seconds", (("a", "1"),))]
    assert (h.type, h.temporality, h.value["bucket_counts"], h.value["explicit_bounds"], h.value["sum"]) == (
        "histogram", 2, [1, 2, 1], [0.5, 1.0], None)
    assert got[("flux_latency_seconds", (("a", "1"), ("quantile", "0.9")))].value == 0.7
    assert got[("flux_latency_seconds_count", (("a", "1"),))].value == 9.0
    assert got[("flux_latency_seconds_sum", (("a", "1"),))].value == 3.0
    # The quantiles at the vendor's bucket time, the ledger's _count and _sum at the poll's.
    assert got[("flux_latency_seconds", (("a", "1"), ("quantile", "0.9")))].time_ns == 20 * 10**9
    assert got[("flux_latency_seconds_sum", (("a", "1"),))].time_ns == 30 * 10**9


# --- never blocking ---------------------------------------------------------------------------------


def test_a_hung_collector_blocks_neither_polls_nor_metrics(simulator: Any, tmp_path: Path) -> None:
    with OtlpReceiver("http/protobuf") as hung:
        hung.hang(4.0)
        port = free_port()
        text = (f'[server]\nlisten = "127.0.0.1:{port}"\n'
                + k6_config(simulator, [103054]).replace('interval = "60s"', 'interval = "1s"')
                + otlp_toml(hung, timeout="1s", shutdown_grace="1s"))
        app = App(settings_from(tmp_path, text))

        async def go() -> tuple[int, float, float]:
            await app.start()
            try:
                await asyncio.sleep(2.6)
                started = time.monotonic()
                response = await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/metrics", timeout=5)
                scrape = time.monotonic() - started
                assert response.status_code == 200
                polls = app.runner.status[("k6", "103054")].polls
            finally:
                started = time.monotonic()
                await app.stop()
            return polls, scrape, time.monotonic() - started

        polls, scrape, stopping = asyncio.run(go())
    assert polls >= 2
    assert scrape < 1.0
    assert stopping < 2.5  # the grace, not the hung request


# --- TLS ------------------------------------------------------------------------------------------


def test_grpc_over_tls_with_a_configured_ca(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed (needed to make a test certificate)")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server = grpc.server(__import__("concurrent.futures").futures.ThreadPoolExecutor(2))
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc

    from tests.otlp_receiver import _Servicer, _State

    state = _State()
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Servicer(state), server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())]))
    server.start()
    try:
        config = OtlpConfig(enabled=True, protocol="grpc", endpoint=f"https://localhost:{port}", ca_file=cert,
                            timeout=3.0)
        sink = OtlpSink(config, ProcessMetrics(CollectorRegistry()), "tls", environ={})

        async def go() -> None:
            sink.start()
            sink.publish(poll(0))
            await until(lambda: len(state.requests) == 1)
            await sink.stop()

        asyncio.run(go())
    finally:
        server.stop(None)


def test_an_attempt_with_too_little_time_left_is_not_started(receiver: OtlpReceiver) -> None:
    """Such an attempt would reach the collector and time out before its answer:
    a duplicate once the batch is sent again."""
    import requests
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc

    from exporter.sinks.otlp.transport import _FloorAdapter, _Recorder

    body = metrics_service_pb2.ExportMetricsServiceRequest()
    if receiver.protocol == "grpc":
        channel = grpc.intercept_channel(grpc.insecure_channel(f"127.0.0.1:{receiver.port}"), _Recorder(0.5))
        stub = metrics_service_pb2_grpc.MetricsServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Export(body, timeout=0.1)
        assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        stub.Export(body, timeout=2.0)
        channel.close()
    else:
        session = requests.Session()
        session.mount("http://", _FloorAdapter(0.5))
        url = f"{receiver.endpoint}/v1/metrics"
        with pytest.raises(requests.exceptions.ConnectTimeout):
            session.post(url, data=body.SerializeToString(), timeout=0.1)
        assert session.post(url, data=body.SerializeToString(), timeout=2.0).status_code == 200
    assert receiver.attempts == 1
