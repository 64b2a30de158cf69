"""Flux metrics (seed 003; the open-source server's dialect from API_NOTES.md).

One target per source: the Flux account its API key belongs to. A poll calls

    GET /api/v1/metrics                       (discovery: every poll when `metrics` is absent)
    GET /api/v1/metrics/{name}                (type of a configured metric the list lacks; once)
    GET /api/v1/metrics/{name}/query?from=…&to=…&interval=1m&aggregation=p50,p95,…[&group_by=tags.k][&tags[k]=v]

and exports, per Flux metric type (`<n>` the sanitised name, labels `account`
plus the `group_by` tags):

    flux_users_online{account="prod",region="eu"} 231.4                         gauge: `last`
    flux_users_online_max{account="prod",region="eu"} 250.1                      …and min/max/avg when asked
    flux_api_requests_total{account="prod",endpoint="/users"} 123456             counter: per-bucket `sum`, period ledger
    flux_api_response_time_seconds{account="prod",quantile="0.95"} 0.239         distribution: a summary…
    flux_api_response_time_seconds_count{account="prod"} 98765                   …its _count/_sum through the ledger
    flux_api_response_time_min_seconds{account="prod"} 0.012                     …plus min/max/avg gauges
    flux_daily_active_users_cardinality{account="prod",plan="pro"} 17            set: `count`
    flux_api_info{account="prod",dialect="documented"} 1
    flux_queries_planned{account="prod"} 7
    flux_queries_completed{account="prod"} 7

Gauges, quantiles, min/max/avg and cardinalities come from the latest
*complete* bucket (the one before the bucket `now` is in); a gauge whose latest
complete bucket is empty keeps the newest earlier value in the window (a gauge
holds its value), a distribution's quantiles and min/max/avg are then absent
(nothing was observed) and a set's cardinality is 0. Counters and a
distribution's `_count`/`_sum` add every bucket, the open one included, through
the period ledger.

**Dialects.** The first query of a source is a probe: the documented form
(`from`/`to`/`interval`) with a single aggregation (the open-source server
takes one per request, so a multi-aggregation probe could fail for a reason
that says nothing about the dialect). `{"data": {"series"|"groups": …}}` means
documented; `{"data": [...]}` means open source, and the probe is asked again
as `since`/`bucket` (the server ignored `from`/`to`/`interval`). When the
metric list came first and had the open-source shape (`{"metrics": [...]}`),
the probe is sent in that form instead. Until a probe succeeds the metrics are
queried one at a time, each a probe; afterwards up to four at once. The
dialect is logged once and exported as `flux_api_info`; an answer in the other
shape later is `invalid_response`. In the open-source dialect each
aggregation is its own request (a distribution's `count` comes free with every
point), `group_by` is ignored by the server (logged once; the series then
carry no group labels), and `since` reaches one minute further back than the
window so clock skew cannot cut the first bucket we keep.

**Budget.** Every request (list, lookups, queries, retries) takes a token of
the budget shared by all sources using the same key on the same server
(`exporter.sources.kit.ratelimit`), `rate_limit.queries` per `rate_limit.per`. A cycle that
needs more than fits in one interval takes longer: it is logged as a warning
at start (configured metrics) or when discovered, `flux_queries_planned` and
`flux_queries_completed` show each cycle, and unless `timeout` /
`max_staleness` are set, the poll deadline becomes `interval + 2 × cycle` and
the staleness limit `3 × (interval + cycle)` (before the first list of a
discovering source, the deadline is max(interval, 10 min)). The poll stops
sending shortly before its deadline and returns what it has: metrics not
reached keep their previous values, are counted under `timeout` and come
first in the next poll. A 429
stops every holder of the budget for its `Retry-After` (a full window without
one), and the request is retried by the HTTP client; a 429 it gives up on is
counted under `rate_limited` for that metric.

**Errors.** One metric's failure (404, 400, invalid answer, 429) is counted
under its reason and the others go on; a 401/403 fails the poll, and so does
a poll in which no metric could be read. The window of each poll reaches back
to the start of the previous successful poll (at most `max_staleness` back),
plus `lookback` buckets, so a cycle longer than `lookback` buckets loses no
bucket from the counters.

**Names.** Two Flux metrics whose families would share a Prometheus name
(`api.response_time` and `api-response_time`, or `a` with `_min` and a gauge
`a.min`) are never merged: in a configured list, equal sanitised names are a
config error; otherwise (discovered metrics, derived names) both are skipped
with one ERROR log. A tag key that sanitises to `account` or `quantile`
becomes `tag_account` / `tag_quantile`.

Readings of the doc: `group_by` with several keys is sent comma-separated
(`group_by=tags.a,tags.b`, like `aggregation`) and a group's name is read as
the values joined by ","; a point holds `value` for a single aggregation and
one field per aggregation otherwise; units are never guessed from names (nor
taken from the open-source list's free-text `unit`): `unit = "ms"` in config
divides by 1000 and names the family `_seconds`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, field_validator, model_validator

from exporter.config.source import SourceConfigBase
from exporter.config.types import Duration, StrictModel
from exporter.errors import InvalidResponse, PollError, UpstreamHTTPError, reason_for_status
from exporter.ledger.registry import counter_samples, series_key
from exporter.model import Family, Kind, Labels, Sample, SummaryValue
from exporter.sources.base import Source, SourceContext, Target
from exporter.sources.kit.naming import label_name, metric_name, with_unit
from exporter.sources.kit.payloads import json_or_none
from exporter.sources.kit.periods import DAY, HOUR, MINUTE, Grid, rfc3339
from exporter.sources.kit.ratelimit import BUDGETS, RateBudget
from exporter.sources.kit.timeparse import parse_timestamp

log = logging.getLogger(__name__)

DOCUMENTED, OPENSOURCE = "documented", "opensource"
MetricType = Literal["gauge", "counter", "distribution", "set"]
# The doc's "Aggregations by Type".
AGGREGATIONS: dict[str, tuple[str, ...]] = {
    "gauge": ("last", "avg", "min", "max"),
    "counter": ("sum", "rate"),
    "distribution": ("avg", "sum", "min", "max", "p50", "p90", "p95", "p99", "count"),
    "set": ("count",),
}
DEFAULT_AGGREGATIONS: dict[str, tuple[str, ...]] = {
    "gauge": ("last",),
    "counter": ("sum",),
    "distribution": ("p50", "p90", "p95", "p99", "count", "sum", "min", "max", "avg"),
    "set": ("count",),
}
EXPORTABLE = {a for aggs in AGGREGATIONS.values() for a in aggs} - {"rate"}
QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
# unit → (family suffix, divisor)
UNITS = {"ms": ("seconds", 1000.0), "s": ("seconds", 1.0), "bytes": ("bytes", 1.0)}
GRIDS = {"1m": MINUTE, "5m": Grid("5m", seconds=300), "1h": HOUR, "1d": DAY}
OPENSOURCE_BUCKETS = {"1m": "1 minute", "5m": "5 minutes", "1h": "1 hour", "1d": "1 day"}
RESERVED_LABELS = ("account", "quantile")
CONCURRENCY = 4
FIRST_DISCOVERY_TIMEOUT = 600.0
LIST_PATH = "/api/v1/metrics"

API_INFO = Family("flux_api_info", Kind.GAUGE, "The dialect the Flux server speaks (documented or opensource); always 1.")
PLANNED = Family("flux_queries_planned", Kind.GAUGE,
                 "Requests (list, lookups, queries) the last poll planned against the rate budget.")
COMPLETED = Family("flux_queries_completed", Kind.GAUGE,
                   "Requests of the last poll that were answered (successfully or not).")
OWN_NAMES = frozenset({API_INFO.name, PLANNED.name, COMPLETED.name})


# --- config -----------------------------------------------------------------------


class FluxMetricConfig(StrictModel):
    """One `[[sources.metrics]]` entry (or just its name)."""

    name: str = Field(min_length=1)
    type: MetricType | None = Field(default=None, description="skips the type lookup; the server's type otherwise")
    aggregations: list[str] | None = Field(default=None, min_length=1)
    group_by: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    unit: Literal["ms", "s", "bytes"] | None = None

    @field_validator("aggregations")
    @classmethod
    def _known(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if "rate" in value:
            raise ValueError("'rate' is not exported: use rate() on the counter flux_<name>_total")
        unknown = [a for a in value if a not in EXPORTABLE]
        if unknown:
            raise ValueError(f"unknown aggregation(s) {', '.join(unknown)}; valid: {', '.join(sorted(EXPORTABLE))}")
        return list(dict.fromkeys(value))

    @field_validator("group_by")
    @classmethod
    def _tag_keys(cls, value: list[str]) -> list[str]:
        keys = [key.removeprefix("tags.") for key in value]
        if any(not key.strip() for key in keys):
            raise ValueError("group_by keys must not be empty")
        labels: dict[str, str] = {}
        for key in dict.fromkeys(keys):
            label = tag_label(key)
            if label in labels:
                raise ValueError(f"group_by keys {labels[label]!r} and {key!r} both become label {label!r}")
            labels[label] = key
        return list(labels.values())

    @model_validator(mode="after")
    def _fits_type(self) -> FluxMetricConfig:
        if self.type is not None and self.aggregations is not None:
            invalid = [a for a in self.aggregations if a not in AGGREGATIONS[self.type]]
            if invalid:
                raise ValueError(f"{', '.join(invalid)} not valid for a {self.type} "
                                 f"(valid: {', '.join(a for a in AGGREGATIONS[self.type] if a != 'rate')})")
        if self.type == "set" and self.unit is not None:
            raise ValueError("a set's cardinality has no unit")
        return self


class RateLimitConfig(StrictModel):
    queries: int = Field(default=60, ge=1, le=1_000_000)
    per: Duration = 60.0


class FluxConfig(SourceConfigBase):
    """`type = "flux"`: one target, the account of the API key."""

    type: Literal["flux"]
    api_key: SecretStr | None = None
    account: str | None = Field(default=None, min_length=1, max_length=128,
                                description="the `account` label and target id; default: the source name")
    bucket: Literal["1m", "5m", "1h", "1d"] = "1m"
    lookback: int = Field(default=5, ge=1, le=10_000, description="complete buckets re-read by every poll")
    metrics: list[FluxMetricConfig] | None = Field(default=None, min_length=1)
    rate_limit: RateLimitConfig = RateLimitConfig()

    @field_validator("metrics", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _distinct_names(self) -> FluxConfig:
        seen: dict[str, tuple[int, str]] = {}
        for index, metric in enumerate(self.metrics or []):
            exported = f"flux_{metric_name(metric.name)}"
            if exported in seen:
                first, other = seen[exported]
                if other == metric.name:
                    raise ValueError(f"metrics[{index}]: {metric.name!r} is listed twice (also metrics[{first}])")
                raise ValueError(f"metrics[{first}] {other!r} and metrics[{index}] {metric.name!r} would both be "
                                 f"exported as {exported}; list only one of them")
            seen[exported] = (index, metric.name)
        return self

    def target_ids(self) -> list[str]:
        return [self.account or self.name]


def tag_label(key: str) -> str:
    label = label_name(key)
    return f"tag_{label}" if label in RESERVED_LABELS else label


# --- what a poll works with -------------------------------------------------------------


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
    def key(self) -> tuple[str, str]:
        return (self.name, self.type)

    def opensource_aggregations(self) -> tuple[str, ...]:
        """One request each; a distribution's `count` rides on every point."""
        aggs = self.aggregations
        if self.type == "distribution" and "count" in aggs and len(aggs) > 1:
            return tuple(a for a in aggs if a != "count")
        return aggs


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
        names = {family.name for family in self.gauges.values()}
        if self.counter is not None:
            names |= {f"{self.counter.name}_total", f"{self.counter.name}_created"}
        if self.summary is not None:
            names |= {self.summary.name, *(f"{self.summary.name}_{s}" for s in ("count", "sum", "created"))}
        return names


def families_of(metric: Metric, bucket: str) -> Families:
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


# {group labels: {bucket start: {aggregation: value}}}
Result = dict[Labels, dict[float, dict[str, float]]]


@dataclass
class _Fresh:
    queried_at: float
    current: float  # start of the bucket that was open at query time
    result: Result


@dataclass
class _Cycle:
    window: float
    deadline: float  # loop time at which the poll stops sending
    planned: int = 0
    completed: int = 0
    pending: deque[Metric] = field(default_factory=deque)
    fresh: dict[tuple[str, str], _Fresh] = field(default_factory=dict)
    errors: list[PollError] = field(default_factory=list)
    abort: PollError | None = None


# --- the source ---------------------------------------------------------------------------


class FluxSource(Source[FluxConfig]):
    type: ClassVar[str] = "flux"
    config_model: ClassVar[type[SourceConfigBase]] = FluxConfig
    default_base_url: ClassVar[str] = "https://flux.brainzlab.ai"
    simulator_prefix: ClassVar[str] = "flux"
    auth_scheme: ClassVar[str] = "Bearer"

    def __init__(self, config: FluxConfig, context: SourceContext) -> None:
        super().__init__(config, context)
        self.grid = GRIDS[config.bucket]
        budget = self.http.budget
        assert budget is not None  # rate_budget() gives every Flux client one
        self.budget = budget
        # Seconds the budget needs for one cycle of every source sharing it;
        # None until the plan is known (a discovering source before its first list).
        self._cycle: float | None = None
        self.dialect: str | None = None
        self._guess = DOCUMENTED
        self._types: dict[str, str] = {m.name: m.type for m in config.metrics or [] if m.type is not None}
        self._results: dict[tuple[str, str], _Fresh] = {}
        self._last_success_start: float | None = None
        self._said: set[object] = set()
        self._warned: int | None = None
        self._resume: str | None = None
        self._adopt(self._initial_requests())

    # --- budget and deadlines ----------------------------------------------------------

    @classmethod
    def rate_budget(cls, config: FluxConfig, base_url: str) -> RateBudget:
        """Every attempt of every request takes a token of the budget shared by
        all sources with the same key on the same server; a 429 holds it."""
        secret = config.secret()
        return BUDGETS.get(secret.get_secret_value() if secret is not None else "", base_url.rstrip("/"),
                           config.rate_limit.queries, config.rate_limit.per)

    @property
    def poll_timeout(self) -> float:
        """`timeout` if set; else interval + 2 × cycle (max(interval, 10 min)
        before the first list of a discovering source)."""
        if self.config.timeout is not None:
            return self.config.timeout
        if self._cycle is None:
            return max(self.config.interval, FIRST_DISCOVERY_TIMEOUT)
        return self.config.interval + 2 * self._cycle

    @property
    def staleness_limit(self) -> float:
        """`max_staleness` if set; else 3 × (interval + cycle)."""
        if self.config.max_staleness is not None or self._cycle is None:
            return self.config.staleness_limit
        return 3 * (self.config.interval + self._cycle)

    def _initial_requests(self) -> int | None:
        """Requests of one cycle as far as the config tells, in the costlier
        (open-source) dialect; None when the metrics are discovered."""
        if self.config.metrics is None:
            return None
        total = 1 if any(m.type is None for m in self.config.metrics) else 0
        for entry in self.config.metrics:
            kind = entry.type or "distribution"  # unknown: the type with the most aggregations
            aggregations = tuple(entry.aggregations or DEFAULT_AGGREGATIONS[kind])
            total += len(Metric(entry.name, kind, aggregations).opensource_aggregations())
        return total

    def _adopt(self, requests: int | None, metrics: int | None = None) -> None:
        """Declare the plan on the budget, which sets the cycle (and so the
        deadline and staleness limit); warn when a cycle outlasts the interval."""
        interval = self.config.interval
        if requests is None:
            return
        self.budget.declare(self.name, requests)
        cycle = self._cycle = self.budget.estimate()
        # Warn again only when the cycle's length (in budget windows) changes.
        windows = math.ceil(self.budget.demand() / self.budget.limit)
        if cycle > interval and windows != self._warned:
            self._warned = windows
            what = f"{metrics} metric(s) need" if metrics is not None else "the configured metrics need up to"
            sharers = self.budget.sharers()
            log.warning(
                "%s: %s %d requests a cycle; at %d per %gs (%s) a cycle takes at least %s, longer than the %gs "
                "interval: polls run back to back and the ticks in between are skipped "
                "(apimetrics_poll_overruns_total). Poll deadline %s, max_staleness %s. "
                "Set interval to %s or more to run on a steady beat.",
                self.name, what, requests, self.budget.limit, self.budget.per,
                f"a budget shared with {sharers - 1} other source(s), {self.budget.demand()} requests in all"
                if sharers > 1 else "this source's budget",
                duration(cycle), interval, duration(self.poll_timeout), duration(self.staleness_limit),
                duration(cycle), extra={"source": self.name})

    # --- poll ------------------------------------------------------------------------------------

    async def poll(self, target: Target) -> list[Sample]:
        loop = asyncio.get_running_loop()
        timeout = self.poll_timeout
        now = self.context.clock()
        cycle = _Cycle(window=self._window_start(now), deadline=loop.time() + timeout - min(10.0, 0.1 * timeout))
        metrics = await self._plan(cycle)
        if cycle.abort is not None:
            raise cycle.abort
        cycle.planned += sum(self._requests(m) for m in metrics)
        self._adopt(cycle.planned, len(metrics))
        cycle.pending = deque(metrics)
        if self._resume in {m.name for m in metrics}:
            # The previous poll was cut short: start where it stopped, so a too
            # short deadline does not starve the same metrics every time.
            while cycle.pending[0].name != self._resume:
                cycle.pending.rotate(-1)
        if self.dialect is None:
            # Probe with a metric that needs one aggregation, if any: no extra request.
            single = next((m for m in metrics if len(m.aggregations) == 1), None)
            if single is not None:
                cycle.pending.remove(single)
                cycle.pending.appendleft(single)
        await self._run(cycle)
        if cycle.abort is not None:
            raise cycle.abort
        self._adopt(cycle.planned, len(metrics))  # now in the dialect the server speaks
        unreached = [m.name for m in cycle.pending]
        self._resume = unreached[0] if unreached else None
        if unreached:
            cycle.errors.append(PollError(
                "timeout", f"{len(unreached)} of {len(metrics)} metric(s) not queried before the poll deadline "
                           f"({duration(timeout)}); first: {unreached[0]!r}. They keep their previous values"))
        samples = self._samples(target, metrics, cycle)
        if cycle.errors and not cycle.fresh:  # nothing could be read: the target is down
            for error in cycle.errors[1:]:
                self.report(target, error)
            raise cycle.errors[0]
        for error in cycle.errors:
            self.report(target, error)
        self._last_success_start = now
        return samples

    def _window_start(self, now: float) -> float:
        """`lookback` buckets before the previous successful poll's start (or now):
        every bucket since a metric was last read is read again."""
        anchor = now
        if self._last_success_start is not None:
            anchor = max(min(now, self._last_success_start), now - self.staleness_limit)
        return self.grid.shift(self.grid.floor(anchor), -self.config.lookback)

    def _requests(self, metric: Metric) -> int:
        if (self.dialect or self._guess) == DOCUMENTED:
            return 1
        return len(metric.opensource_aggregations())

    async def _run(self, cycle: _Cycle) -> None:
        """Probe one metric at a time until the dialect is known, then run
        CONCURRENCY workers; stop at the deadline, leaving `cycle.pending`."""
        in_flight: dict[int, Metric] = {}

        async def worker(slot: int, probing: bool = False) -> None:
            while cycle.pending and cycle.abort is None and not (probing and self.dialect is not None):
                metric = in_flight[slot] = cycle.pending.popleft()
                await self._one(metric, cycle)
                del in_flight[slot]

        try:
            async with asyncio.timeout_at(cycle.deadline):
                await worker(0, probing=True)
                if cycle.pending and cycle.abort is None:
                    await asyncio.gather(*(worker(slot) for slot in range(min(CONCURRENCY, len(cycle.pending)))))
        except TimeoutError:
            cycle.pending.extendleft(reversed(list(in_flight.values())))

    async def _one(self, metric: Metric, cycle: _Cycle) -> None:
        now = self.context.clock()
        try:
            result = await self._query(metric, cycle, now)
        except PollError as exc:
            if exc.reason == "auth":
                cycle.abort = exc
            else:
                cycle.errors.append(exc)
            return
        cycle.fresh[metric.key] = _Fresh(now, self.grid.floor(now), result)

    async def _get(self, path: str, params: list[tuple[str, str]] | None, cycle: _Cycle) -> Any:
        try:
            payload = await self.http.get_json(path, params=params, classify=classify_error)
        except PollError:
            cycle.completed += 1
            raise
        cycle.completed += 1
        return payload

    # --- plan: which metrics, of which type ------------------------------------------------

    async def _plan(self, cycle: _Cycle) -> list[Metric]:
        if self.config.metrics is None:
            cycle.planned += 1
            listed = await self._list(cycle)  # a failed discovery fails the poll
            first: dict[str, str] = {}
            for name, kind in listed:
                first.setdefault(name, kind)  # a name listed twice: its first entry
            candidates = []
            for name, kind in first.items():
                if kind in AGGREGATIONS:
                    candidates.append(Metric(name, kind, DEFAULT_AGGREGATIONS[kind]))
                else:
                    self._once(("type", name, kind), logging.WARNING,
                               "%s: metric %r has unknown type %r; skipped", self.name, name, kind)
            return self._without_collisions(candidates)
        await self._learn_types(cycle)
        candidates = []
        for entry in self.config.metrics:
            kind = self._types.get(entry.name)
            if kind is None:
                continue  # its lookup failed and was counted
            wanted = tuple(entry.aggregations or DEFAULT_AGGREGATIONS[kind])
            valid = tuple(a for a in wanted if a in AGGREGATIONS[kind])
            if valid != wanted:
                self._once(("aggregations", entry.name, kind), logging.ERROR,
                           "%s: metric %r is a %s on the server; aggregation(s) %s are not valid for it and are "
                           "not asked (valid: %s)%s", self.name, entry.name, kind,
                           ", ".join(a for a in wanted if a not in valid), ", ".join(AGGREGATIONS[kind]),
                           "; nothing is left to ask, so the metric is skipped" if not valid else "")
            if valid:
                candidates.append(Metric(entry.name, kind, valid, tuple(entry.group_by),
                                         tuple(sorted(entry.tags.items())), entry.unit))
        return self._without_collisions(candidates)

    async def _learn_types(self, cycle: _Cycle) -> None:
        """Types of configured metrics that do not say: from one list, then one
        definition each for those the list lacks (404 → not_found). Kept for
        the source's life: a Flux metric's type does not change."""
        assert self.config.metrics is not None
        unknown = [m.name for m in self.config.metrics if m.name not in self._types]
        if not unknown:
            return
        cycle.planned += 1
        try:
            listed = dict(await self._list(cycle))
        except PollError as exc:
            if exc.reason == "auth":
                cycle.abort = exc
                return
            cycle.errors.append(exc)
            listed = {}
        for name in unknown:
            if name in listed:
                self._types[name] = listed[name]
                continue
            cycle.planned += 1
            try:
                payload = await self._get(f"{LIST_PATH}/{quote(name, safe='')}", None, cycle)
                self._types[name] = definition_type(payload, name)
            except PollError as exc:
                if exc.reason == "auth":
                    cycle.abort = exc
                    return
                cycle.errors.append(exc)

    async def _list(self, cycle: _Cycle) -> list[tuple[str, str]]:
        payload = await self._get(LIST_PATH, None, cycle)
        items = None
        if isinstance(payload, dict):
            if isinstance(payload.get("data"), list):
                items = payload["data"]
            elif isinstance(payload.get("metrics"), list):
                items = payload["metrics"]
                if self.dialect is None:
                    self._guess = OPENSOURCE
        if items is None:
            raise InvalidResponse(f"GET {LIST_PATH}: neither a `data` nor a `metrics` list")
        listed = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
                raise InvalidResponse(f"GET {LIST_PATH}: a metric without a name: {str(item)[:100]}")
            listed.append((item["name"], str(item.get("type"))))
        return listed

    def _without_collisions(self, metrics: list[Metric]) -> list[Metric]:
        """Metrics whose exported names are claimed by another metric (or by our
        own families) are all skipped, with one ERROR log per clash."""
        owners: dict[str, list[Metric]] = {}
        for metric in metrics:
            for name in families_of(metric, self.config.bucket).exposed():
                owners.setdefault(name, []).append(metric)
        clashes: dict[tuple[str, ...], list[str]] = {}
        for name, claimants in sorted(owners.items()):
            if len(claimants) > 1 or name in OWN_NAMES:
                clashes.setdefault(tuple(sorted({m.name for m in claimants})), []).append(name)
        skipped: set[str] = set()
        for names, exported in clashes.items():
            skipped.update(names)
            own = [name for name in exported if name in OWN_NAMES]
            self._once(("clash", names), logging.ERROR,
                       "%s: Flux metric(s) %s would be exported as %s%s; skipped, never merged",
                       self.name, ", ".join(repr(n) for n in names), ", ".join(exported),
                       " (the exporter's own name)" if own else "")
        return [m for m in metrics if m.name not in skipped]

    # --- queries -------------------------------------------------------------------------------

    async def _query(self, metric: Metric, cycle: _Cycle, now: float) -> Result:
        path = f"{LIST_PATH}/{quote(metric.name, safe='')}/query"
        if (self.dialect or self._guess) == DOCUMENTED:
            probe = self.dialect is None and len(metric.aggregations) > 1
            asked = metric.aggregations[:1] if probe else metric.aggregations
            payload = await self._get(path, self._documented_params(metric, asked, cycle.window, now), cycle)
            if self._shape(payload, metric) == DOCUMENTED:
                if probe:
                    self._replan(cycle, 1)
                    asked = metric.aggregations
                    payload = await self._get(path, self._documented_params(metric, asked, cycle.window, now), cycle)
                    self._shape(payload, metric)
                return self._parse_documented(payload, metric, asked)
            # The open-source server ignored from/to/interval: ask again its way.
            self._replan(cycle, len(metric.opensource_aggregations()))
        result: Result = {}
        for aggregation in metric.opensource_aggregations():
            payload = await self._get(path, self._opensource_params(metric, aggregation, cycle.window, now), cycle)
            if self._shape(payload, metric) == DOCUMENTED:
                self._replan(cycle, 1)  # guessed wrong from the list; ask the documented way
                return await self._query(metric, cycle, now)
            merge(result, self._parse_opensource(payload, metric, aggregation))
        return result

    def _replan(self, cycle: _Cycle, this_metric: int) -> None:
        """While probing: what is left, counted in the dialect now known."""
        cycle.planned = cycle.completed + this_metric + sum(self._requests(m) for m in cycle.pending)

    def _documented_params(self, metric: Metric, aggregations: tuple[str, ...], window: float,
                           now: float) -> list[tuple[str, str]]:
        params = [("from", rfc3339(window)), ("to", rfc3339(now)), ("interval", self.config.bucket),
                  ("aggregation", ",".join(aggregations))]
        if metric.group_by:
            params.append(("group_by", ",".join(f"tags.{key}" for key in metric.group_by)))
        return params + [(f"tags[{key}]", value) for key, value in metric.tags]

    def _opensource_params(self, metric: Metric, aggregation: str, window: float, now: float) -> list[tuple[str, str]]:
        # One minute more than the window: a server clock a little ahead of
        # ours must not cut the first bucket we keep (earlier ones are ignored).
        minutes = math.ceil((now - window) / 60) + 1
        params = [("since", f"{minutes}m"), ("bucket", OPENSOURCE_BUCKETS[self.config.bucket]),
                  ("aggregation", aggregation)]
        return params + [(f"tags[{key}]", value) for key, value in metric.tags]

    def _shape(self, payload: Any, metric: Metric) -> str:
        """The dialect of a query answer; the first one decides the source's."""
        shape = query_shape(payload)
        if shape is None:
            raise InvalidResponse(f"query of {metric.name!r}: neither data.series/data.groups (documented) "
                                  f"nor a data list (open source): {str(payload)[:200]}")
        if self.dialect is None:
            self.dialect = shape
            log.info("%s: the Flux server at %s speaks the %s dialect", self.name, self.http.base_url, shape,
                     extra={"source": self.name})
            if shape == OPENSOURCE and any(m.group_by for m in self.config.metrics or []):
                self._once("group_by", logging.WARNING, "%s: the open-source Flux server ignores group_by; "
                           "those metrics are exported without their group labels", self.name)
        elif shape != self.dialect:
            raise InvalidResponse(f"query of {metric.name!r} answered in the {shape} shape, but this server "
                                  f"speaks the {self.dialect} dialect")
        return shape

    def _parse_documented(self, payload: dict[str, Any], metric: Metric, aggregations: tuple[str, ...]) -> Result:
        data = payload["data"]
        where = f"query of {metric.name!r}"
        result: Result = {}
        if "groups" in data:
            groups = data["groups"]
            if not isinstance(groups, dict):
                raise InvalidResponse(f"{where}: data.groups is not an object")
            if not metric.group_by:
                raise InvalidResponse(f"{where}: data.groups in the answer to a query without group_by")
            for name, points in groups.items():
                merge(result, {self._group_labels(metric, str(name)): parse_points(points, aggregations, where)})
        else:
            if metric.group_by:
                self._once(("ignored", metric.name), logging.WARNING, "%s: the server answered %r without groups; "
                           "it is exported without its group labels", self.name, metric.name)
            merge(result, {(): parse_points(data["series"], aggregations, where)})
        return result

    def _parse_opensource(self, payload: dict[str, Any], metric: Metric, aggregation: str) -> Result:
        where = f"query of {metric.name!r} ({aggregation})"
        with_count = metric.type == "distribution" and "count" in metric.aggregations
        buckets: dict[float, dict[str, float]] = {}
        for point in payload["data"]:
            if not isinstance(point, dict):
                raise InvalidResponse(f"{where}: a point is not an object")
            start = point_time(point, where)
            values = buckets.setdefault(start, {})
            value = number(point.get("value"), where)
            if value is not None:
                values[aggregation] = value
            count = number(point.get("count"), where)
            if with_count and count is not None:
                values["count"] = count
        return {(): buckets}

    def _group_labels(self, metric: Metric, name: str) -> Labels:
        keys = metric.group_by
        parts = [name] if len(keys) == 1 else name.split(",")
        if len(parts) != len(keys):
            raise InvalidResponse(f"query of {metric.name!r}: group {name!r} does not split into the "
                                  f"{len(keys)} values of group_by {', '.join(keys)}")
        return tuple((tag_label(key), part) for key, part in zip(keys, parts, strict=True))

    # --- samples ---------------------------------------------------------------------------------

    def _samples(self, target: Target, metrics: list[Metric], cycle: _Cycle) -> list[Sample]:
        ledger = self.context.ledgers.get(self.name, target.id)
        families = {m.key: families_of(m, self.config.bucket) for m in metrics}
        observed: dict[tuple[str, ...], dict[float, float]] = {}
        for key, fresh in cycle.fresh.items():
            fams = families[key]
            for labels, buckets in fresh.result.items():
                for family, aggregation, divisor in ((fams.counter, "sum", fams.divisor), (fams.count, "count", 1.0),
                                                     (fams.sum, "sum", fams.divisor)):
                    if family is not None:
                        observed[series_key(family, labels)] = {
                            start: values[aggregation] / divisor
                            for start, values in buckets.items() if aggregation in values}
        ledger.observe(cycle.window, observed)

        now = self.context.clock()
        limit = self.staleness_limit
        keep = {m.key for m in metrics}
        self._results = {key: fresh for key, fresh in {**self._results, **cycle.fresh}.items()
                         if key in keep and now - fresh.queried_at <= limit}
        base: Labels = (("account", target.id),)
        totals = ledger.totals()
        samples: list[Sample] = []
        for metric in metrics:
            fresh = self._results.get(metric.key)
            samples += metric_samples(metric, families[metric.key], fresh, base, totals, ledger.created, self.grid)
        counters = {f.counter.name: f.counter for f in families.values() if f.counter is not None}
        samples += counter_samples(ledger, counters, base)
        if self.dialect is not None:
            samples.append(Sample(API_INFO, (*base, ("dialect", self.dialect)), 1.0))
        samples.append(Sample(PLANNED, base, float(cycle.planned)))
        samples.append(Sample(COMPLETED, base, float(cycle.completed)))
        return samples

    def _once(self, key: object, level: int, message: str, *args: object) -> None:
        if key in self._said:
            return
        self._said.add(key)
        log.log(level, message, *args, extra={"source": self.name})


def metric_samples(metric: Metric, fams: Families, fresh: _Fresh | None, base: Labels,
                   totals: dict[tuple[str, ...], float], created: float, grid: Grid) -> list[Sample]:
    """Gauges and summaries of one metric from its newest answer and the ledger."""
    samples: list[Sample] = []
    result = fresh.result if fresh is not None else {}
    groups = set(result)
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
                    samples.append(Sample(family, full, newest[1] / fams.divisor, timestamp=newest[0]))
        elif metric.type == "set":
            if "count" in fams.gauges and fresh is not None and labels in result:
                samples.append(Sample(fams.gauges["count"], full, last.get("count", 0.0), timestamp=last_start))
        elif metric.type == "distribution":
            for aggregation, family in fams.gauges.items():
                if aggregation in last:
                    samples.append(Sample(family, full, last[aggregation] / fams.divisor, timestamp=last_start))
            if fams.summary is not None:
                quantiles = tuple((q, last[a] / fams.divisor) for a, q in QUANTILES.items()
                                  if a in metric.aggregations and a in last)
                count = totals.get(series_key(fams.count, labels), 0.0) if fams.count is not None else None
                total = totals.get(series_key(fams.sum, labels), 0.0) if fams.sum is not None else None
                if quantiles or count is not None or total is not None:
                    samples.append(Sample(fams.summary, full, SummaryValue(quantiles, count, total), created=created))
    return samples


def latest(buckets: dict[float, dict[str, float]], aggregation: str, before: float) -> tuple[float, float] | None:
    """(start, value) of the newest complete bucket that has `aggregation`."""
    for start in sorted(buckets, reverse=True):
        if start < before and aggregation in buckets[start]:
            return start, buckets[start][aggregation]
    return None


def merge(into: Result, other: Result) -> None:
    for labels, buckets in other.items():
        mine = into.setdefault(labels, {})
        for start, values in buckets.items():
            mine.setdefault(start, {}).update(values)


def query_shape(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return None
    data = payload.get("data")
    if isinstance(data, dict) and (isinstance(data.get("series"), list) or "groups" in data):
        return DOCUMENTED
    if isinstance(data, list):
        return OPENSOURCE
    return None


def parse_points(points: Any, aggregations: tuple[str, ...], where: str) -> dict[float, dict[str, float]]:
    if not isinstance(points, list):
        raise InvalidResponse(f"{where}: the points are not a list")
    buckets: dict[float, dict[str, float]] = {}
    # A lone aggregation may come as "value" (the open-source server's shape).
    fallback = len(aggregations) == 1
    for point in points:
        if type(point) is not dict and not isinstance(point, dict):
            raise InvalidResponse(f"{where}: a point is not an object")
        start = point_time(point, where)
        values = buckets.get(start)
        if values is None:
            values = buckets[start] = {}
        for aggregation in aggregations:
            raw = point.get(aggregation)
            if raw is None and fallback:
                raw = point.get("value")
            if type(raw) is float and math.isfinite(raw):  # the common case, without number()'s checks
                values[aggregation] = raw
                continue
            value = number(raw, where)
            if value is not None:
                values[aggregation] = value
    return buckets


def point_time(point: dict[str, Any], where: str) -> float:
    raw = point.get("timestamp", point.get("time"))
    if raw is None:
        raise InvalidResponse(f"{where}: a point without timestamp")
    try:
        return parse_timestamp(raw)
    except (ValueError, TypeError) as exc:
        raise InvalidResponse(f"{where}: {exc}") from None


def number(raw: Any, where: str) -> float | None:
    """A point's value: a JSON number or numeric string; None when absent."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        raise InvalidResponse(f"{where}: value {raw!r} is not a number")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise InvalidResponse(f"{where}: value {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise InvalidResponse(f"{where}: value {raw!r} is not finite")
    return value


def definition_type(payload: Any, name: str) -> str:
    """The type in GET /metrics/{name}: `{"data": {...}}`, `{"metric": {...}}` or the object itself."""
    body = payload
    if isinstance(payload, dict):
        body = payload.get("data") if isinstance(payload.get("data"), dict) else payload.get("metric", payload)
    kind = body.get("type") if isinstance(body, dict) else None
    if kind not in AGGREGATIONS:
        raise InvalidResponse(f"GET {LIST_PATH}/{name}: no known type in {str(payload)[:200]}")
    return str(kind)


def classify_error(status: int, body: bytes, path: str) -> PollError | None:
    """Flux bodies are `{"error": "Invalid API key"}` (or `{"error": {"message": …}}`): say it."""
    payload = json_or_none(body)
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        error = error.get("message")
    if not isinstance(error, str):
        return None
    return UpstreamHTTPError(reason_for_status(status), f"GET {path}: HTTP {status}: {error}", status=status, body=body)


def duration(seconds: float) -> str:
    """`3m20s`, `45s`, `1h5m`."""
    seconds = math.ceil(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return text or "0s"
