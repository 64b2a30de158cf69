"""OTLP encoding, naming, resource and settings: the pure parts of the OTLP sink.

The name test states the Collector's Prometheus translation independently
(from the Collector's `pkg/translator/prometheus` and Prometheus'
`otlptranslator`, which the Collector's `prometheus` and
`prometheusremotewrite` exporters and Prometheus' own OTLP receiver use) and
checks that every family we expose comes back unchanged through it.
"""

from __future__ import annotations

import asyncio
import math
import re
import string
from dataclasses import dataclass
from pathlib import Path

import opentelemetry.sdk.metrics.export as sdk_export
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exporter.app import App
from exporter.app.settings import load_settings
from exporter.cli import simulator_for
from exporter.config import ConfigError
from exporter.model import Change, Family, HistogramValue, Kind, Sample, Snapshot, SummaryValue
from exporter.selfmetrics import SELF_METRICS, ProcessMetrics
from exporter.sinks.otlp.config import OtlpConfig
from exporter.sinks.otlp.points import (
    HistogramPoint,
    OtlpMetric,
    OtlpType,
    build_resource,
    encode,
    histogram_point,
    new_points,
    parse_resource_attributes,
    scope,
    translate,
)
from exporter.sinks.otlp.transport import resolve
from tests import metrics_doc
from tests.conftest import REPO, settings_from
from tests.otlp_receiver import decode

# --- the Collector's translation, stated independently --------------------------------------

UNIT_WORDS = {  # the Collector's unitMap
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds", "us": "microseconds",
    "ns": "nanoseconds", "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "GiBy": "gibibytes",
    "TiBy": "tibibytes", "KBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes", "TBy": "terabytes",
    "m": "meters", "V": "volts", "A": "amperes", "J": "joules", "W": "watts", "g": "grams",
    "Cel": "celsius", "Hz": "hertz", "1": "", "%": "percent",
}
PER_UNIT_WORDS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}


def _unit_suffixes(unit: str) -> tuple[str, str]:
    main, _, per = unit.partition("/")
    main_word = per_word = ""
    main = main.strip()
    if main and not set(main) & set("{}"):
        main_word = UNIT_WORDS.get(main, main)
    per = per.strip()
    if per and not set(per) & set("{}"):
        per_word = "per_" + PER_UNIT_WORDS.get(per, per)
    return main_word, per_word


def collector_name(metric: OtlpMetric) -> str:
    """Default strategy (UnderscoreEscapingWithSuffixes): names are split into
    tokens of [a-zA-Z0-9:], the unit word is added unless it is a token
    already, `total` is moved to the end of monotonic sums, `ratio` to the end
    of gauges of unit 1."""
    tokens = [t for t in re.split(r"[^a-zA-Z0-9:]", metric.name) if t]
    main, per = _unit_suffixes(metric.unit)
    main = "_".join(t for t in re.split(r"[^a-zA-Z0-9:]", main) if t)
    per = "_".join(t for t in re.split(r"[^a-zA-Z0-9:]", per) if t)
    if main in tokens:
        main = ""
    if per.removeprefix("per_") in tokens:
        per = ""
    tokens += [t for t in (main, per) if t]
    if metric.type is OtlpType.SUM and metric.monotonic:
        tokens = [t for t in tokens if t != "total"] + ["total"]
    if metric.unit == "1" and metric.type is OtlpType.GAUGE:
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    name = "_".join(tokens)
    return "_" + name if name[:1].isdigit() else name


def collector_name_utf8(metric: OtlpMetric) -> str:
    """The UTF-8 strategy with suffixes (NoUTF8EscapingWithSuffixes)."""
    name = metric.name
    after = ""
    if metric.unit == "1" and metric.type is OtlpType.GAUGE:
        name = name[: -len("_ratio")] if name.endswith("ratio") and len(name) > 6 else name
        after = "_ratio"
    if metric.type is OtlpType.SUM and metric.monotonic:
        name = name[: -len("_total")] if name.endswith("total") and len(name) > 6 else name
        after = "_total" + after
    main, per = _unit_suffixes(metric.unit)
    if per:
        name = name[: -(len(per) + 1)] if name.endswith(per) and len(name) > len(per) + 1 else name
        after = "_" + per + after
    if main and not name.endswith(main):
        name += "_" + main
    return name + after


def prometheus_names(family: Family) -> list[tuple[OtlpMetric, str]]:
    """Each OTLP metric of a family and the /metrics name it must become."""
    translation = translate(family)
    if family.kind is Kind.SUMMARY:
        assert translation.count is not None and translation.sum is not None
        return [(translation.value, family.name), (translation.count, f"{family.name}_count"),
                (translation.sum, f"{family.name}_sum")]
    return [(translation.value, family.exposed_name)]


def assert_round_trip(family: Family) -> None:
    for metric, expected in prometheus_names(family):
        assert collector_name(metric) == expected, (family, metric)
        assert collector_name_utf8(metric) == expected, (family, metric)


# --- every family --------------------------------------------------------------------------


def simulator_families() -> set[Family]:
    """Every family every source emits against the simulator: the shipped
    exporter.toml lists every source with the simulator serving it."""
    settings = load_settings(REPO / "exporter.toml", environ={})
    families: set[Family] = set()
    polled: set[str] = set()

    class Listen:
        def publish(self, snapshot: Snapshot) -> None:
            if snapshot.change is Change.POLLED:
                polled.add(snapshot.key.source)
                families.update(sample.family for sample in snapshot.samples)

    async def go(app: App) -> bool:
        app.runner.sinks.append(Listen())
        app.build()
        try:
            return await app.poll_all()
        finally:
            await app.stop()

    with simulator_for(settings) as simulator_url:
        asyncio.run(go(App(settings, simulator_url=simulator_url)))
    assert polled == {source.name for source in settings.sources}
    return families


def documented_families() -> set[Family]:
    """The families named in docs/metrics.md's rendered tables; patterns
    (`k6_<name>`) are covered by the simulator run."""
    families = set()
    for row in metrics_doc.documented_families():
        if row.is_pattern:
            continue
        kind = Kind(row.kind)
        name = row.name.removesuffix("_total") if kind is Kind.COUNTER else row.name
        families.add(Family(name, kind, "", row.unit))
    return families


def self_families() -> set[Family]:
    return {row.family for row in SELF_METRICS}


# Kinds no landed source has yet, with every unit suffix a family may carry.
SYNTHETIC = {
    Family(f"synthetic_{what}{suffix}", kind, "")
    for kind in Kind for what in ("value", "ratio_of_things")
    for suffix in ("", "_seconds", "_bytes", "_ratio", "_percent", "_celsius")
}


def test_every_family_translates_back_to_its_prometheus_name() -> None:
    found = simulator_families()
    documented = documented_families()
    mine = self_families()
    assert any(f.name.startswith("k6_http_req_duration") for f in found)
    assert {"bird_flow_runs_total", "apimetrics_otlp_exported_points_total"} <= {f.exposed_name for f in documented}
    assert {"apimetrics_poll_duration_seconds", "apimetrics_otlp_queue_points"} <= {f.name for f in mine}
    families = found | documented | mine | SYNTHETIC
    for family in sorted(families, key=lambda f: (f.name, f.kind)):
        assert_round_trip(family)


def test_the_documented_examples() -> None:
    runs = translate(Family("bird_flow_runs", Kind.COUNTER, "h")).value
    assert (runs.name, runs.unit, runs.type, runs.monotonic) == ("bird_flow_runs", "1", OtlpType.SUM, True)
    duration = translate(Family("k6_http_req_duration_seconds", Kind.GAUGE, "h", "seconds")).value
    assert (duration.name, duration.unit, duration.type) == ("k6_http_req_duration", "s", OtlpType.GAUGE)
    data = translate(Family("k6_data_received_bytes", Kind.GAUGE, "h", "bytes")).value
    assert (data.name, data.unit) == ("k6_data_received", "By")
    vus = translate(Family("k6_vus", Kind.GAUGE, "h")).value
    assert (vus.name, vus.unit) == ("k6_vus", "")  # unit 1 on a gauge would become k6_vus_ratio


def test_the_sdk_has_no_summary_data_class() -> None:
    """Summaries are sent as quantile gauges plus _count/_sum sums because the
    SDK data classes have no Summary; when one appears, use it (docs/metrics.md)."""
    assert not hasattr(sdk_export, "Summary")


TOKEN = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=6).filter(lambda t: t[0].isalpha())
SUFFIX = st.sampled_from(["", "seconds", "bytes", "ratio", "percent", "hours", "total", "count"])


@given(st.lists(TOKEN, min_size=1, max_size=4), SUFFIX, st.sampled_from(list(Kind)))
def test_round_trip_holds_for_any_well_formed_name(tokens: list[str], suffix: str, kind: Kind) -> None:
    name = "_".join([*tokens, suffix] if suffix else tokens)
    if kind is Kind.COUNTER and "total" in name.split("_"):
        return  # a documented limit: the Collector moves every `total` token to the end
    assert_round_trip(Family(name, kind, ""))


def test_limits_are_what_the_docstring_says() -> None:
    assert collector_name(translate(Family("k6_trailing_", Kind.GAUGE, "")).value) == "k6_trailing"
    counter = translate(Family("x_total_y", Kind.COUNTER, "")).value
    assert collector_name(counter) == "x_y_total"


# --- points -------------------------------------------------------------------------------

G = Family("g_seconds", Kind.GAUGE, "a gauge", "seconds")
C = Family("c", Kind.COUNTER, "a counter")
H = Family("h_seconds", Kind.HISTOGRAM, "a histogram", "seconds")
S = Family("s", Kind.SUMMARY, "a summary")
LABELS = (("b", "2"), ("a", "1"))


@dataclass(frozen=True, slots=True)
class WithHistory(Sample):
    """The future `Sample.history` field, ahead of time."""

    history: tuple[tuple[float, float], ...] = ()


def test_gauge_at_vendor_time_else_poll_time() -> None:
    points, _ = new_points([Sample(G, LABELS, 1.5, timestamp=100.25), Sample(G, (("a", "2"),), 2.0)], 200.0, 0.0, {})
    assert [(p.time_ns, p.start_ns, p.value, p.attributes) for p in points] == [
        (100_250_000_000, 0, 1.5, LABELS), (200_000_000_000, 0, 2.0, (("a", "2"),))]


def test_counter_starts_at_created() -> None:
    (point,), _ = new_points([Sample(C, LABELS, 7.0, created=50.0)], 200.0, 10.0, {})
    assert (point.metric.type, point.metric.monotonic, point.start_ns, point.time_ns) == (
        OtlpType.SUM, True, 50_000_000_000, 200_000_000_000)
    (point,), _ = new_points([Sample(C, LABELS, 7.0)], 200.0, 10.0, {})
    assert point.start_ns == 10_000_000_000  # no created: the sink's start


def test_vendor_stamped_points_are_sent_once() -> None:
    sample = Sample(G, LABELS, 1.0, timestamp=100.0)
    first, sent = new_points([sample], 200.0, 0.0, {})
    again, sent = new_points([sample], 260.0, 0.0, sent)
    newer, _ = new_points([Sample(G, LABELS, 2.0, timestamp=101.0)], 320.0, 0.0, sent)
    assert (len(first), len(again), [p.value for p in newer]) == (1, 0, [2.0])
    unstamped = Sample(G, LABELS, 1.0)
    assert len(new_points([unstamped], 1.0, 0.0, {})[0]) == len(new_points([unstamped], 2.0, 0.0, sent)[0]) == 1


def test_history_points_come_first_each_its_own_point() -> None:
    sample = WithHistory(G, LABELS, 3.0, timestamp=103.0, history=((101.0, 1.0), (102.0, 2.0)))
    points, sent = new_points([sample], 200.0, 0.0, {})
    assert [(p.time_ns // 10**9, p.value) for p in points] == [(101, 1.0), (102, 2.0), (103, 3.0)]
    later = WithHistory(G, LABELS, 5.0, timestamp=105.0, history=((103.0, 3.0), (104.0, 4.0)))
    points, _ = new_points([later], 260.0, 0.0, sent)
    assert [(p.time_ns // 10**9, p.value) for p in points] == [(104, 4.0), (105, 5.0)]


def test_histogram_buckets_become_per_bucket_counts() -> None:
    value = HistogramValue(((0.1, 2.0), (0.5, 5.0), (1.0, 5.0), (math.inf, 9.0)), sum=3.25)
    assert histogram_point(value) == HistogramPoint((0.1, 0.5, 1.0), (2, 3, 0, 4), 9, 3.25)
    # Non-monotonic vendor buckets are clamped; no +Inf bucket gets an empty one.
    assert histogram_point(HistogramValue(((1.0, 4.0), (2.0, 3.0)))) == HistogramPoint((1.0, 2.0), (4, 0, 0), 4, None)


def test_encoded_histogram_without_sum_has_no_sum_on_the_wire() -> None:
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    samples = [Sample(H, LABELS, HistogramValue(((1.0, 1.0), (math.inf, 3.0))), created=10.0),
               Sample(H, (("a", "x"),), HistogramValue(((1.0, 1.0), (math.inf, 3.0)), sum=4.5), created=10.0)]
    points, _ = new_points(samples, 20.0, 0.0, {})
    data = encode(points, build_resource({}, {}, "i", "v"), scope("v"))
    received = decode(encode_metrics(data))
    assert [(p.metric, p.unit, p.type, p.temporality) for p in received] == [("h", "s", "histogram", 2)] * 2
    assert [p.value["sum"] for p in received] == [None, 4.5]
    assert received[0].value["bucket_counts"] == [1, 2] and received[0].value["explicit_bounds"] == [1.0]
    assert received[0].value["min"] is None and received[0].value["max"] is None
    assert received[0].start_ns == 10_000_000_000


def test_summary_is_quantile_gauges_and_non_monotonic_sums() -> None:
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    sample = Sample(S, LABELS, SummaryValue(((0.5, 1.0), (0.99, 4.0)), count=10.0, sum=20.0), timestamp=30.0,
                    created=5.0)
    points, _ = new_points([sample], 40.0, 0.0, {})
    received = decode(encode_metrics(encode(points, build_resource({}, {}, "i", "v"), scope("v"))))
    assert [(p.metric, p.type, p.monotonic, p.attributes, p.value) for p in received] == [
        ("s", "gauge", False, (*LABELS, ("quantile", "0.5")), 1.0),
        ("s", "gauge", False, (*LABELS, ("quantile", "0.99")), 4.0),
        ("s_count", "sum", False, LABELS, 10.0),
        ("s_sum", "sum", False, LABELS, 20.0),
    ]
    # Quantiles at the vendor's time; _count and _sum (the ledger's totals) at the poll time.
    assert [p.time_ns for p in received] == [30_000_000_000] * 2 + [40_000_000_000] * 2


def test_points_keep_queue_order_within_each_metric() -> None:
    samples = [Sample(G, (("n", str(i)),), float(i), timestamp=100.0 + i) for i in range(3)]
    samples += [Sample(C, (("n", str(i)),), float(i)) for i in range(2)]
    points, _ = new_points(samples, 200.0, 0.0, {})
    data = encode(points, build_resource({}, {}, "i", "v"), scope("v"))
    (metrics,) = [sm.metrics for rm in data.resource_metrics for sm in rm.scope_metrics]
    assert [m.name for m in metrics] == ["g", "c"]
    assert [dp.value for dp in metrics[0].data.data_points] == [0.0, 1.0, 2.0]


# --- resource ----------------------------------------------------------------------------


def test_resource_precedence_config_then_env_then_defaults() -> None:
    environ = {"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,team=a%20b,service.version=9, broken",
               "OTEL_SERVICE_NAME": "from-env"}
    resource = build_resource({"team": "config"}, environ, "host:9687", "0.1.0")
    assert dict(resource.attributes) == {
        "service.name": "from-env", "service.version": "9", "service.instance.id": "host:9687",
        "deployment.environment": "prod", "team": "config"}
    defaults = build_resource({}, {}, "host:9687", "0.1.0")
    assert dict(defaults.attributes) == {"service.name": "api-metrics-exporter", "service.version": "0.1.0",
                                         "service.instance.id": "host:9687"}
    assert parse_resource_attributes("a=1,=x,b") == {"a": "1"}


# --- settings: explicit > environment > default ----------------------------------------------


def test_defaults() -> None:
    settings = resolve(OtlpConfig(enabled=True), {})
    assert (settings.protocol, settings.endpoint, settings.timeout, settings.compression, settings.headers) == (
        "http/protobuf", "http://localhost:4318/v1/metrics", 10.0, "none", {})
    grpc_ = resolve(OtlpConfig(protocol="grpc"), {})
    assert (grpc_.endpoint, grpc_.insecure) == ("http://localhost:4317", True)


ENV = {
    "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "https://base:4317",
    "OTEL_EXPORTER_OTLP_HEADERS": "x-env=1,authorization=Basic%20ZW52",
    "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
    "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
    "OTEL_EXPORTER_OTLP_CERTIFICATE": "/env/ca.pem",
}


def test_environment_is_honoured() -> None:
    settings = resolve(OtlpConfig(enabled=True), ENV)
    assert (settings.protocol, settings.endpoint, settings.timeout, settings.compression, settings.insecure,
            settings.ca_file) == ("grpc", "https://base:4317", 2.5, "gzip", False, "/env/ca.pem")
    assert settings.headers == {"x-env": "1", "authorization": "Basic ZW52"}
    http = resolve(OtlpConfig(), {**ENV, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf"})
    assert http.endpoint == "https://base:4317/v1/metrics"  # the base endpoint gets the signal path
    signal = resolve(OtlpConfig(protocol="http/protobuf"),
                     {**ENV, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m:1/custom"})
    assert signal.endpoint == "http://m:1/custom"


def test_config_wins_over_environment(tmp_path: Path) -> None:
    config = OtlpConfig(protocol="http/protobuf", endpoint="http://collector:4318",
                        headers={"authorization": "Bearer c"}, timeout=1.0, compression="none")
    settings = resolve(config, ENV)
    assert (settings.protocol, settings.endpoint, settings.timeout, settings.compression) == (
        "http/protobuf", "http://collector:4318/v1/metrics", 1.0, "none")
    assert settings.headers == {"x-env": "1", "authorization": "Bearer c"}
    assert resolve(OtlpConfig(endpoint="http://c:4318/otlp/v1/metrics"), {}).endpoint == "http://c:4318/otlp/v1/metrics"


def test_bad_environment_values_fall_back_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    settings = resolve(OtlpConfig(), {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json", "OTEL_EXPORTER_OTLP_TIMEOUT": "soon",
                                      "OTEL_EXPORTER_OTLP_COMPRESSION": "brotli"})
    assert (settings.protocol, settings.timeout, settings.compression) == ("http/protobuf", 10.0, "none")
    assert "http/json" in caplog.text and "soon" in caplog.text and "brotli" in caplog.text


# --- config -------------------------------------------------------------------------------

# A config needs a source (an empty one is refused); the simulator serves this one.
A_SOURCE = '\n[simulator]\nenabled = true\n[[sources]]\ntype = "flux"\nname = "f"\n'


def test_otlp_section_with_header_files(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("Bearer from-file\n")
    settings = settings_from(tmp_path, f"""
        [otlp]
        enabled = true
        protocol = "grpc"
        endpoint = "collector:4317"
        timeout = "5s"
        resource_attributes = {{ "deployment.environment" = "prod" }}
        [otlp.headers]
        x-tenant = "t1"
        authorization_file = "{secret}"
    """ + A_SOURCE)
    otlp = settings.otlp
    assert (otlp.enabled, otlp.protocol, otlp.endpoint, otlp.timeout) == (True, "grpc", "collector:4317", 5.0)
    assert {k: v.get_secret_value() for k, v in otlp.headers.items()} == {
        "x-tenant": "t1", "authorization": "Bearer from-file"}
    assert "from-file" not in repr(settings)


def test_otlp_from_apimetrics_environment(tmp_path: Path) -> None:
    settings = settings_from(tmp_path, A_SOURCE, environ={"APIMETRICS_OTLP__ENABLED": "true",
                                                          "APIMETRICS_OTLP__ENDPOINT": "http://c:4318",
                                                          "APIMETRICS_OTLP__MAX_QUEUE_POINTS": "500"})
    assert (settings.otlp.enabled, settings.otlp.endpoint, settings.otlp.max_queue_points) == (
        True, "http://c:4318", 500)
    assert settings_from(tmp_path, A_SOURCE).otlp.enabled is False


@pytest.mark.parametrize(("body", "message"), [
    ('protocol = "http/json"', "otlp.protocol"),
    ('cert_file = "/etc/hostname"', "cert_file and key_file go together"),
    ('ca_file = "/no/such/ca.pem"', "otlp.ca_file"),
    ('endpoint = "collector:4318"\nprotocol = "http/protobuf"', "http:// or https://"),
    ('headers = { a = "1", a_file = "/etc/hostname" }', "give either a or a_file"),
    ('headers = { a_file = "/no/such/file" }', "otlp.headers.a_file: cannot read"),
    ("max_queue_points = 0", "otlp.max_queue_points"),
    ("colour = 1", "otlp.colour"),
    ('headers = { authorization = "Bearer a\\nb" }', "otlp.headers.authorization: the secret contains a line break"),
    ('headers = { "x y" = "1" }', "otlp.headers.x y: not a valid header name"),
])
def test_otlp_config_is_validated(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from(tmp_path, "[otlp]\n" + body + "\n")
    assert message in str(info.value)


def test_self_metrics_start_at_zero() -> None:
    metrics = ProcessMetrics(CollectorRegistry())
    metrics.add_otlp()
    text = {(s.name, tuple(s.labels.items())) for m in metrics.registry.collect() for s in m.samples}
    assert ("apimetrics_otlp_dropped_points_total", (("reason", "queue_full"),)) in text
    assert ("apimetrics_otlp_exported_points_total", (("result", "success"),)) in text

