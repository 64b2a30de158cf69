"""Neutral samples: what a source returns and what every sink consumes.

A source never builds Prometheus or OTLP objects; it returns `Sample`s that name
a `Family` (name, kind, help, unit) and carry labels, a value and, where the
vendor gives one, the vendor's own timestamp. Sinks translate from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

Labels = tuple[tuple[str, str], ...]


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
    # Earlier new points of this series since the last poll, `(time, value)`
    # oldest first (a Pluto run's every new step). /metrics shows only the
    # newest value; the OTLP sink pushes each of these as its own point.
    history: tuple[tuple[float, float], ...] = ()


def labels(**pairs: str) -> Labels:
    """Labels from keyword arguments, in the order given."""
    return tuple(pairs.items())
