"""The exporter's own metrics (`apimetrics_*`), declared once, here.

They live in their own `CollectorRegistry`, so that tests and several
in-process apps never share global state.

The per-target ones (`target_up`, `poll_duration`, `poll_errors`…) are most of
them: ~50 series a target, 50k for 1,000 targets, which prometheus_client took
330 ms to render on every scrape. So each target's children live in a
registry of that target's own (`_PerTarget`), and the runner renders them
into store blocks when they change, like vendor series (`target_samples`);
only the few global ones are rendered per scrape.
"""

from __future__ import annotations

import platform
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from exporter import __version__
from exporter.errors import BASE_REASONS
from exporter.model import Family, HistogramValue, Kind, Sample

TARGET = ("source", "target")
OTLP_RESULTS = ("success", "retryable", "rejected")
# queue_full: the oldest points, when the queue is full; rejected: a permanent
# error from the collector; invalid: points that could not be encoded;
# shutdown: still queued when the shutdown grace ran out.
OTLP_DROP_REASONS = ("queue_full", "rejected", "invalid", "shutdown")


TargetKey = tuple[str, str]


class _PerTarget:
    """A metric labelled (source, target[, reason]) whose children live in each
    target's own registry; `labels()` and `remove()` as prometheus_client's."""

    def __init__(self, registry_of: Callable[[TargetKey], CollectorRegistry],
                 make: Callable[[CollectorRegistry], MetricWrapperBase]) -> None:
        self._registry_of = registry_of
        self._make = make
        self._metrics: dict[TargetKey, MetricWrapperBase] = {}

    def labels(self, source: str, target: str, *rest: str) -> MetricWrapperBase:
        metric = self._metrics.get((source, target))
        if metric is None:
            metric = self._metrics[(source, target)] = self._make(self._registry_of((source, target)))
        return metric.labels(source, target, *rest)

    def remove(self, source: str, target: str, *rest: str) -> None:
        metric = self._metrics.get((source, target))
        if metric is None:
            raise KeyError((source, target))
        metric.remove(source, target, *rest)

    def forget(self, key: TargetKey) -> None:
        self._metrics.pop(key, None)


class SelfMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._reasons: dict[tuple[str, str], tuple[str, ...]] = {}
        self._target_registries: dict[TargetKey, CollectorRegistry] = {}
        self._per_target_metrics: list[_PerTarget] = []
        self.build_info = Gauge(
            "apimetrics_build_info", "Build information; always 1.", ["version", "python_version"], registry=registry
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.target_up = self._per_target(lambda r: Gauge(
            "apimetrics_target_up", "1 if the last poll of the target succeeded, else 0.", TARGET, registry=r
        ))
        self.poll_duration = self._per_target(lambda r: Histogram(
            "apimetrics_poll_duration_seconds",
            "Duration of polls of a target, successful or not.",
            TARGET,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        ))
        self.poll_errors = self._per_target(lambda r: Counter(
            "apimetrics_poll_errors_total", "Failed polls of a target by reason.", (*TARGET, "reason"), registry=r
        ))
        self.last_success = self._per_target(lambda r: Gauge(
            "apimetrics_last_success_timestamp_seconds",
            "Unix time of the target's last successful poll.",
            TARGET,
            registry=r,
        ))
        self.target_series = self._per_target(lambda r: Gauge(
            "apimetrics_target_series", "Series the target's current snapshot exports.", TARGET, registry=r
        ))
        self.poll_overruns = self._per_target(lambda r: Counter(
            "apimetrics_poll_overruns_total",
            "Polls skipped because the previous poll of the target was still running.",
            TARGET,
            registry=r,
        ))
        self.http_retries = Counter(
            "apimetrics_http_retries_total", "Upstream HTTP requests retried, by the reason of the failed attempt.",
            ("source", "reason"), registry=registry,
        )
        self.snapshots_expired = self._per_target(lambda r: Counter(
            "apimetrics_snapshots_expired_total",
            "Snapshots dropped because no poll succeeded within max_staleness.",
            TARGET,
            registry=r,
        ))

        self.discovery_errors = Counter(
            "apimetrics_discovery_errors_total",
            "Failed target discoveries (sources that list their targets upstream), by reason.",
            ("source", "reason"), registry=registry,
        )
        self.discovered_targets = Gauge(
            "apimetrics_discovered_targets", "Targets the last successful discovery found.", ("source",),
            registry=registry,
        )

        # The OTLP push sink (exporter/sinks/otlp.py); label values are created
        # by `add_otlp()` when the sink is enabled.
        self.otlp_exported_points = Counter(
            "apimetrics_otlp_exported_points",
            "Points in OTLP export attempts by result: success; retryable (kept and retried, so counted "
            "again on each attempt); rejected (a permanent error: dropped).",
            ("result",), registry=registry,
        )
        self.otlp_dropped_points = Counter(
            "apimetrics_otlp_dropped_points", "Points the OTLP sink dropped, by reason.", ("reason",),
            registry=registry,
        )
        self.otlp_export_duration = Histogram(
            "apimetrics_otlp_export_duration_seconds",
            "Duration of OTLP export attempts (one batch, the SDK exporter's own retries included).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=registry,
        )
        self.otlp_queue_points = Gauge(
            "apimetrics_otlp_queue_points", "Points waiting in the OTLP sink's queue, the batch being sent included.",
            registry=registry,
        )
        self.series_dropped = self._per_target(lambda r: Counter(
            "apimetrics_series_dropped",
            "New series a target could not add because a max_series cap was reached.",
            TARGET, registry=r,
        ))
        self.labels_truncated = self._per_target(lambda r: Counter(
            "apimetrics_label_values_truncated",
            "Label values cut to [limits] max_label_bytes.", TARGET, registry=r,
        ))
        self.reload_success = Gauge(
            "apimetrics_config_last_reload_successful", "1 if the last config (re)load succeeded.", registry=registry,
        )
        self.reload_timestamp = Gauge(
            "apimetrics_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config (re)load.", registry=registry,
        )
        self.shard_info = Gauge(
            "apimetrics_shard_info", "This replica's shard; always 1.", ("index", "total"), registry=registry,
        )

    def add_otlp(self) -> None:
        """Create the OTLP sink's series at zero."""
        for result in OTLP_RESULTS:
            self.otlp_exported_points.labels(result)
        for reason in OTLP_DROP_REASONS:
            self.otlp_dropped_points.labels(reason)

    def add_target(self, source: str, target: str, reasons: tuple[str, ...] = ()) -> None:
        """Create the target's series at zero so rate() works from the first scrape."""
        self.target_up.labels(source, target).set(0)
        self.target_series.labels(source, target).set(0)
        self.poll_duration.labels(source, target)
        self.poll_overruns.labels(source, target)
        self.snapshots_expired.labels(source, target)
        self.series_dropped.labels(source, target)
        self.labels_truncated.labels(source, target)
        self._reasons[(source, target)] = tuple(dict.fromkeys((*BASE_REASONS, *reasons)))
        for reason in self._reasons[(source, target)]:
            self.poll_errors.labels(source, target, reason)

    def count_error(self, source: str, target: str, reason: str) -> None:
        known = self._reasons.setdefault((source, target), ())
        if reason not in known:
            self._reasons[(source, target)] = (*known, reason)
        self.poll_errors.labels(source, target, reason).inc()

    def remove_target(self, source: str, target: str) -> None:
        key = (source, target)
        for metric in self._per_target_metrics:
            metric.forget(key)
        self._target_registries.pop(key, None)
        self._reasons.pop(key, None)

    def target_samples(self, source: str, target: str) -> list[Sample]:
        """The target's own series, as neutral samples for the exposition."""
        registry = self._target_registries.get((source, target))
        return [] if registry is None else registry_samples(registry)

    def _per_target(self, make: Callable[[CollectorRegistry], MetricWrapperBase]) -> _PerTarget:
        metric = _PerTarget(self._registry_of, make)
        self._per_target_metrics.append(metric)
        return metric

    def _registry_of(self, key: TargetKey) -> CollectorRegistry:
        registry = self._target_registries.get(key)
        if registry is None:
            registry = self._target_registries[key] = CollectorRegistry(auto_describe=False)
        return registry


_KINDS = {"gauge": Kind.GAUGE, "counter": Kind.COUNTER, "histogram": Kind.HISTOGRAM}


def registry_samples(registry: CollectorRegistry) -> list[Sample]:
    """A registry's gauges, counters and histograms as neutral samples (the
    exposition renders them byte for byte as prometheus_client does)."""
    out: list[Sample] = []
    for metric in registry.collect():
        family = _family(metric.name, _KINDS[metric.type], metric.documentation, metric.unit)
        series: dict[tuple[tuple[str, str], ...], dict[str, object]] = {}
        for sample in metric.samples:
            labels = dict(sample.labels)
            le = labels.pop("le", None)
            entry = series.setdefault(tuple(labels.items()), {"buckets": []})
            suffix = sample.name[len(metric.name):]
            if suffix == "_bucket":
                entry["buckets"].append((float(le or "nan"), sample.value))  # type: ignore[union-attr]
            else:
                entry[suffix] = sample.value
        for labels, entry in series.items():
            created = entry.get("_created")
            if family.kind is Kind.HISTOGRAM:
                value: object = HistogramValue(tuple(entry["buckets"]), entry.get("_sum"))  # type: ignore[arg-type]
            else:
                value = entry["_total" if family.kind is Kind.COUNTER else ""]
            out.append(Sample(family, labels, value, created=created))  # type: ignore[arg-type]
    return out


_FAMILIES: dict[tuple[str, Kind, str, str], Family] = {}


def _family(name: str, kind: Kind, help_text: str, unit: str) -> Family:
    key = (name, kind, help_text, unit)
    family = _FAMILIES.get(key)
    if family is None:
        family = _FAMILIES[key] = Family(name, kind, help_text, unit)
    return family
