"""The plan of a Flux poll: which metrics it queries, in which order, and how many requests it takes.

Follows seed 003 (List Metrics, Get Metric, "Aggregations by Type") and the
request counts of both dialects (dialects.py): the plan is what the source
declares to the shared rate budget, whose estimate of a cycle sets the poll
deadline and the staleness limit. Names: two Flux metrics whose families
would share a Prometheus name are never merged; discovered or derived
clashes are skipped with one ERROR log (configured ones are a config error).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from exporter.errors import PollError
from exporter.sources.flux.config import AGGREGATIONS, DEFAULT_AGGREGATIONS, FluxConfig, FluxMetricConfig
from exporter.sources.flux.dialects import ServerDialect
from exporter.sources.flux.families import OWN_NAMES, FreshAnswer, Metric, MetricKey, families_of
from exporter.sources.flux.notes import Notes
from exporter.sources.kit.periods import Grid


@dataclass
class Cycle:
    """One poll's bookkeeping: its window, deadline, request counts, queue and answers."""

    window: float
    deadline: float  # loop time at which the poll stops sending
    planned: int = 0
    completed: int = 0
    pending: deque[Metric] = field(default_factory=deque)
    fresh: dict[MetricKey, FreshAnswer] = field(default_factory=dict)
    errors: list[PollError] = field(default_factory=list)
    abort: PollError | None = None

    def replan(self, this_metric: int, dialect: ServerDialect) -> None:
        """While probing: what is left, counted in the dialect now known."""
        self.planned = self.completed + this_metric + sum(dialect.requests(m) for m in self.pending)

    def fail(self, error: PollError) -> bool:
        """Record a failed request; True when it ends the poll (a 401/403 would fail every other one too)."""
        if error.reason == "auth":
            self.abort = error
            return True
        self.errors.append(error)
        return False


def initial_requests(config: FluxConfig) -> int | None:
    """Requests of one cycle as far as the config tells, in the costlier
    (open-source) dialect; None when the metrics are discovered."""
    if config.metrics is None:
        return None
    total = 1 if any(m.type is None for m in config.metrics) else 0
    for entry in config.metrics:
        kind = entry.type or "distribution"  # unknown: the type with the most aggregations
        aggregations = tuple(entry.aggregations or DEFAULT_AGGREGATIONS[kind])
        total += len(Metric(entry.name, kind, aggregations).opensource_aggregations())
    return total


def discovered_metrics(listed: Iterable[tuple[str, str]], notes: Notes) -> list[Metric]:
    """Listed metrics with their type's default aggregations; unknown types are skipped (said once)."""
    first: dict[str, str] = {}
    for name, kind in listed:
        first.setdefault(name, kind)  # a name listed twice: its first entry
    return [Metric(name, kind, DEFAULT_AGGREGATIONS[kind]) for name, kind in first.items()
            if known_type(name, kind, notes)]


def known_type(name: str, kind: str, notes: Notes, hint: str = "") -> bool:
    """Whether `kind` is a type the docs name (gauge, counter, distribution,
    set); a server may say another one (e.g. "histogram"): that metric is
    skipped, said once."""
    if kind in AGGREGATIONS:
        return True
    notes.once(("type", name, kind), logging.WARNING, "%s: metric %r has unknown type %r; skipped%s",
               notes.source, name, kind, hint)
    return False


def configured_metrics(entries: list[FluxMetricConfig], types: Mapping[str, str], notes: Notes) -> list[Metric]:
    """Configured metrics of known type, with the aggregations their server type allows (the rest said once)."""
    candidates = []
    for entry in entries:
        kind = types.get(entry.name)
        if kind is None:
            continue  # its lookup failed and was counted
        if not known_type(entry.name, kind, notes, hint=f" (set its `type` in the config to ask it as one of "
                                                         f"{', '.join(AGGREGATIONS)})"):
            continue
        wanted = tuple(entry.aggregations or DEFAULT_AGGREGATIONS[kind])
        valid = tuple(a for a in wanted if a in AGGREGATIONS[kind])
        if valid != wanted:
            notes.once(("aggregations", entry.name, kind), logging.ERROR,
                       "%s: metric %r is a %s on the server; aggregation(s) %s are not valid for it and are "
                       "not asked (valid: %s)%s", notes.source, entry.name, kind,
                       ", ".join(a for a in wanted if a not in valid), ", ".join(AGGREGATIONS[kind]),
                       "; nothing is left to ask, so the metric is skipped" if not valid else "")
        if valid:
            candidates.append(Metric(entry.name, kind, valid, tuple(entry.group_by),
                                     tuple(sorted(entry.tags.items())), entry.unit))
    return candidates


def without_collisions(metrics: list[Metric], bucket: str, notes: Notes) -> list[Metric]:
    """Metrics whose exported names are claimed by another metric (or by our
    own families) are all skipped, with one ERROR log per clash."""
    owners: dict[str, list[Metric]] = {}
    for metric in metrics:
        for name in families_of(metric, bucket).exposed():
            owners.setdefault(name, []).append(metric)
    clashes: dict[tuple[str, ...], list[str]] = {}
    for name, claimants in sorted(owners.items()):
        if len(claimants) > 1 or name in OWN_NAMES:
            clashes.setdefault(tuple(sorted({m.name for m in claimants})), []).append(name)
    skipped: set[str] = set()
    for names, exported in clashes.items():
        skipped.update(names)
        own = [name for name in exported if name in OWN_NAMES]
        notes.once(("clash", names), logging.ERROR,
                   "%s: Flux metric(s) %s would be exported as %s%s; skipped, never merged",
                   notes.source, ", ".join(repr(n) for n in names), ", ".join(exported),
                   " (the exporter's own name)" if own else "")
    return [m for m in metrics if m.name not in skipped]


def queue_order(metrics: list[Metric], resume: str | None, probing: bool) -> deque[Metric]:
    """The order metrics are queried in: from where the last poll stopped, a cheap probe first."""
    pending = deque(metrics)
    if resume in {m.name for m in metrics}:
        # The previous poll was cut short: start where it stopped, so a too
        # short deadline does not starve the same metrics every time.
        while pending[0].name != resume:
            pending.rotate(-1)
    if probing:
        # Probe with a metric that needs one aggregation, if any: no extra request.
        single = next((m for m in metrics if len(m.aggregations) == 1), None)
        if single is not None:
            pending.remove(single)
            pending.appendleft(single)
    return pending


def window_start(grid: Grid, lookback: int, now: float, last_success_start: float | None,
                 staleness_limit: float) -> float:
    """`lookback` buckets before the previous successful poll's start (or now):
    every bucket since a metric was last read is read again."""
    anchor = now
    if last_success_start is not None:
        anchor = max(min(now, last_success_start), now - staleness_limit)
    return grid.shift(grid.floor(anchor), -lookback)


def duration(seconds: float) -> str:
    """`3m20s`, `45s`, `1h5m`."""
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return text or "0s"
