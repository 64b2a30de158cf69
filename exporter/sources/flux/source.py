"""`FluxSource`: one poll of a Flux account, within the shared rate budget and the poll deadline.

Follows seed 003 (List Metrics, Get Metric, Query Metric) and the open-source
server of API_NOTES.md; the package docstring (`exporter.sources.flux`) says
what is asked and exported. This module holds what needs the network or the
source's state across polls: the budget and the deadline derived from it, the
cycle (plan, probe, then up to CONCURRENCY queries at once), each metric's
query in the dialect the server speaks, and the samples with the period ledger.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from exporter.errors import PollError
from exporter.ledger.registry import counter_samples
from exporter.model import Labels, Sample
from exporter.sources.base import Source, SourceContext, Target
from exporter.sources.flux.config import GRIDS, FluxConfig, FluxMetricConfig
from exporter.sources.flux.dialects import (
    DOCUMENTED,
    LIST_PATH,
    ServerDialect,
    classify_error,
    definition_path,
    definition_type,
    documented_params,
    list_items,
    listed_metrics,
    opensource_params,
    parse_documented,
    parse_opensource,
    query_path,
)
from exporter.sources.flux.families import (
    FreshAnswer,
    Metric,
    MetricKey,
    Result,
    families_of,
    ledger_series,
    merge,
    metric_samples,
    own_samples,
)
from exporter.sources.flux.history import CHUNK, complete_buckets, metric_history
from exporter.sources.flux.notes import Notes
from exporter.sources.flux.plan import (
    Cycle,
    configured_metrics,
    discovered_metrics,
    duration,
    initial_requests,
    queue_order,
    window_start,
    without_collisions,
)
from exporter.sources.kit.ratelimit import BUDGETS, RateBudget

CONCURRENCY = 4  # queries in flight once the dialect is known
FIRST_DISCOVERY_TIMEOUT = 600.0  # the deadline before the first list of a discovering source


class FluxSource(Source[FluxConfig]):
    """One target, the account of the API key: its metrics (listed or configured) every interval."""

    type: ClassVar[str] = "flux"
    # Typed by Source: a `type[...]` annotation here would name the `type` attribute above.
    config_model = FluxConfig
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
        self._cycle_seconds: float | None = None
        self._notes = Notes(self.name)
        self.dialect = ServerDialect(self._notes, self.http.base_url, any(m.group_by for m in config.metrics or []))
        # Types of configured metrics, from config or learnt once: a Flux metric's type does not change.
        self._types: dict[str, str] = {m.name: m.type for m in config.metrics or [] if m.type is not None}
        self._answers: dict[MetricKey, FreshAnswer] = {}
        self._last_success_start: float | None = None
        self._warned: int | None = None  # cycle length (in budget windows) last warned about
        self._resume: str | None = None  # the first metric the last poll did not reach
        self._adopt(initial_requests(config))

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
        if self._cycle_seconds is None:
            return max(self.config.interval, FIRST_DISCOVERY_TIMEOUT)
        return self.config.interval + 2 * self._cycle_seconds

    @property
    def staleness_limit(self) -> float:
        """`max_staleness` if set; else 3 × (interval + cycle)."""
        if self.config.max_staleness is not None or self._cycle_seconds is None:
            return self.config.staleness_limit
        return 3 * (self.config.interval + self._cycle_seconds)

    def _adopt(self, requests: int | None, metrics: int | None = None) -> None:
        """Declare the plan on the budget, which sets the cycle (and so the
        deadline and staleness limit); warn when a cycle outlasts the interval."""
        interval = self.config.interval
        if requests is None:
            return
        self.budget.declare(self.name, requests)
        cycle = self._cycle_seconds = self.budget.estimate()
        # Warn again only when the cycle's length (in budget windows) changes.
        windows = math.ceil(self.budget.demand() / self.budget.limit)
        if cycle > interval and windows != self._warned:
            self._warned = windows
            what = f"{metrics} metric(s) need" if metrics is not None else "the configured metrics need up to"
            sharers = self.budget.sharers()
            self._notes.say(
                logging.WARNING,
                "%s: %s %d requests a cycle; at %d per %gs (%s) a cycle takes at least %s, longer than the %gs "
                "interval: polls run back to back and the ticks in between are skipped "
                "(apimetrics_poll_overruns_total). Poll deadline %s, max_staleness %s. "
                "Set interval to %s or more to run on a steady beat.",
                self.name, what, requests, self.budget.limit, self.budget.per,
                f"a budget shared with {sharers - 1} other source(s), {self.budget.demand()} requests in all"
                if sharers > 1 else "this source's budget",
                duration(cycle), interval, duration(self.poll_timeout), duration(self.staleness_limit),
                duration(cycle))

    # --- poll ------------------------------------------------------------------------------------

    async def poll(self, target: Target) -> list[Sample]:
        loop = asyncio.get_running_loop()
        timeout = self.poll_timeout
        now = self.context.clock()
        window = window_start(self.grid, self.config.lookback, now, self._last_success_start, self.staleness_limit)
        cycle = Cycle(window=window, deadline=loop.time() + timeout - min(10.0, 0.1 * timeout))
        metrics = await self._plan(cycle)
        if cycle.abort is not None:
            raise cycle.abort
        cycle.planned += sum(self.dialect.requests(m) for m in metrics)
        self._adopt(cycle.planned, len(metrics))
        cycle.pending = queue_order(metrics, self._resume, probing=self.dialect.known is None)
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

    async def _run(self, cycle: Cycle) -> None:
        """Probe one metric at a time until the dialect is known, then run
        CONCURRENCY workers; stop at the deadline, leaving `cycle.pending`."""
        in_flight: dict[int, Metric] = {}

        async def worker(slot: int, probing: bool = False) -> None:
            while cycle.pending and cycle.abort is None and not (probing and self.dialect.known is not None):
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

    async def _one(self, metric: Metric, cycle: Cycle) -> None:
        now = self.context.clock()
        try:
            result = await self._query(metric, cycle, now)
        except PollError as exc:
            cycle.fail(exc)
            return
        cycle.fresh[metric.key] = FreshAnswer(now, self.grid.floor(now), result)

    async def _get(self, path: str, params: list[tuple[str, str]] | None, cycle: Cycle) -> Any:
        """One request, counted as completed whether it succeeded or failed upstream."""
        try:
            payload = await self.http.get_json(path, params=params, classify=classify_error)
        except PollError:
            cycle.completed += 1
            raise
        cycle.completed += 1
        return payload

    # --- backfill ---------------------------------------------------------------------------------

    async def history(self, target: Target, since: float, until: float) -> AsyncIterator[list[Sample]]:
        """A backfill of the account: one metric at a time (see `history.py`);
        a metric that fails is reported and the others go on, and the target
        then fails at the end."""
        start = self.grid.floor(since)
        start = start if start >= since else self.grid.shift(start, 1)
        cycle = Cycle(window=start, deadline=math.inf)
        metrics = await self._plan(cycle)
        if cycle.abort is not None or (cycle.errors and not metrics):
            raise cycle.abort or cycle.errors[0]
        base: Labels = (("account", target.id),)
        for metric in metrics:
            try:
                result = await self._query_range(metric, cycle, start, until)
            except PollError as exc:
                cycle.fail(exc)
                if cycle.abort is not None:
                    raise
                continue
            complete = complete_buckets(result, self.grid, since, until)
            yield metric_history(metric, families_of(metric, self.config.bucket), complete, base, since, self.grid)
        if cycle.errors:
            raise PollError(cycle.errors[0].reason, f"{len(cycle.errors)} metric(s) not backfilled; first: "
                                                    f"{cycle.errors[0].message}")

    async def _query_range(self, metric: Metric, cycle: Cycle, start: float, until: float) -> Result:
        result: Result = {}
        while start < until:
            if self.dialect.assumed != DOCUMENTED:  # `since` counts back from the server's now: one query
                cycle.window = start
                merge(result, await self._query(metric, cycle, self.context.clock()))
                break
            end = min(self.grid.shift(start, CHUNK), until)
            cycle.window = start
            merge(result, await self._query(metric, cycle, end))
            start = end
        return result

    # --- plan: which metrics, of which type ------------------------------------------------

    async def _plan(self, cycle: Cycle) -> list[Metric]:
        if self.config.metrics is None:
            cycle.planned += 1
            listed = await self._list(cycle)  # a failed discovery fails the poll
            candidates = discovered_metrics(listed, self._notes)
        else:
            await self._learn_types(self.config.metrics, cycle)
            candidates = configured_metrics(self.config.metrics, self._types, self._notes)
        return without_collisions(candidates, self.config.bucket, self._notes)

    async def _learn_types(self, entries: list[FluxMetricConfig], cycle: Cycle) -> None:
        """Types of configured metrics that do not say: from one list, then one
        definition each for those the list lacks (404 → not_found)."""
        unknown = [m.name for m in entries if m.name not in self._types]
        if not unknown:
            return
        cycle.planned += 1
        try:
            listed = dict(await self._list(cycle))
        except PollError as exc:
            if cycle.fail(exc):
                return
            listed = {}
        for name in unknown:
            if name in listed:
                self._types[name] = listed[name]
                continue
            cycle.planned += 1
            try:
                payload = await self._get(definition_path(name), None, cycle)
                self._types[name] = definition_type(payload, name)
            except PollError as exc:
                if cycle.fail(exc):
                    return

    async def _list(self, cycle: Cycle) -> list[tuple[str, str]]:
        items, shape = list_items(await self._get(LIST_PATH, None, cycle))
        self.dialect.list_answered(shape)
        return listed_metrics(items)

    # --- one metric's query ---------------------------------------------------------------------

    async def _query(self, metric: Metric, cycle: Cycle, now: float) -> Result:
        """The metric's answer, asked in the dialect assumed now; while the dialect is unknown
        this is the probe (one aggregation first, then the open-source form if that is what answers)."""
        path, bucket = query_path(metric.name), self.config.bucket
        if self.dialect.assumed == DOCUMENTED:
            probe = self.dialect.known is None and len(metric.aggregations) > 1
            asked = metric.aggregations[:1] if probe else metric.aggregations
            payload = await self._get(path, documented_params(metric, asked, bucket, cycle.window, now), cycle)
            if self.dialect.settle(payload, metric) == DOCUMENTED:
                if probe:
                    cycle.replan(1, self.dialect)
                    asked = metric.aggregations
                    payload = await self._get(path, documented_params(metric, asked, bucket, cycle.window, now),
                                              cycle)
                    self.dialect.settle(payload, metric)
                return parse_documented(payload, metric, asked, self._notes)
            # The open-source server ignored from/to/interval: ask again its way.
            cycle.replan(len(metric.opensource_aggregations()), self.dialect)
        result: Result = {}
        for aggregation in metric.opensource_aggregations():
            payload = await self._get(path, opensource_params(metric, aggregation, bucket, cycle.window, now), cycle)
            if self.dialect.settle(payload, metric) == DOCUMENTED:
                cycle.replan(1, self.dialect)  # guessed wrong from the list; ask the documented way
                return await self._query(metric, cycle, now)
            merge(result, parse_opensource(payload, metric, aggregation))
        return result

    # --- samples ---------------------------------------------------------------------------------

    def _samples(self, target: Target, metrics: list[Metric], cycle: Cycle) -> list[Sample]:
        ledger = self.context.ledgers.get(self.name, target.id)
        families = {m.key: families_of(m, self.config.bucket) for m in metrics}
        ledger.observe(cycle.window, ledger_series(cycle.fresh, families))

        # Answers older than the staleness limit, or of metrics no longer
        # planned, are dropped; the others stand in for metrics not reached.
        now = self.context.clock()
        limit = self.staleness_limit
        keep = {m.key for m in metrics}
        self._answers = {key: answer for key, answer in {**self._answers, **cycle.fresh}.items()
                         if key in keep and now - answer.queried_at <= limit}
        base: Labels = (("account", target.id),)
        totals = ledger.totals()
        samples: list[Sample] = []
        for metric in metrics:
            samples += metric_samples(metric, families[metric.key], self._answers.get(metric.key), base, totals,
                                      ledger.created, self.grid)
        counters = {f.counter.name: f.counter for f in families.values() if f.counter is not None}
        samples += counter_samples(ledger, counters, base)
        samples += own_samples(base, self.dialect.known, cycle.planned, cycle.completed)
        return samples
