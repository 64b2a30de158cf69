"""The exporter's own metrics (`apimetrics_*`), declared once, here.

They live in their own `CollectorRegistry`, next to the store collector, so
that tests and several in-process apps never share global state.
"""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from exporter import __version__
from exporter.errors import BASE_REASONS

TARGET = ("source", "target")
OTLP_RESULTS = ("success", "retryable", "rejected")
# queue_full: the oldest points, when the queue is full; rejected: a permanent
# error from the collector; invalid: points that could not be encoded;
# shutdown: still queued when the shutdown grace ran out.
OTLP_DROP_REASONS = ("queue_full", "rejected", "invalid", "shutdown")


class SelfMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._reasons: dict[tuple[str, str], tuple[str, ...]] = {}
        self.build_info = Gauge(
            "apimetrics_build_info", "Build information; always 1.", ["version", "python_version"], registry=registry
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.target_up = Gauge(
            "apimetrics_target_up", "1 if the last poll of the target succeeded, else 0.", TARGET, registry=registry
        )
        self.poll_duration = Histogram(
            "apimetrics_poll_duration_seconds",
            "Duration of polls of a target, successful or not.",
            TARGET,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=registry,
        )
        self.poll_errors = Counter(
            "apimetrics_poll_errors_total", "Failed polls of a target by reason.", (*TARGET, "reason"), registry=registry
        )
        self.last_success = Gauge(
            "apimetrics_last_success_timestamp_seconds",
            "Unix time of the target's last successful poll.",
            TARGET,
            registry=registry,
        )
        self.target_series = Gauge(
            "apimetrics_target_series", "Series the target's current snapshot exports.", TARGET, registry=registry
        )
        self.poll_overruns = Counter(
            "apimetrics_poll_overruns_total",
            "Polls skipped because the previous poll of the target was still running.",
            TARGET,
            registry=registry,
        )
        self.http_retries = Counter(
            "apimetrics_http_retries_total", "Upstream HTTP requests retried, by the reason of the failed attempt.",
            ("source", "reason"), registry=registry,
        )
        self.snapshots_expired = Counter(
            "apimetrics_snapshots_expired_total",
            "Snapshots dropped because no poll succeeded within max_staleness.",
            TARGET,
            registry=registry,
        )

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
        self.series_dropped = Counter(
            "apimetrics_series_dropped",
            "New series a target could not add because a max_series cap was reached.",
            TARGET, registry=registry,
        )
        self.labels_truncated = Counter(
            "apimetrics_label_values_truncated",
            "Label values cut to [limits] max_label_bytes.", TARGET, registry=registry,
        )
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
        for metric in (self.target_up, self.target_series, self.poll_duration, self.poll_overruns,
                       self.snapshots_expired, self.last_success, self.series_dropped, self.labels_truncated):
            try:
                metric.remove(source, target)
            except KeyError:
                pass
        for reason in self._reasons.pop((source, target), ()):
            self.poll_errors.remove(source, target, reason)
