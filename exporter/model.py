"""Neutral data: what a source returns, what the runner hands to every sink.

A source never builds Prometheus or OTLP objects; it returns `Sample`s that name
a `Family` (name, kind, help, unit) and carry labels, a value and, where the
vendor gives one, the vendor's own timestamp. After each poll (and whenever a
target's own state changes) the runner wraps them in a `Snapshot`; sinks
translate from there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple, Protocol

Labels = tuple[tuple[str, str], ...]
# One series: its family name and its labels, in the order the source gave them.
SeriesKey = tuple[str, Labels]


class TargetKey(NamedTuple):
    """One unit of polling: a source (by name) and one of its targets."""

    source: str
    target: str

    def __str__(self) -> str:
        return f"{self.source}/{self.target}"


class Kind(StrEnum):
    GAUGE = "gauge"
    COUNTER = "counter"
    HISTOGRAM = "histogram"
    SUMMARY = "summary"


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family. Counter names carry no `_total`: sinks add it, as
    prometheus_client's CounterMetricFamily does."""

    name: str
    kind: Kind
    help: str
    unit: str = ""

    @property
    def exposed_name(self) -> str:
        return f"{self.name}_total" if self.kind is Kind.COUNTER else self.name


@dataclass(frozen=True, slots=True)
class HistogramValue:
    """Cumulative buckets `(upper_bound, count)` ending with `+Inf`; `sum` is None
    when the vendor does not give one (we never invent it)."""

    buckets: tuple[tuple[float, float], ...]
    sum: float | None = None

    @property
    def count(self) -> float:
        return self.buckets[-1][1] if self.buckets else 0.0


@dataclass(frozen=True, slots=True)
class SummaryValue:
    quantiles: tuple[tuple[float, float], ...]
    count: float | None = None
    sum: float | None = None


Value = float | HistogramValue | SummaryValue


@dataclass(frozen=True, slots=True)
class Sample:
    """One series' current value. `timestamp` is the vendor's time of the point
    (seconds since the epoch) when the API gives one; `created` is the start of
    a cumulative series (counters, histograms, summaries)."""

    family: Family
    labels: Labels
    value: Value
    timestamp: float | None = None
    created: float | None = None
    # Earlier points of this series, `(vendor time, value)` oldest first, each
    # older than `timestamp`: a Pluto run's new steps, a k6 series' points, a
    # Flux metric's complete buckets, a backfilled counter at each period end.
    # /metrics shows only the newest value; the OTLP sink pushes each point it
    # has not sent before, and the OpenMetrics file writes every one.
    history: tuple[tuple[float, Value], ...] = ()


def labels(**pairs: str) -> Labels:
    """Labels from keyword arguments, in the order given."""
    return tuple(pairs.items())


class Change(StrEnum):
    """Why a snapshot was taken."""

    POLLED = "polled"  # a successful poll: `samples` are the target's vendor series now
    STATUS = "status"  # only the target's own series changed (added, failed, overrun, partial error)
    EXPIRED = "expired"  # no successful poll within max_staleness: its vendor series are gone
    REMOVED = "removed"  # the target left the config or its upstream list: everything of it goes
    HISTORY = "history"  # a backfill: `samples` hold a stretch of the target's past, every point new


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A target's state as handed to every sink.

    `own` always holds the target's own series (`apimetrics_target_up`…, built
    from its status); `samples` its vendor series, only after a successful
    poll. `version` grows with every snapshot the runner takes: a sink fed from
    several threads keeps the newest and ignores an older one arriving late."""

    key: TargetKey
    change: Change
    version: int
    own: tuple[Sample, ...] = ()
    samples: tuple[Sample, ...] = ()
    taken_at: float = 0.0
    max_staleness: float = math.inf


class Sink(Protocol):
    """Where snapshots go (exporter/sinks/): a sink knows its output format,
    never a vendor. `publish` runs on the event loop for most snapshots and in
    a worker thread for big ones, so it must be thread-safe, and it must not
    block on I/O: a sink that sends somewhere queues and sends from a task or
    thread of its own."""

    def publish(self, snapshot: Snapshot) -> None: ...
