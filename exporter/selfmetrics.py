"""The exporter's own metrics (`apimetrics_*`): every family declared once, in `SELF_METRICS`.

Like query-exporter's `builtin_metrics.py`, one table says each family's
name, type, help and labels. Two kinds of rows:

- **Per target** (`source`, `target` labels): most of them, ~25 series a
  target. They are plain numbers in the target's `TargetStats`, and
  `target_samples()` turns them into `Sample`s, which flow to the sinks
  through the runner's snapshots like vendor series: rendered when they
  change, never per scrape (50k of them took prometheus_client 330 ms a
  scrape).
- **Process-wide** (build info, HTTP retries, OTLP, reload…): few and
  changing anywhere, so they stay on a prometheus_client registry
  (`ProcessMetrics`), rendered per scrape.
"""

from __future__ import annotations

import bisect
import math
import platform
import time
from array import array
from dataclasses import dataclass, field
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from exporter import __version__
from exporter.errors import BASE_REASONS
from exporter.model import Family, HistogramValue, Kind, Labels, Sample, TargetKey


class Scope(StrEnum):
    TARGET = "target"  # built from a target's TargetStats into its snapshot
    PROCESS = "process"  # a prometheus_client metric on the process registry


@dataclass(frozen=True, slots=True)
class SelfMetric:
    family: Family
    scope: Scope
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


TARGET = ("source", "target")
POLL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
OTLP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
OTLP_RESULTS = ("success", "retryable", "rejected")
# queue_full: the oldest points, when the queue is full; rejected: a permanent
# error from the collector; invalid: points that could not be encoded;
# shutdown: still queued when the shutdown grace ran out.
OTLP_DROP_REASONS = ("queue_full", "rejected", "invalid", "shutdown")


def _row(name: str, kind: Kind, help_text: str, scope: Scope, labels: tuple[str, ...] = (),
         buckets: tuple[float, ...] = ()) -> SelfMetric:
    return SelfMetric(Family(name, kind, help_text), scope, labels, buckets)


G, C, H = Kind.GAUGE, Kind.COUNTER, Kind.HISTOGRAM
T, P = Scope.TARGET, Scope.PROCESS

# Counter names carry no `_total` (the sinks add it), as in model.Family.
TARGET_UP = _row("apimetrics_target_up", G, "1 if the last poll of the target succeeded, else 0.", T, TARGET)
POLL_DURATION = _row("apimetrics_poll_duration_seconds", H, "Duration of polls of a target, successful or not.", T,
                     TARGET, POLL_BUCKETS)
POLL_ERRORS = _row("apimetrics_poll_errors", C, "Failed polls of a target by reason.", T, (*TARGET, "reason"))
LAST_SUCCESS = _row("apimetrics_last_success_timestamp_seconds", G, "Unix time of the target's last successful poll.",
                    T, TARGET)
TARGET_SERIES = _row("apimetrics_target_series", G, "Series the target's current snapshot exports.", T, TARGET)
POLL_OVERRUNS = _row("apimetrics_poll_overruns",
                     C, "Polls skipped because the previous poll of the target was still running.", T, TARGET)
SNAPSHOTS_EXPIRED = _row("apimetrics_snapshots_expired", C,
                         "Snapshots dropped because no poll succeeded within max_staleness.", T, TARGET)
SERIES_DROPPED = _row("apimetrics_series_dropped", C,
                      "New series a target could not add because a max_series cap was reached.", T, TARGET)
LABELS_TRUNCATED = _row("apimetrics_label_values_truncated", C, "Label values cut to [limits] max_label_bytes.", T,
                        TARGET)
LEDGER_CORRECTIONS = _row("apimetrics_ledger_corrections", C,
                          "Downward revisions of vendor period counts held back so counters never decrease.", T,
                          TARGET)

SELF_METRICS: tuple[SelfMetric, ...] = (
    _row("apimetrics_build_info", G, "Build information; always 1.", P, ("version", "python_version")),
    TARGET_UP,
    POLL_DURATION,
    POLL_ERRORS,
    LAST_SUCCESS,
    TARGET_SERIES,
    POLL_OVERRUNS,
    _row("apimetrics_http_retries", C, "Upstream HTTP requests retried, by the reason of the failed attempt.", P,
         ("source", "reason")),
    SNAPSHOTS_EXPIRED,
    _row("apimetrics_discovery_errors", C,
         "Failed target discoveries (sources that list their targets upstream), by reason.", P, ("source", "reason")),
    _row("apimetrics_discovered_targets", G, "Targets the last successful discovery found.", P, ("source",)),
    _row("apimetrics_otlp_exported_points", C,
         "Points in OTLP export attempts by result: success; retryable (kept and retried, so counted again on each "
         "attempt); rejected (a permanent error: dropped).", P, ("result",)),
    _row("apimetrics_otlp_dropped_points", C, "Points the OTLP sink dropped, by reason.", P, ("reason",)),
    _row("apimetrics_otlp_export_duration_seconds", H,
         "Duration of OTLP export attempts (one batch, the SDK exporter's own retries included).", P, (),
         OTLP_BUCKETS),
    _row("apimetrics_otlp_queue_points", G, "Points waiting in the OTLP sink's queue, the batch being sent included.",
         P),
    SERIES_DROPPED,
    LABELS_TRUNCATED,
    LEDGER_CORRECTIONS,
    _row("apimetrics_config_last_reload_successful", G, "1 if the last config (re)load succeeded.", P),
    _row("apimetrics_config_last_reload_success_timestamp_seconds", G,
         "Unix time of the last successful config (re)load.", P),
    _row("apimetrics_shard_info", G, "This replica's shard; always 1.", P, ("index", "total")),
    # The HTTP server (exporter/web/gate.py).
    _row("apimetrics_http_connections_rejected", C,
         "HTTP connections the server closed on a limit: max_connections reached, a request head over "
         "the size limits or not complete within read_timeout, an answer not taken within write_timeout.", P,
         ("reason",)),
    _row("apimetrics_http_open_connections", G, "HTTP connections open now, TLS handshakes in progress included.",
         P),
    _row("apimetrics_state_save_failures", C,
         "Failed saves of a target's counter state to [state] dir, by source.", P, ("source",)),
)
_BY_NAME = {row.family.name: row for row in SELF_METRICS}


# --- per target -------------------------------------------------------------------------


@dataclass(slots=True)
class TargetStats:
    """The numbers behind one target's own series. `created` is when each
    counter started (the OpenMetrics `_created`), as prometheus_client sets it
    when a labelled child is made."""

    created: float = field(default_factory=time.time)
    up: bool = False
    last_success: float | None = None
    series: int = 0
    # reason → count, and reason → when its counter started; every known
    # reason from the start, at 0. Dicts of strings and numbers, and an
    # array for the buckets: the cyclic garbage collector does not walk them
    # (a list per reason was 12 more objects a target on every full
    # collection; benchmarks/scale.py).
    errors: dict[str, float] = field(default_factory=dict)
    errors_created: dict[str, float] = field(default_factory=dict)
    # Per-bucket (not cumulative) poll duration counts, one per POLL_BUCKETS
    # bound and +Inf, and their sum.
    durations: array[int] = field(default_factory=lambda: array("q", bytes(8 * (len(POLL_BUCKETS) + 1))))
    duration_sum: float = 0.0
    overruns: int = 0
    expired: int = 0
    series_dropped: int = 0
    labels_truncated: int = 0
    # The labels of the target's own series, made once and shared by every
    # poll's samples (keyed by reason, "" for the target's own): the
    # Prometheus sink keeps them to compare the next poll's samples with
    # (blocks.render_blocks), a copy a poll would double them.
    labels: dict[str, Labels] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def starting(cls, reasons: tuple[str, ...]) -> TargetStats:
        stats = cls()
        for reason in dict.fromkeys((*BASE_REASONS, *reasons)):
            stats.errors[reason] = 0.0
            stats.errors_created[reason] = stats.created
        return stats

    def count_error(self, reason: str) -> None:
        if reason not in self.errors:
            self.errors_created[reason] = time.time()
        self.errors[reason] = self.errors.get(reason, 0.0) + 1

    def observe_duration(self, seconds: float) -> None:
        # The first bucket whose bound is >= the value, as prometheus_client's Histogram.
        self.durations[bisect.bisect_left(POLL_BUCKETS, seconds)] += 1
        self.duration_sum += seconds


def target_samples(key: TargetKey, stats: TargetStats, corrections: tuple[int, float] | None = None) -> list[Sample]:
    """The target's own series, in the order prometheus_client wrote them.
    `corrections` is `(count, created)` of the target's period ledger, if it has one."""
    labels = _own_labels(key, stats)
    base = labels[""]
    created = stats.created
    samples = [Sample(TARGET_UP.family, base, 1.0 if stats.up else 0.0)]
    samples.append(Sample(POLL_DURATION.family, base, _histogram(stats), created=created))
    for reason, count in stats.errors.items():
        reason_labels = labels.get(reason) or labels.setdefault(reason, (*base, ("reason", reason)))
        samples.append(Sample(POLL_ERRORS.family, reason_labels, count, created=stats.errors_created[reason]))
    if stats.last_success is not None:
        samples.append(Sample(LAST_SUCCESS.family, base, stats.last_success))
    samples.append(Sample(TARGET_SERIES.family, base, float(stats.series)))
    for row, value in ((POLL_OVERRUNS, stats.overruns), (SNAPSHOTS_EXPIRED, stats.expired),
                       (SERIES_DROPPED, stats.series_dropped), (LABELS_TRUNCATED, stats.labels_truncated)):
        samples.append(Sample(row.family, base, float(value), created=created))
    if corrections is not None:
        samples.append(Sample(LEDGER_CORRECTIONS.family, base, float(corrections[0]), created=corrections[1]))
    return samples


def _own_labels(key: TargetKey, stats: TargetStats) -> dict[str, Labels]:
    """`stats.labels`, made anew if they are another target's."""
    base = stats.labels.get("")
    if base is None or base[0][1] != key.source or base[1][1] != key.target:
        stats.labels.clear()
        stats.labels[""] = (("source", key.source), ("target", key.target))
    return stats.labels


def _histogram(stats: TargetStats) -> HistogramValue:
    cumulative = 0.0
    buckets = []
    for bound, count in zip((*POLL_BUCKETS, math.inf), stats.durations, strict=True):
        cumulative += count
        buckets.append((float(bound), cumulative))
    return HistogramValue(tuple(buckets), stats.duration_sum)


# --- process-wide -----------------------------------------------------------------------


class ProcessMetrics:
    """The process-wide rows of `SELF_METRICS` on a registry of their own (so
    tests and several in-process apps never share global state)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.build_info = self._gauge("apimetrics_build_info")
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.http_retries = self._counter("apimetrics_http_retries")
        self.discovery_errors = self._counter("apimetrics_discovery_errors")
        self.discovered_targets = self._gauge("apimetrics_discovered_targets")
        self.otlp_exported_points = self._counter("apimetrics_otlp_exported_points")
        self.otlp_dropped_points = self._counter("apimetrics_otlp_dropped_points")
        self.otlp_export_duration = self._histogram("apimetrics_otlp_export_duration_seconds")
        self.otlp_queue_points = self._gauge("apimetrics_otlp_queue_points")
        self.reload_success = self._gauge("apimetrics_config_last_reload_successful")
        self.reload_timestamp = self._gauge("apimetrics_config_last_reload_success_timestamp_seconds")
        self.shard_info = self._gauge("apimetrics_shard_info")
        self.state_save_failures = self._counter("apimetrics_state_save_failures")

    def add_otlp(self) -> None:
        """Create the OTLP sink's series at zero."""
        for result in OTLP_RESULTS:
            self.otlp_exported_points.labels(result)
        for reason in OTLP_DROP_REASONS:
            self.otlp_dropped_points.labels(reason)

    def _gauge(self, name: str) -> Gauge:
        return process_gauge(name, self.registry)

    def _counter(self, name: str) -> Counter:
        return process_counter(name, self.registry)

    def _histogram(self, name: str) -> Histogram:
        row = _process_row(name, Kind.HISTOGRAM)
        return Histogram(name, row.family.help, row.labels, buckets=row.buckets, registry=self.registry)


def process_gauge(name: str, registry: CollectorRegistry) -> Gauge:
    """The process-wide gauge `name` of SELF_METRICS, on `registry`."""
    row = _process_row(name, Kind.GAUGE)
    return Gauge(name, row.family.help, row.labels, registry=registry)


def process_counter(name: str, registry: CollectorRegistry) -> Counter:
    """The process-wide counter `name` (without `_total`) of SELF_METRICS, on `registry`."""
    row = _process_row(name, Kind.COUNTER)
    return Counter(name, row.family.help, row.labels, registry=registry)


def _process_row(name: str, kind: Kind) -> SelfMetric:
    row = _BY_NAME[name]
    assert row.scope is Scope.PROCESS and row.family.kind is kind, name
    return row
