"""What one Flux metric exports, and its samples from the newest answer and the period ledger.

Follows seed 003's four metric types and their aggregations: a gauge's `last`
(and min/max/avg), a counter's per-bucket `sum` (a Prometheus counter through
the period ledger), a distribution's quantiles, `count` and `sum` (a summary)
plus min/max/avg gauges, a set's `count` (a cardinality gauge). Values are
read from the latest *complete* bucket; a gauge whose latest complete bucket
is empty keeps the newest earlier value in the window.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from exporter.ledger.registry import series_key
from exporter.model import Family, Kind, Labels, Sample, SummaryValue, Value
from exporter.sources.flux.config import QUANTILES, UNITS
from exporter.sources.kit.naming import metric_name, with_unit
from exporter.sources.kit.periods import Grid

API_INFO = Family("flux_api_info", Kind.GAUGE,
                  "The dialect the Flux server speaks (documented or opensource); always 1.")
PLANNED = Family("flux_queries_planned", Kind.GAUGE,
                 "Requests (list, lookups, queries) the last poll planned against the rate budget.")
COMPLETED = Family("flux_queries_completed", Kind.GAUGE,
                   "Requests of the last poll that were answered (successfully or not).")
OWN_NAMES = frozenset({API_INFO.name, PLANNED.name, COMPLETED.name})

# {group labels: {bucket start: {aggregation: value}}}
Result = dict[Labels, dict[float, dict[str, float]]]
MetricKey = tuple[str, str]  # (name, type): a metric whose type changed is another metric
LedgerSeries = dict[tuple[str, ...], dict[float, float]]  # ledger key → {bucket start: value}


@dataclass(frozen=True)
class Metric:
    """One Flux metric as this poll queries it."""

    name: str
    type: str
    aggregations: tuple[str, ...]
    group_by: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    unit: str | None = None

    @property
    def key(self) -> MetricKey:
        return (self.name, self.type)

    def opensource_aggregations(self) -> tuple[str, ...]:
        """One request each; a distribution's `count` rides on every point."""
        aggs = self.aggregations
        if self.type == "distribution" and "count" in aggs and len(aggs) > 1:
            return tuple(a for a in aggs if a != "count")
        return aggs


@dataclass
class FreshAnswer:
    """The newest answer to one metric's query, kept while it is younger than the staleness limit."""

    queried_at: float
    current: float  # start of the bucket that was open at query time
    result: Result


@dataclass(frozen=True)
class Families:
    """The families one metric exports."""

    gauges: dict[str, Family]  # aggregation → gauge (a set's `count` → cardinality)
    counter: Family | None = None
    summary: Family | None = None
    count: Family | None = None  # ledger keys of the summary's _count / _sum
    sum: Family | None = None
    divisor: float = 1.0

    def exposed(self) -> set[str]:
        """Every name these families show on /metrics, suffixes included (what may collide)."""
        names = {family.name for family in self.gauges.values()}
        if self.counter is not None:
            names |= {f"{self.counter.name}_total", f"{self.counter.name}_created"}
        if self.summary is not None:
            names |= {self.summary.name, *(f"{self.summary.name}_{s}" for s in ("count", "sum", "created"))}
        return names


def families_of(metric: Metric, bucket: str) -> Families:
    """The families of `metric`; units are never guessed from names, only `unit` in config names one."""
    unit, divisor = UNITS[metric.unit] if metric.unit else ("", 1.0)
    base = f"flux_{metric_name(metric.name)}"
    if unit and base.endswith(f"_{unit}"):
        base = base[: -len(unit) - 1]

    def named(suffix: str) -> str:
        return with_unit(base + suffix, unit)

    what = f"Flux {metric.type} {metric.name!r}"
    latest = f"over the latest complete {bucket} bucket"
    aggs = metric.aggregations
    gauges: dict[str, Family] = {}
    if metric.type == "set":
        if "count" in aggs:
            gauges["count"] = Family(f"{base}_cardinality", Kind.GAUGE, f"{what}: distinct values {latest}.")
        return Families(gauges)
    if metric.type == "counter":
        counter = Family(named(""), Kind.COUNTER, f"{what}: sum of every bucket (period ledger).", unit)
        return Families({}, counter=counter if "sum" in aggs else None, divisor=divisor)
    for agg in ("last", "min", "max", "avg"):
        if agg in aggs:
            suffix = "" if agg == "last" else f"_{agg}"
            gauges[agg] = Family(named(suffix), Kind.GAUGE, f"{what}: {agg} {latest}.", unit)
    if metric.type == "gauge":
        return Families(gauges, divisor=divisor)
    summary = count = total = None
    if any(a in aggs for a in (*QUANTILES, "count", "sum")):
        summary = Family(named(""), Kind.SUMMARY,
                         f"{what}: quantiles {latest}; _count and _sum of every bucket (period ledger).", unit)
        # Ledger keys only; `#` never occurs in a sanitised name, so these cannot
        # meet the counter of a metric called `<name>.count`.
        if "count" in aggs:
            count = Family(f"{summary.name}#count", Kind.COUNTER, "")
        if "sum" in aggs:
            total = Family(f"{summary.name}#sum", Kind.COUNTER, "")
    return Families(gauges, summary=summary, count=count, sum=total, divisor=divisor)


def ledger_series(fresh: Mapping[MetricKey, FreshAnswer], families: Mapping[MetricKey, Families]) -> LedgerSeries:
    """Per-bucket values of every counter, summary `_count` and `_sum` answered this poll, for the ledger."""
    observed: LedgerSeries = {}
    for key, answer in fresh.items():
        fams = families[key]
        for labels, buckets in answer.result.items():
            for family, aggregation, divisor in ((fams.counter, "sum", fams.divisor), (fams.count, "count", 1.0),
                                                 (fams.sum, "sum", fams.divisor)):
                if family is not None:
                    observed[series_key(family, labels)] = {
                        start: values[aggregation] / divisor
                        for start, values in buckets.items() if aggregation in values}
    return observed


def metric_samples(metric: Metric, fams: Families, fresh: FreshAnswer | None, base: Labels,
                   totals: dict[tuple[str, ...], float], created: float, grid: Grid) -> list[Sample]:
    """Gauges and summaries of one metric from its newest answer and the ledger."""
    samples: list[Sample] = []
    result = fresh.result if fresh is not None else {}
    groups = set(result)
    # A summary's _count/_sum outlive the answer: its groups come from the ledger too.
    for family in (fams.count, fams.sum):
        if family is not None:
            groups |= {tuple(zip(k[1::2], k[2::2], strict=True)) for k in totals if k[0] == family.name}
    for labels in sorted(groups):
        buckets = result.get(labels, {})
        last: dict[str, float] = {}
        last_start = None
        if fresh is not None:
            last_start = grid.shift(fresh.current, -1)
            last = buckets.get(last_start, {})
        full = base + labels
        if metric.type == "gauge":
            for aggregation, family in fams.gauges.items():
                newest = latest(buckets, aggregation, fresh.current) if fresh is not None else None
                if newest is not None:
                    samples.append(Sample(family, full, newest[1] / fams.divisor, timestamp=newest[0],
                                          history=earlier(buckets, aggregation, newest[0], fams.divisor)))
        elif metric.type == "set":
            if "count" in fams.gauges and last_start is not None and labels in result:
                samples.append(Sample(fams.gauges["count"], full, last.get("count", 0.0), timestamp=last_start,
                                      history=earlier(buckets, "count", last_start)))
        elif metric.type == "distribution":
            samples += distribution_samples(metric, fams, full, buckets, last_start,
                                            totals.get(series_key(fams.count, labels), 0.0) if fams.count else None,
                                            totals.get(series_key(fams.sum, labels), 0.0) if fams.sum else None,
                                            created)
    return samples


def distribution_samples(metric: Metric, fams: Families, labels: Labels, buckets: dict[float, dict[str, float]],
                         last_start: float | None, count: float | None, total: float | None,
                         created: float) -> list[Sample]:
    """A distribution's min/max/avg gauges and its summary: quantiles of the
    latest complete bucket (earlier complete buckets as history), `_count` and
    `_sum` from the ledger."""
    samples: list[Sample] = []
    last = buckets.get(last_start, {}) if last_start is not None else {}
    for aggregation, family in fams.gauges.items():
        if aggregation in last and last_start is not None:
            samples.append(Sample(family, labels, last[aggregation] / fams.divisor, timestamp=last_start,
                                  history=earlier(buckets, aggregation, last_start, fams.divisor)))
    if fams.summary is None:
        return samples
    asked = [(a, q) for a, q in QUANTILES.items() if a in metric.aggregations]

    def quantiles(values: dict[str, float]) -> tuple[tuple[float, float], ...]:
        return tuple((q, values[a] / fams.divisor) for a, q in asked if a in values)

    now = quantiles(last)
    if now or count is not None or total is not None:
        history: tuple[tuple[float, Value], ...] = ()
        if now and last_start is not None:
            history = tuple((start, SummaryValue(quantiles(buckets[start]))) for start in sorted(buckets)
                            if start < last_start and quantiles(buckets[start]))
        samples.append(Sample(fams.summary, labels, SummaryValue(now, count, total), created=created,
                              timestamp=last_start if now else None, history=history))
    return samples


def own_samples(base: Labels, dialect: str | None, planned: int, completed: int) -> list[Sample]:
    """The source's own families: the dialect (once known) and the last poll's request counts."""
    samples: list[Sample] = []
    if dialect is not None:
        samples.append(Sample(API_INFO, (*base, ("dialect", dialect)), 1.0))
    samples.append(Sample(PLANNED, base, float(planned)))
    samples.append(Sample(COMPLETED, base, float(completed)))
    return samples


def earlier(buckets: dict[float, dict[str, float]], aggregation: str, before: float,
            divisor: float = 1.0) -> tuple[tuple[float, Value], ...]:
    """`(start, value)` of every bucket before `before` that has `aggregation`,
    oldest first: the history push sinks receive of a bucket's value (each
    complete bucket once, at its own time)."""
    return tuple((start, buckets[start][aggregation] / divisor) for start in sorted(buckets)
                 if start < before and aggregation in buckets[start])


def latest(buckets: dict[float, dict[str, float]], aggregation: str, before: float) -> tuple[float, float] | None:
    """(start, value) of the newest complete bucket that has `aggregation`."""
    for start in sorted(buckets, reverse=True):
        if start < before and aggregation in buckets[start]:
            return start, buckets[start][aggregation]
    return None


def merge(into: Result, other: Result) -> None:
    """Add `other`'s values to `into`, bucket by bucket (open-source answers come one aggregation each)."""
    for labels, buckets in other.items():
        mine = into.setdefault(labels, {})
        for start, values in buckets.items():
            mine.setdefault(start, {}).update(values)
