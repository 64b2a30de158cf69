"""Pluto (mlop) run metrics: training curves as live gauges, fetched incrementally (seed 002).

For each run (one target) a poll calls

    GET /api/runs/metrics?runId=R&projectName=P&limit=L[&logName=N][&logGroup=G][&stepMin=S][&stepMax=T]

and, with `discover_runs = true`, discovery pages through

    GET /api/runs/list?projectName=P&limit=200&offset=O

It exports, for example:

    pluto_run_metric_value{project="research",run_id="4101",log_group="train",log_name="train/loss"} 0.1443
    pluto_run_metric_step{project="research",run_id="4101",log_group="train",log_name="train/loss"} 14400
    pluto_run_metric_timestamp_seconds{project="research",run_id="4101",…,log_name="train/loss"} 1.77999996e+09
    pluto_run_metric_nonfinite_points_total{project="research",run_id="4101",…,log_name="train/grad_norm"} 3
    pluto_run_request_budget_exhausted_total{project="research",run_id="4101"} 0
    pluto_run_info{project="research",run_id="4101",run_name="resnet50-baseline",status="RUNNING"} 1

How points are fetched (the doc promises a sample of at most `limit` points;
the open-source server keeps every ceil(total/limit)-th row of each logName
plus its last, so up to `limit + 1` rows per logName — see API_NOTES.md):

- A response of one logName over a step window is *complete* when it holds at
  most `limit // 2` rows. A sampled answer always holds more: a reservoir
  sample holds `limit` rows, and the stride sample of T > limit rows holds at
  least ceil(T / ceil(T / limit)) > limit / 2. (Counting up to `limit`, as the
  issue suggested, misses stride samples such as 76 rows out of 151 for a
  limit of 100.)
- First poll of a run: one request per query (all logNames, or one per
  `log_names` entry); every logName whose answer may be sampled is walked
  forward with `stepMin` = the highest step seen (inclusive) until an answer
  is complete, which reaches the newest step whatever the sampler. Only that
  newest point is exported: history from before the exporter followed the run
  is not "new".
- Later polls ask from the lowest step already exported (`stepMin`, inclusive,
  so the boundary point is re-read, not lost). A logName whose answer may be
  sampled is split at its middle row into two windows that partition the
  range (`[lo, s]` and `[s + 1, hi]`, newest side first) and each window is
  fetched again, recursively, until every window is complete: every new point
  is fetched, not only the last. Points whose step or time is older than the
  exported one are ignored. Cost: one request per poll while a logName gains
  at most `limit // 2` points per interval; set `limit` above twice that.
- All requests of one poll of one run count against `max_requests_per_poll`.
  When the budget runs out the walk stops where it is (the newest side is
  always walked first, so the gauges still reach the newest step the walk saw),
  points inside windows not yet fetched are skipped (the sampled ones already
  fetched are kept), and `pluto_run_request_budget_exhausted_total` counts the
  poll.
- State (per run and logName: the exported step and time, the running count
  of non-finite points) lives on this instance and is committed only when a
  poll succeeds; a failed poll retries the same range next time. A restart
  starts again with a first poll.

Every point a poll found new is kept, with its own time, in `history(target)`
until the next poll of that target, for the OTLP sink (see `history`).

Interpretations of the doc:
- `valueFlag` (`NaN`, `Inf`, `-Inf`, any case) wins over `value`, which the
  server sends as 0 for non-finite points; a `null` value without a flag is NaN
  (ClickHouse serialises non-finite numbers as null), and numeric strings are
  read as numbers. `step` may be a number or a numeric string. `time` is any
  ISO-8601 variant; without a zone it is UTC.
- An unknown run or project answers 200 with no rows: the poll succeeds with
  no series, it is not an error.
- `/api/runs/list`: a run is followed while its status is RUNNING, or when it
  finished within `discover_finished_within`. The finish time is
  `statusUpdated`, else `updatedAt`, else `createdAt` (a run created within the
  window certainly finished within it; older servers send only `createdAt`).
  Paging stops at a short page, at `total`, or at a page that adds no new run
  (a server that ignores `offset`).
- `pluto_run_info` (status and name) exists for discovered runs only: with
  `run_ids` the exporter never lists runs, so it does not know their status.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, SecretStr, model_validator

from exporter.config.source import SourceConfigBase
from exporter.config.types import Duration
from exporter.errors import InvalidResponse, PollError, UpstreamHTTPError
from exporter.model import Family, Kind, Labels, Sample
from exporter.sources.base import Source, SourceContext, Target
from exporter.sources.kit.payloads import json_or_none, list_field, parse_payload
from exporter.sources.kit.timeparse import parse_timestamp

log = logging.getLogger(__name__)

METRICS_PATH = "/api/runs/metrics"
LIST_PATH = "/api/runs/list"
LIST_PAGE_SIZE = 200  # the server's maximum
MAX_LIST_PAGES = 100  # 20,000 runs; beyond that discovery logs and uses what it has


class PlutoConfig(SourceConfigBase):
    """`type = "pluto"`: one target per run, named or discovered."""

    sample: ClassVar[dict[str, Any]] = {"project": "research", "run_ids": [4101, 4105]}

    type: Literal["pluto"] = Field(description="Pluto (mlop) training runs")
    api_key: SecretStr | None = Field(default=None, description="API key, sent as `Authorization: Bearer <key>`")
    project: str = Field(min_length=1, description="the project (projectName)")
    run_ids: list[PositiveInt] | None = Field(
        default=None, min_length=1, description="runs to follow, each one target; give this or discover_runs")
    discover_runs: bool = Field(
        default=False, description="follow every RUNNING run of the project and those finished within "
                                   "discover_finished_within, listed every interval")
    discover_finished_within: Duration = Field(
        default=3600.0, description="how long a finished run is still followed (discover_runs)")
    log_group: str | None = Field(default=None, min_length=1, examples=["train"],
                                  description="only metrics of this group (logGroup); default: all")
    log_names: list[str] | None = Field(default=None, min_length=1, examples=[["train/loss", "val/loss"]],
                                        description="only these metrics (logName), one request each per poll")
    limit: int = Field(default=2000, ge=1, le=10_000, description="points per metric per request; keep it above "
                                                                  "twice the points a metric gains per interval")
    max_requests_per_poll: int = Field(default=50, ge=1, le=10_000,
                                       description="bound on the requests of one poll of one run")

    @model_validator(mode="after")
    def _runs_named_once(self) -> PlutoConfig:
        if self.run_ids is not None and self.discover_runs:
            raise ValueError("give either run_ids or discover_runs = true, not both")
        if self.run_ids is None and not self.discover_runs:
            raise ValueError("give run_ids = [...] or discover_runs = true")
        if self.log_names is not None and any(not name for name in self.log_names):
            raise ValueError("log_names may not contain an empty name")
        return self

    def target_ids(self) -> list[str]:
        return [str(run) for run in dict.fromkeys(self.run_ids or [])]


# --- upstream payloads ------------------------------------------------------


class Point(NamedTuple):
    """One row of `/api/runs/metrics`, parsed. A NamedTuple: a full read makes
    ~10k of them, at a third of a frozen dataclass's cost."""

    log_name: str
    log_group: str
    step: int
    time: float
    value: float


class RunItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: int
    name: str = ""
    status: str = ""
    createdAt: str | None = None  # noqa: N815 - the API's names
    updatedAt: str | None = None  # noqa: N815
    statusUpdated: str | None = None  # noqa: N815

    def finished_at(self) -> float | None:
        for value in (self.statusUpdated, self.updatedAt, self.createdAt):
            if value:
                try:
                    return parse_timestamp(value)
                except ValueError:
                    continue
        return None


_FLAGS = {"nan": math.nan, "inf": math.inf, "+inf": math.inf, "infinity": math.inf,
          "-inf": -math.inf, "-infinity": -math.inf}


def parse_point(row: Any) -> Point:
    # The shape nearly every row has (a step as a JSON int or, as ClickHouse
    # quotes UInt64, a string of digits; a number value; no flag) is checked
    # inline; anything else takes the careful path below. A full read parses
    # ~10k rows per run (benchmarks/bench.py poll).
    if type(row) is dict and not row.get("valueFlag"):
        name, group, step = row.get("logName"), row.get("logGroup"), row.get("step")
        value, time = row.get("value"), row.get("time")
        if type(step) is str and step.isascii() and step.isdigit():
            step = int(step)
        if (type(name) is str and name and (group is None or type(group) is str) and type(step) is int and step >= 0
                and (type(value) is float or type(value) is int) and type(time) is str):
            try:
                return Point(name, group or "", step, parse_timestamp(time), float(value))
            except ValueError:
                pass  # reported by the careful path
    return _parse_point_checked(row)


def _parse_point_checked(row: Any) -> Point:
    if not isinstance(row, dict):
        raise InvalidResponse(f"metrics: expected objects in 'metrics', got {type(row).__name__}")
    name = row.get("logName")
    if not isinstance(name, str) or not name:
        raise InvalidResponse("metrics: a row has no logName")
    group = row.get("logGroup")
    if group is not None and not isinstance(group, str):
        raise InvalidResponse(f"metrics: {name}: logGroup is not a string")
    try:
        time = parse_timestamp(row["time"])
    except (KeyError, TypeError, ValueError):
        raise InvalidResponse(f"metrics: {name}: unreadable time {row.get('time')!r}") from None
    value = _value(name, row.get("value"), row.get("valueFlag"))
    return Point(name, group or "", _step(name, row.get("step")), time, value)


def _step(name: str, raw: Any) -> int:
    # ClickHouse quotes UInt64 in JSON: steps arrive as numbers or numeric strings.
    try:
        number = float(raw) if isinstance(raw, (int, float, str)) and not isinstance(raw, bool) else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0 or not number.is_integer():
        raise InvalidResponse(f"metrics: {name}: step {raw!r} is not a non-negative integer")
    return int(number)


def _value(name: str, raw: Any, flag: Any) -> float:
    if isinstance(flag, str) and flag.strip():
        special = _FLAGS.get(flag.strip().lower())
        if special is not None:
            return special
    if raw is None:
        return math.nan
    if isinstance(raw, bool):
        raise InvalidResponse(f"metrics: {name}: value {raw!r} is not a number")
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise InvalidResponse(f"metrics: {name}: value {raw!r} is not a number") from None


# --- families ---------------------------------------------------------------

VALUE = Family("pluto_run_metric_value", Kind.GAUGE,
               "Value of a Pluto run metric at the highest step seen (NaN/±Inf as logged).")
STEP = Family("pluto_run_metric_step", Kind.GAUGE, "Highest step seen of a Pluto run metric.")
TIMESTAMP = Family(
    "pluto_run_metric_timestamp_seconds", Kind.GAUGE,
    "Time of the point at the highest step seen of a Pluto run metric.", "seconds",
)
NONFINITE = Family(
    "pluto_run_metric_nonfinite_points", Kind.COUNTER,
    "New points of a Pluto run metric whose value was NaN, +Inf or -Inf (valueFlag), "
    "since the exporter followed the run.",
)
# Alerting needs the status: a RUNNING run whose newest step is old has stalled.
RUN_INFO = Family(
    "pluto_run_info", Kind.GAUGE, "Always 1: a discovered Pluto run's name and status at the last discovery.",
)
BUDGET_EXHAUSTED = Family(
    "pluto_run_request_budget_exhausted", Kind.COUNTER,
    "Polls of a Pluto run that stopped at max_requests_per_poll before every new point was fetched.",
)


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


class _Walk:
    """The requests of one poll of one run, against its budget."""

    def __init__(self, source: PlutoSource, run: str) -> None:
        self.source = source
        self.run = run
        self.left = source.config.max_requests_per_poll
        self.truncated = False

    def spent(self) -> bool:
        """True (and the poll marked truncated) when no request is left."""
        if self.left <= 0:
            self.truncated = True
            return True
        return False

    async def fetch(self, log_name: str | None, low: int | None, high: int | None) -> list[Point]:
        self.left -= 1
        return await self.source.fetch(self.run, log_name, low, high)


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
        walk = _Walk(self, run)
        fetched = await self._fetch_new(walk, state)
        state, history = self._commit(run, state, fetched, walk.truncated)
        self._states[run] = state
        self._history[run] = history
        return with_history(self._samples(run, state), history)

    def forget(self, target: Target) -> None:
        self._states.pop(target.id, None)
        self._history.pop(target.id, None)
        self._runs.pop(target.id, None)

    def history(self, target: Target) -> tuple[Sample, ...]:
        """Every point the last successful poll of `target` found new, as
        `pluto_run_metric_value` samples stamped with the point's own time,
        ordered by logName then step. Replaced by each poll (so it never grows
        without bound); a sink that wants the full curve reads it after every
        poll. On the first poll of a run it holds the newest point per logName."""
        return self._history.get(target.id, ())

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

    async def _fetch_new(self, walk: _Walk, state: _RunState | None) -> dict[str, list[Point]]:
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
            for name, points in _by_name(rows).items():
                if state is None:
                    points = await self._walk_forward(walk, name, points)
                else:
                    known = state.series.get(name)
                    floor = known.newest.step if known is not None else (low or 0)
                    points = await self._densify(walk, name, low or 0, None, points, floor)
                found.setdefault(name, []).extend(points)
        return found

    async def _walk_forward(self, walk: _Walk, name: str, points: list[Point]) -> list[Point]:
        """Follow `stepMin` = highest step seen until an answer is complete."""
        seen = list(points)
        answer = points
        while len(answer) > self.complete_at and not walk.spent():
            top = max(p.step for p in answer)
            answer = await walk.fetch(name, top, None)
            seen.extend(answer)
            if not answer or max(p.step for p in answer) <= top:
                break  # nothing beyond `top`, or every row sits on one step
        return seen

    async def _densify(
        self, walk: _Walk, name: str, low: int, high: int | None, rows: list[Point], floor: int
    ) -> list[Point]:
        """Every row of `name` in [low, high] (high None: open), given `rows`,
        the answer for exactly that window. Windows wholly below `floor` (the
        step already exported) are not fetched."""
        if len(rows) <= self.complete_at or walk.spent():
            return rows
        ordered = sorted(rows, key=lambda p: (p.step, p.time))
        top = ordered[-1].step
        split = ordered[len(ordered) // 2 - 1].step if len(ordered) > 1 else top
        if split >= top:
            lower = [p.step for p in ordered if p.step < top]
            if not lower:
                return rows  # every row on one step: no window is smaller
            split = lower[-1]
        # Both windows hold fewer true rows than this one (the split row goes
        # left, the top row right), so the recursion ends. Newest side first:
        # a walk cut short by the budget still reaches the newest step.
        right = await walk.fetch(name, split + 1, high)
        points = await self._densify(walk, name, split + 1, high, right, floor)
        if split < floor:
            return points
        if walk.spent():
            return points + [p for p in rows if p.step <= split]
        left = await walk.fetch(name, low, split)
        return points + await self._densify(walk, name, low, split, left, floor)

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
            points = _new_points(fetched[name], None if known is None else known.newest)
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


def _by_name(points: list[Point]) -> dict[str, list[Point]]:
    grouped: dict[str, list[Point]] = {}
    for point in points:
        grouped.setdefault(point.log_name, []).append(point)
    return grouped


def _new_points(points: list[Point], exported: Point | None) -> list[Point]:
    """Distinct points ordered by (step, time), without those at or before the
    exported one: a point older in step or in time is not new."""
    unique = {(p.step, p.time): p for p in points}
    ordered = [unique[key] for key in sorted(unique)]
    if exported is None:
        return ordered
    return [
        p for p in ordered
        if p.step >= exported.step and p.time >= exported.time and (p.step, p.time) != (exported.step, exported.time)
    ]


def classify_error(status: int, body: bytes, path: str) -> PollError | None:
    """401 → auth (with the server's message); 400 with the zod envelope
    `{"success": false, "error": {"issues": [...]}}` → http_4xx naming the
    parameters it refused."""
    payload = json_or_none(body)
    if status == 401:
        detail = ""
        if isinstance(payload, dict):
            detail = ": ".join(str(payload[k]) for k in ("error", "message") if payload.get(k))
        return UpstreamHTTPError(
            "auth", f"GET {path}: HTTP 401 {detail or 'Unauthorized'} (check api_key)", status=status, body=body
        )
    if status == 400 and isinstance(payload, dict) and payload.get("success") is False:
        error = payload.get("error")
        return UpstreamHTTPError(
            "http_4xx", f"GET {path}: HTTP 400: request refused: {_describe(error)}", status=status, body=body
        )
    return None


def _describe(error: Any) -> str:
    if isinstance(error, dict):
        issues = error.get("issues")
        if isinstance(issues, list) and issues:
            parts = []
            for issue in issues[:5]:
                if isinstance(issue, dict):
                    where = ".".join(str(p) for p in issue.get("path") or [])
                    parts.append(f"{where}: {issue.get('message', '')}" if where else str(issue.get("message", "")))
            return "; ".join(parts)[:300]
        if error.get("message"):
            return str(error["message"])[:300]
    return str(error)[:300]


def with_history(samples: list[Sample], history: tuple[Sample, ...]) -> list[Sample]:
    """Attach to each `pluto_run_metric_value` sample the earlier new points of
    its series, so push sinks receive the whole curve (Sample.history)."""
    earlier: dict[Labels, list[tuple[float, float]]] = {}
    for point in history:
        if point.timestamp is not None:
            earlier.setdefault(point.labels, []).append((point.timestamp, float(point.value)))  # type: ignore[arg-type]
    out = []
    for sample in samples:
        points = earlier.get(sample.labels) if sample.family is VALUE else None
        if points and len(points) > 1:
            sample = replace(sample, history=tuple(points[:-1]))
        out.append(sample)
    return out
