"""`PlutoSource`: one poll of one Pluto run, its per-run state, and run discovery.

The package docstring (`exporter.sources.pluto`) says what is asked and
exported; `walk` how a run's points are fetched completely.

- First poll of a run: one request per query (all logNames, or one per
  `log_names` entry); every logName whose answer may be sampled is walked
  forward until an answer is complete. Only that newest point is exported:
  history from before the exporter followed the run is not "new".
- Later polls ask from the lowest step already exported (`stepMin`,
  inclusive, so the boundary point is re-read, not lost) and densify every
  sampled window: every new point is fetched, not only the last. Points whose
  step or time is older than the exported one are ignored.
- All requests of one poll of one run count against `max_requests_per_poll`
  (`pluto_run_request_budget_exhausted_total` counts the polls cut short).
- State (per run and logName: the exported step and time, the running count
  of non-finite points) lives on this instance and is committed only when a
  poll succeeds; a failed poll retries the same range next time. A restart
  starts again with a first poll.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from exporter.config.source import SourceConfigBase
from exporter.model import Labels, Sample
from exporter.sources.base import Source, SourceContext, Target
from exporter.sources.kit.payloads import list_field, parse_payload
from exporter.sources.pluto.config import LIST_PAGE_SIZE, LIST_PATH, MAX_LIST_PAGES, METRICS_PATH, PlutoConfig
from exporter.sources.pluto.families import (
    BUDGET_EXHAUSTED,
    NONFINITE,
    RUN_INFO,
    STEP,
    TIMESTAMP,
    VALUE,
    with_history,
)
from exporter.sources.pluto.points import Point, RunItem, classify_error, new_points, parse_point
from exporter.sources.pluto.walk import Walk, by_name

log = logging.getLogger(__name__)

# --- per-run state ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Series:
    """What was exported for one logName of one run."""

    newest: Point
    nonfinite: int = 0


@dataclass
class _RunState:
    created: float
    series: dict[str, _Series] = field(default_factory=dict)
    budget_exhausted: int = 0


class PlutoSource(Source[PlutoConfig]):
    config_model: ClassVar[type[SourceConfigBase]] = PlutoConfig
    type: ClassVar[str] = "pluto"
    default_base_url: ClassVar[str] = "https://pluto-api.trainy.ai"
    simulator_prefix: ClassVar[str] = "pluto"
    auth_scheme: ClassVar[str] = "Bearer"

    def __init__(self, config: PlutoConfig, context: SourceContext) -> None:
        super().__init__(config, context)
        self._states: dict[str, _RunState] = {}
        self._history: dict[str, tuple[Sample, ...]] = {}
        self._runs: dict[str, RunItem] = {}  # discovered runs, as last listed

    @property
    def complete_at(self) -> int:
        """Most rows an answer may hold and still be known unsampled."""
        return self.config.limit // 2

    # --- the protocol -------------------------------------------------------

    async def discover(self) -> list[Target] | None:
        if not self.config.discover_runs:
            return None
        runs = await self._list_runs()
        now = self.context.clock()
        window = self.config.discover_finished_within
        followed = []
        for run in runs:
            if run.status.upper() == "RUNNING":
                followed.append(run.id)
                continue
            finished = run.finished_at()
            if finished is not None and now - finished <= window:
                followed.append(run.id)
        kept = set(followed)
        self._runs = {str(run.id): run for run in runs if run.id in kept}
        return [Target(self.name, str(run_id)) for run_id in sorted(kept)]

    async def poll(self, target: Target) -> list[Sample]:
        run = target.id
        state = self._states.get(run)
        walk = self.walk(run, self.config.max_requests_per_poll)
        fetched = await self._fetch_new(walk, state)
        state, history = self._commit(run, state, fetched, walk.truncated)
        self._states[run] = state
        self._history[run] = history
        return with_history(self._samples(run, state), history)

    def forget(self, target: Target) -> None:
        self._states.pop(target.id, None)
        self._history.pop(target.id, None)
        self._runs.pop(target.id, None)

    def last_new_points(self, target: Target) -> tuple[Sample, ...]:
        """Every point the last successful poll of `target` found new, as
        `pluto_run_metric_value` samples stamped with the point's own time,
        ordered by logName then step. Replaced by each poll (so it never grows
        without bound); a sink that wants the full curve reads it after every
        poll. On the first poll of a run it holds the newest point per logName."""
        return self._history.get(target.id, ())

    async def history(self, target: Target, since: float, until: float) -> AsyncIterator[list[Sample]]:
        """A backfill of one run: every point of every logName (each walked in
        windows until no answer is sampled, with no request budget) whose time
        is within [since, until], one logName at a time."""
        walk = self.walk(target.id, None)
        for query in list(self.config.log_names) if self.config.log_names else [None]:
            rows = await walk.fetch(query, None, None)
            for name, points in by_name(rows).items():
                complete = await walk.densify(name, 0, None, points, 0)
                curve = [p for p in new_points(complete, None) if since <= p.time <= until]
                if curve:
                    yield self._curve(target.id, curve)

    def _curve(self, run: str, curve: list[Point]) -> list[Sample]:
        labels = self._labels(run, curve[-1])
        return [Sample(VALUE, labels, curve[-1].value, timestamp=curve[-1].time,
                       history=tuple((p.time, p.value) for p in curve[:-1])),
                Sample(STEP, labels, float(curve[-1].step), timestamp=curve[-1].time,
                       history=tuple((p.time, float(p.step)) for p in curve[:-1]))]

    # --- fetching -------------------------------------------------------------

    async def fetch(self, run: str, log_name: str | None, low: int | None, high: int | None) -> list[Point]:
        params: list[tuple[str, Any]] = [("runId", run), ("projectName", self.config.project),
                                         ("limit", self.config.limit)]
        if log_name is not None:
            params.append(("logName", log_name))
        if self.config.log_group is not None:
            params.append(("logGroup", self.config.log_group))
        if low is not None:
            params.append(("stepMin", low))
        if high is not None:
            params.append(("stepMax", high))
        payload = await self.http.get_json(METRICS_PATH, params=params, classify=classify_error)
        return [parse_point(row) for row in list_field(payload, "metrics", "metrics")]

    def walk(self, run: str, budget: int | None) -> Walk:
        """The walk of one poll (budget: `max_requests_per_poll`) or one backfill (None) of a run."""

        async def fetch(log_name: str | None, low: int | None, high: int | None) -> list[Point]:
            return await self.fetch(run, log_name, low, high)

        return Walk(fetch, self.complete_at, budget)

    async def _fetch_new(self, walk: Walk, state: _RunState | None) -> dict[str, list[Point]]:
        """Points per logName worth looking at: on a first poll whatever walk
        reached the newest step, later every point from the exported step on."""
        found: dict[str, list[Point]] = {}
        queries: list[str | None] = list(self.config.log_names) if self.config.log_names else [None]
        for query in queries:
            if walk.spent():
                break
            cursors = [] if state is None else [
                s.newest.step for name, s in state.series.items() if query is None or name == query
            ]
            low = min(cursors) if cursors else None
            rows = await walk.fetch(query, low, None)
            for name, points in by_name(rows).items():
                if state is None:
                    points = await walk.forward(name, points)
                else:
                    known = state.series.get(name)
                    floor = known.newest.step if known is not None else (low or 0)
                    points = await walk.densify(name, low or 0, None, points, floor)
                found.setdefault(name, []).extend(points)
        return found

    async def _list_runs(self) -> list[RunItem]:
        runs: dict[int, RunItem] = {}
        offset = 0
        for _ in range(MAX_LIST_PAGES):
            payload = await self.http.get_json(
                LIST_PATH,
                params=[("projectName", self.config.project), ("limit", LIST_PAGE_SIZE), ("offset", offset)],
                classify=classify_error,
            )
            items = list_field(payload, "runs", "runs list")
            fresh = 0
            for item in items:
                run = parse_payload(RunItem, item, "runs list")
                if run.id not in runs:
                    runs[run.id] = run
                    fresh += 1
            offset += len(items)
            total = payload.get("total")
            if len(items) < LIST_PAGE_SIZE or fresh == 0 or (isinstance(total, int) and offset >= total):
                return list(runs.values())
        log.warning("runs list of project %r has more than %d pages; following the first %d runs only",
                    self.config.project, MAX_LIST_PAGES, len(runs), extra={"source": self.name})
        return list(runs.values())

    # --- state and samples ----------------------------------------------------

    def _commit(
        self, run: str, state: _RunState | None, fetched: dict[str, list[Point]], truncated: bool
    ) -> tuple[_RunState, tuple[Sample, ...]]:
        """The run's state after this poll, and the points it found new."""
        first_poll = state is None
        new_state = _RunState(created=self.context.clock()) if state is None else _RunState(
            state.created, dict(state.series), state.budget_exhausted
        )
        history: list[Sample] = []
        for name in sorted(fetched):
            known = new_state.series.get(name)
            points = new_points(fetched[name], None if known is None else known.newest)
            if first_poll and points:
                points = points[-1:]
            if not points:
                continue
            nonfinite = sum(not math.isfinite(p.value) for p in points)
            new_state.series[name] = _Series(points[-1], (known.nonfinite if known else 0) + nonfinite)
            history.extend(Sample(VALUE, self._labels(run, p), p.value, timestamp=p.time) for p in points)
        if truncated:
            new_state.budget_exhausted += 1
            level = logging.WARNING if new_state.budget_exhausted == 1 else logging.DEBUG
            log.log(level, "poll of %s/%s stopped at max_requests_per_poll=%d: points between sampled ones were "
                    "skipped; raise limit (now %d) above twice the points a metric gains per interval, or raise "
                    "max_requests_per_poll", self.name, run, self.config.max_requests_per_poll, self.config.limit,
                    extra={"source": self.name, "target": run})
        return new_state, tuple(history)

    def _labels(self, run: str, point: Point) -> Labels:
        return (("project", self.config.project), ("run_id", run), ("log_group", point.log_group),
                ("log_name", point.log_name))

    def _samples(self, run: str, state: _RunState) -> list[Sample]:
        samples: list[Sample] = []
        for name in sorted(state.series):
            series = state.series[name]
            point = series.newest
            labels = self._labels(run, point)
            samples.append(Sample(VALUE, labels, point.value, timestamp=point.time))
            samples.append(Sample(STEP, labels, float(point.step), timestamp=point.time))
            samples.append(Sample(TIMESTAMP, labels, point.time, timestamp=point.time))
            samples.append(Sample(NONFINITE, labels, float(series.nonfinite), created=state.created))
        run_labels = (("project", self.config.project), ("run_id", run))
        samples.append(Sample(BUDGET_EXHAUSTED, run_labels, float(state.budget_exhausted), created=state.created))
        listed = self._runs.get(run)
        if listed is not None:
            samples.append(Sample(RUN_INFO, (*run_labels, ("run_name", listed.name), ("status", listed.status)), 1.0))
        return samples

