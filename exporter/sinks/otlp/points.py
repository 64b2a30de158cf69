"""OTLP encoding, pure: neutral samples → points → the SDK's `MetricsData`, and the name mapping.

No I/O here (the transport is `otlp_transport.py`, the queue `otlp.py`), so
every rule is tested on its own, as opentelemetry-python keeps
`encode_metrics` apart from its exporters.

Names. `translate(family)` is the one place a family becomes OTLP metrics. It
is built so that the Collector's standard Prometheus translation (the
`prometheus` / `prometheusremotewrite` exporters and Prometheus' own OTLP
receiver: unit suffix from the unit, `_total` for monotonic sums, `_ratio` for
gauges of unit `1`) gives back exactly the name we expose on `/metrics`:

    bird_flow_runs_total  (counter)   → `bird_flow_runs`, unit `1`, monotonic cumulative Sum
    k6_vus                (gauge)     → `k6_vus`, no unit, Gauge
    k6_http_req_duration_seconds      → `k6_http_req_duration`, unit `s`, Gauge
    k6_data_received_bytes            → `k6_data_received`, unit `By`, Gauge
    apimetrics_poll_duration_seconds (histogram) → `apimetrics_poll_duration`, unit `s`, Histogram
    flux_x (summary) → Gauge `flux_x` with a `quantile` attribute, and
                       non-monotonic Sums `flux_x_count` (unit `1`) and `flux_x_sum` (no unit)

Types. Gauges → Gauge points at the vendor's time (`Sample.timestamp`, else the
poll time); counters → monotonic cumulative Sums starting at `Sample.created`;
histograms → cumulative Histograms with explicit bounds; summaries → the SDK
has no Summary data class (checked in the tests), so gauges per quantile plus
`_count`/`_sum` Sums. Those Sums are *not* monotonic: the Collector would
append `_total` to a monotonic one (`flux_x_count_total`), which is not our
name, and a summary's `_sum` may decrease anyway.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from exporter.model import Family, HistogramValue, Kind, Labels, Sample, SummaryValue, Value

log = logging.getLogger(__name__)

SERVICE_NAME = "api-metrics-exporter"

# Prometheus base-unit words → UCUM: the inverse of the Collector's unit table
# (`unitMap` of its Prometheus translator), so the Collector turns each back.
UCUM_BY_WORD = {
    "days": "d", "hours": "h", "minutes": "min", "seconds": "s", "milliseconds": "ms",
    "microseconds": "us", "nanoseconds": "ns",
    "bytes": "By", "kibibytes": "KiBy", "mebibytes": "MiBy", "gibibytes": "GiBy", "tibibytes": "TiBy",
    "kilobytes": "KBy", "megabytes": "MBy", "gigabytes": "GBy", "terabytes": "TBy",
    "meters": "m", "volts": "V", "amperes": "A", "joules": "J", "watts": "W", "grams": "g",
    "celsius": "Cel", "hertz": "Hz", "percent": "%",
}
DIMENSIONLESS = "1"


class OtlpType(StrEnum):
    GAUGE = "gauge"
    SUM = "sum"
    HISTOGRAM = "histogram"


@dataclass(frozen=True, slots=True)
class OtlpMetric:
    name: str
    unit: str
    type: OtlpType
    monotonic: bool = False
    description: str = ""


@dataclass(frozen=True, slots=True)
class Translation:
    """The OTLP metrics of one family: `value` always; `count` and `sum` for summaries."""

    value: OtlpMetric
    count: OtlpMetric | None = None
    sum: OtlpMetric | None = None

    def metrics(self) -> tuple[OtlpMetric, ...]:
        return tuple(m for m in (self.value, self.count, self.sum) if m is not None)


def _split_unit(name: str, gauge: bool) -> tuple[str, str | None]:
    """`x_seconds` → (`x`, `s`); (name, None) when no unit suffix can be moved
    into the unit. The Collector appends a unit word only when the name has no
    such token yet, so a suffix is moved only if the rest does not repeat it;
    `_ratio` is moved for gauges only, the one type it is re-added to."""
    head, sep, last = name.rpartition("_")
    if not sep or not head:
        return name, None
    tokens = head.split("_")
    if last in UCUM_BY_WORD and last not in tokens:
        return head, UCUM_BY_WORD[last]
    if gauge and last == "ratio" and "ratio" not in tokens:
        return head, DIMENSIONLESS
    return name, None


@functools.lru_cache(maxsize=4096)
def translate(family: Family) -> Translation:
    """The OTLP name, unit and type(s) of a family (see the module docstring).

    Limits, inherent to the Collector's translation (it splits names into
    tokens at `_`): a name with a leading, trailing or doubled `_`, or a
    counter whose name has a `total` token before the end, cannot come back
    unchanged. Our families have none of these (tested over every family)."""
    help_text = family.help
    if family.kind is Kind.GAUGE:
        name, unit = _split_unit(family.name, gauge=True)
        return Translation(OtlpMetric(name, unit or "", OtlpType.GAUGE, description=help_text))
    if family.kind is Kind.COUNTER:
        name, unit = _split_unit(family.name, gauge=False)
        return Translation(OtlpMetric(name, unit or DIMENSIONLESS, OtlpType.SUM, True, help_text))
    if family.kind is Kind.HISTOGRAM:
        name, unit = _split_unit(family.name, gauge=False)
        return Translation(OtlpMetric(name, unit or DIMENSIONLESS, OtlpType.HISTOGRAM, description=help_text))
    name, unit = _split_unit(family.name, gauge=True)
    return Translation(
        OtlpMetric(name, unit or "", OtlpType.GAUGE, description=help_text),
        count=OtlpMetric(f"{family.name}_count", DIMENSIONLESS, OtlpType.SUM, False, f"{help_text} (count)"),
        # No unit on `x_seconds_sum`: with unit `s` the Collector's UTF-8
        # strategy (which appends a unit word unless the name *ends* with it)
        # would make it `x_seconds_sum_seconds`. The quantiles carry the unit.
        sum=OtlpMetric(f"{family.name}_sum", "", OtlpType.SUM, False, f"{help_text} (sum)"),
    )


# --- points -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistogramPoint:
    """Per-bucket counts (OTLP), from the cumulative ones of `HistogramValue`."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    count: int
    sum: float | None


@dataclass(frozen=True, slots=True)
class Point:
    """One OTLP data point waiting to be sent: the unit of the sink's queue."""

    metric: OtlpMetric
    attributes: Labels
    time_ns: int
    start_ns: int
    value: float | HistogramPoint


SeriesKey = tuple[str, Labels]


def to_ns(seconds: float) -> int:
    return round(seconds * 1e9)


def histogram_point(value: HistogramValue) -> HistogramPoint:
    """OTLP counts are per bucket and integral: cumulative counts are rounded,
    differenced and clamped at 0 (a vendor's non-monotonic buckets cannot make
    a negative count); the `+Inf` bucket is implicit in OTLP's bounds."""
    bounds: list[float] = []
    counts: list[int] = []
    previous = 0
    for bound, cumulative in value.buckets:
        current = max(previous, round(cumulative))
        counts.append(current - previous)
        previous = current
        if not (math.isinf(bound) and bound > 0):
            bounds.append(float(bound))
    if len(counts) == len(bounds):  # no +Inf bucket given: OTLP needs one more count
        counts.append(0)
    return HistogramPoint(tuple(bounds), tuple(counts), sum(counts), value.sum)


def format_quantile(quantile: float) -> str:
    """As the Prometheus exposition writes it (`0.5`, `0.99`)."""
    return repr(float(quantile))


def value_points(
    translation: Translation, kind: Kind, labels: Labels, time_ns: int, start_ns: int, value: Value
) -> list[Point]:
    """The points of one value of a series at one time: one for a gauge,
    counter or histogram; a summary's quantiles, then its `_count` and `_sum`."""
    if kind is Kind.GAUGE:
        return [Point(translation.value, labels, time_ns, 0, float(value))]  # type: ignore[arg-type]
    if kind is Kind.COUNTER:
        return [Point(translation.value, labels, time_ns, start_ns, float(value))]  # type: ignore[arg-type]
    if kind is Kind.HISTOGRAM:
        assert isinstance(value, HistogramValue)
        return [Point(translation.value, labels, time_ns, start_ns, histogram_point(value))]
    assert isinstance(value, SummaryValue) and translation.count and translation.sum
    points = [Point(translation.value, (*labels, ("quantile", format_quantile(quantile))), time_ns, 0, float(number))
              for quantile, number in value.quantiles]
    if value.count is not None:
        points.append(Point(translation.count, labels, time_ns, start_ns, float(value.count)))
    if value.sum is not None:
        points.append(Point(translation.sum, labels, time_ns, start_ns, float(value.sum)))
    return points


def sample_points(
    sample: Sample, poll_time: float, default_start: float, after_ns: int = -1, history: bool = True
) -> list[Point]:
    """The data points of one sample, oldest first: its history (unless
    `history` is False), then its own value. Vendor-stamped points at or before
    `after_ns` (the newest one already sent of this series) are left out.

    A summary's `_count` and `_sum` are always sent, at the poll time: they
    are cumulative totals of the period ledger (Flux), not values of the
    vendor bucket its quantiles (stamped with the bucket's time) come from."""
    translation = translate(sample.family)
    kind = sample.family.kind
    labels = sample.labels
    start_ns = to_ns(sample.created if sample.created is not None else default_start)
    points: list[Point] = []
    if history:
        for when, earlier in sample.history:
            ns = to_ns(when)
            if ns > after_ns:
                points.extend(value_points(translation, kind, labels, ns, start_ns, earlier))
                after_ns = ns
    value = sample.value
    if sample.timestamp is None:
        return points + value_points(translation, kind, labels, to_ns(poll_time), start_ns, value)
    time_ns = to_ns(sample.timestamp)
    if kind is Kind.SUMMARY:
        assert isinstance(value, SummaryValue)
        if time_ns > after_ns:
            points += value_points(translation, kind, labels, time_ns, start_ns, SummaryValue(value.quantiles))
        totals = SummaryValue((), value.count, value.sum)
        return points + value_points(translation, kind, labels, to_ns(poll_time), start_ns, totals)
    if time_ns <= after_ns:
        return points
    return points + value_points(translation, kind, labels, time_ns, start_ns, value)


def vendor_times(sample: Sample) -> list[int]:
    """The vendor times (ns) of a sample's points: its history and its timestamp."""
    times = [to_ns(when) for when, _ in sample.history]
    if sample.timestamp is not None:
        times.append(to_ns(sample.timestamp))
    return times


def new_points(
    samples: Iterable[Sample], poll_time: float, default_start: float, sent: Mapping[SeriesKey, int] | None
) -> tuple[list[Point], dict[SeriesKey, int]]:
    """The points of one snapshot that were not sent before, and the newest
    vendor time per series to remember for the next snapshot of that target.

    A point stamped with the vendor's time is sent once: a finished k6 run
    serves the same newest point on every poll, and sending it again would be
    a duplicate. Points stamped with the poll time are new on every poll.
    `sent` None means nothing is known of the target (its first poll, and no
    state dir told what an earlier process sent): then only the newest point
    of each series goes, not the history the vendor still serves. A series the
    target did not have before (a new k6 URL, a new Pluto logName) sends all
    its points."""
    points: list[Point] = []
    newest: dict[SeriesKey, int] = {}
    known = sent if sent is not None else {}
    for sample in samples:
        key = (sample.family.name, sample.labels)
        after = known.get(key, -1)
        points.extend(sample_points(sample, poll_time, default_start, after, history=sent is not None))
        times = vendor_times(sample)
        if times:
            newest[key] = max(after, *times)
    return points, newest


# --- MetricsData ------------------------------------------------------------------------


def scope(version: str) -> InstrumentationScope:
    return InstrumentationScope(SERVICE_NAME, version)


def encode(points: Sequence[Point], resource: Resource, instrumentation_scope: InstrumentationScope) -> MetricsData:
    """One `MetricsData` of the points: one Metric per OTLP metric, in order of
    first appearance, its points in queue order. The sink sends
    `otlp_wire.WireEncoder`'s bytes instead (10x faster); this SDK path is
    their reference in tests/sinks/test_otlp_wire.py."""
    groups: dict[OtlpMetric, list[Point]] = {}
    for point in points:
        groups.setdefault(point.metric, []).append(point)
    metrics = [_metric(metric, group) for metric, group in groups.items()]
    return MetricsData([ResourceMetrics(resource, [ScopeMetrics(instrumentation_scope, metrics, "")], "")])


def _metric(metric: OtlpMetric, points: list[Point]) -> Metric:
    if metric.type is OtlpType.HISTOGRAM:
        data: Gauge | Sum | Histogram = Histogram(
            [_histogram_data_point(p) for p in points], AggregationTemporality.CUMULATIVE
        )
    else:
        numbers = [
            NumberDataPoint(attributes=dict(p.attributes), start_time_unix_nano=p.start_ns,
                            time_unix_nano=p.time_ns, value=p.value)  # type: ignore[arg-type]
            for p in points
        ]
        if metric.type is OtlpType.GAUGE:
            data = Gauge(numbers)
        else:
            data = Sum(numbers, AggregationTemporality.CUMULATIVE, metric.monotonic)
    return Metric(metric.name, metric.description, metric.unit, data)


def _histogram_data_point(point: Point) -> HistogramDataPoint:
    value = point.value
    assert isinstance(value, HistogramPoint)
    # `sum`, `min` and `max` are optional in OTLP. The SDK data class types
    # them as numbers, but its encoder leaves a None field unset on the wire,
    # which is exactly "unknown": the Collector then writes no `_sum` series,
    # as our /metrics shows none. We never invent a sum, nor min and max.
    return HistogramDataPoint(
        attributes=dict(point.attributes),
        start_time_unix_nano=point.start_ns,
        time_unix_nano=point.time_ns,
        count=value.count,
        sum=value.sum,  # type: ignore[arg-type]
        bucket_counts=list(value.counts),
        explicit_bounds=list(value.bounds),
        min=None,  # type: ignore[arg-type]
        max=None,  # type: ignore[arg-type]
    )


# --- resource ---------------------------------------------------------------------------


def parse_resource_attributes(text: str) -> dict[str, str]:
    """`OTEL_RESOURCE_ATTRIBUTES`: `key=value` pairs separated by commas, values
    percent-decoded; a malformed pair is skipped with a warning (never fatal)."""
    attributes: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            log.warning("OTEL_RESOURCE_ATTRIBUTES: ignoring %r (expected key=value)", item.strip())
            continue
        attributes[key.strip()] = unquote(value.strip())
    return attributes


def build_resource(
    configured: Mapping[str, str], environ: Mapping[str, str], instance_id: str, version: str
) -> Resource:
    """Defaults, then `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME`, then
    the configured `resource_attributes`: explicit config wins over the
    environment, which wins over the defaults."""
    attributes = {"service.name": SERVICE_NAME, "service.version": version, "service.instance.id": instance_id}
    attributes.update(parse_resource_attributes(environ.get("OTEL_RESOURCE_ATTRIBUTES", "")))
    if environ.get("OTEL_SERVICE_NAME", "").strip():
        attributes["service.name"] = environ["OTEL_SERVICE_NAME"].strip()
    attributes.update(configured)
    return Resource(attributes)
