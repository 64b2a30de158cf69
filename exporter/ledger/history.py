"""Counters for a backfill: per-period vendor counts → a counter's value at each period end, from 0.

The live ledger (`period.py`) turns overlapping windows of per-period counts
into a counter that only grows, starting when the exporter first polled. A
backfill reads every period of `[since, until]` once, so its counter is the
running sum: 0 at `since`, then at each complete period's end the sum of
every period so far. `increase()` over a period then equals that period's
count. The same values are refused as in the live ledger (negative,
non-finite, non-numeric: skipped and logged); a period that ends after
`until` (still open) is left out.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping

from exporter.ledger.period import LedgerKey, _as_finite
from exporter.model import Family, Labels, Sample

log = logging.getLogger("exporter.ledger")

Points = list[tuple[float, float]]  # (time, counter value), oldest first


def running_totals(
    periods: Mapping[float, float], end_of: Callable[[float], float], since: float, until: float
) -> Points:
    """`[(since, 0), (start of the first period, 0), (its end, its count), …]` over the
    periods that start at or after `since` and end at or before `until`."""
    points: Points = [(since, 0.0)]
    total = 0.0
    rejected = 0
    for start in sorted(periods):
        end = end_of(start)
        if start < since or end > until:
            continue
        value = _as_finite(periods[start])
        if value is None or value < 0:
            rejected += 1
            continue
        if len(points) == 1 and start > since:
            # Still 0 where the first period starts: increase() over it is its count.
            points.append((start, 0.0))
        total = math.fsum([total, value])
        points.append((end, total))
    if rejected:
        log.warning("backfill: skipped %d invalid count(s) (negative, non-finite or non-numeric)", rejected)
    return points


def counter_history(
    values: Mapping[LedgerKey, Mapping[float, float]], end_of: Callable[[float], float], since: float, until: float
) -> dict[LedgerKey, Points]:
    """`running_totals` of every series of a ledger key → per-period counts mapping."""
    return {key: running_totals(periods, end_of, since, until) for key, periods in values.items()}


def history_samples(
    history: Mapping[LedgerKey, Points], families: Mapping[str, Family], base: Labels, since: float
) -> list[Sample]:
    """Counter samples, as `registry.counter_samples` makes them live (the
    same families and labels), each carrying its every point: the newest as
    the sample, the earlier ones as its history; `_created` is `since`."""
    samples = []
    for key, points in sorted(history.items()):
        family = families.get(key[0])
        if family is None:
            continue
        labels = base + tuple(zip(key[1::2], key[2::2], strict=True))
        (when, value), earlier = points[-1], tuple(points[:-1])
        samples.append(Sample(family, labels, value, timestamp=when, created=since, history=earlier))
    return samples
