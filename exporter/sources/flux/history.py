"""A Flux backfill: every complete bucket of a range, per metric, within the shared query budget.

Follows seed 003 and the two dialects (`dialects.py`). The range is asked in
pieces of at most CHUNK buckets (the documented `from`/`to`); the open-source
server only takes `since` back from its own now, so there one query per
aggregation covers the range and what lies after `until` is dropped. Every
request takes a token of the budget shared with the live polls' sources
(60 a minute by default), so a long range is slow but never throttled.

What each metric becomes (the same families and labels as a poll):
- gauges (`last`, `min`, `max`, `avg`) and a set's cardinality: a point per
  complete bucket, at the bucket's start (as a poll stamps them);
- a counter's per-bucket `sum`: a counter from 0 at `since`, at each bucket's
  end (`ledger.history`);
- a distribution: its min/max/avg gauges as above, and a summary point at
  each bucket's end: that bucket's quantiles, `_count` and `_sum` counted
  from 0 at `since`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from exporter.ledger.history import counter_history, history_samples
from exporter.ledger.registry import series_key
from exporter.model import Labels, Sample, SummaryValue, Value
from exporter.sources.flux.config import QUANTILES
from exporter.sources.flux.families import Families, Metric, Result
from exporter.sources.kit.periods import Grid

CHUNK = 1440  # buckets per request: a day of 1m buckets


def complete_buckets(result: Result, grid: Grid, since: float, until: float) -> Result:
    """Only the buckets that start at or after `since` and end by `until`."""
    return {labels: {start: values for start, values in buckets.items()
                     if start >= since and grid.shift(start, 1) <= until}
            for labels, buckets in result.items()}


def metric_history(metric: Metric, fams: Families, result: Result, base: Labels, since: float,
                   grid: Grid) -> list[Sample]:
    """Every point of one metric's complete buckets (see the module docstring)."""
    samples: list[Sample] = []
    for labels, buckets in sorted(result.items()):
        ordered = sorted(buckets.items())
        for aggregation, family in fams.gauges.items():
            divisor = 1.0 if metric.type == "set" else fams.divisor
            line = [(start, values[aggregation] / divisor) for start, values in ordered if aggregation in values]
            if line:
                samples.append(Sample(family, base + labels, line[-1][1], timestamp=line[-1][0],
                                      history=tuple(line[:-1])))
        if fams.counter is not None:
            periods = {series_key(fams.counter, labels): {start: values["sum"] / fams.divisor
                                                          for start, values in ordered if "sum" in values}}
            samples += history_samples(counter_history(periods, lambda start: grid.shift(start, 1), since, math.inf),
                                       {fams.counter.name: fams.counter}, base, since)
        if fams.summary is not None:
            samples += summary_history(metric, fams, ordered, base + labels, since, grid)
    return samples


def summary_history(metric: Metric, fams: Families, ordered: Sequence[tuple[float, Mapping[str, float]]],
                    labels: Labels, since: float, grid: Grid) -> list[Sample]:
    assert fams.summary is not None
    count = 0.0 if fams.count is not None else None
    total = 0.0 if fams.sum is not None else None
    line: list[tuple[float, Value]] = [(since, SummaryValue((), count, total))]
    for start, values in ordered:
        if count is not None and _usable(values.get("count")):
            count = math.fsum([count, values["count"]])
        if total is not None and _usable(values.get("sum")):
            total = math.fsum([total, values["sum"] / fams.divisor])
        quantiles = tuple((q, values[a] / fams.divisor) for a, q in QUANTILES.items()
                          if a in metric.aggregations and a in values)
        line.append((grid.shift(start, 1), SummaryValue(quantiles, count, total)))
    (when, value), earlier = line[-1], tuple(line[:-1])
    return [Sample(fams.summary, labels, value, timestamp=when, created=since, history=earlier)]


def _usable(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value >= 0
