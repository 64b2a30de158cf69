"""Fake of the Pluto (mlop) run API (seed 002; server behaviour from API_NOTES.md).

One project, `research`, whose runs log training curves that grow with the
simulator clock (`step = (now - start) × rate`, one row per metric every
`every` steps; the time of step s is `start + s / rate`):

- 4101 resnet50-baseline: RUNNING for 2 h at 2 steps/s, seven metrics:
  train/loss, train/accuracy, train/lr (warm-up + cosine), train/grad_norm
  (NaN at steps ≡ 500, +Inf at ≡ 750, -Inf at ≡ 999 mod 1000, sent as 0 with a
  `valueFlag`), val/loss and val/acc@top5 every 100 steps, and `epoch` (no
  group);
- 4102 resnet50-lr-sweep: RUNNING, started 10 min ago, COMPLETED 20 min after
  the anchor;
- 4103 vit-small: COMPLETED 20 min ago (its times are ISO-8601 with `T`/`Z`);
- 4104 vit-tiny-ablation: FAILED three days ago, its loss NaN at the end;
- 4105 llama-long-haul: RUNNING for 12 days at 0.05 steps/s, 51,840 points per
  metric, listed on the second page of `/api/runs/list`;
- 4106 resnet50-finetune: starts 30 min after the anchor (absent before);
- 4107 gpt-small (CANCELLED 50 min ago), 4108 gpt-medium (TERMINATED 26 h ago);
- 3001–3250: an old hyper-parameter sweep, finished days ago.

Like the open-source server: `Authorization: Bearer` (401 `{"error":"Unauthorized"}`
without it, with a `message` for a wrong key); rows ordered by logName then
step; when more than `limit` rows of one logName match, every
ceil(total/limit)-th row plus the last one (`limit` applies per logName);
`stepMin`/`stepMax` (inclusive), `logName`, `logGroup` filters; `step` sent as
a JSON string on some rows (ClickHouse quotes UInt64); `time` as
`YYYY-MM-DD HH:MM:SS.mmm` (UTC, no zone); unknown run or project → 200
`{"metrics": []}`; invalid parameters → 400 `{"success": false, "error":
{"issues": [...], "name": "ZodError"}}` as @hono/zod-openapi sends.

`sampling = "reservoir"` switches to what the doc describes instead: exactly
`limit` rows drawn at random, with no promise that the newest is among them.

`/api/runs/list` (limit 1–200, offset) returns `createdAt`, `updatedAt` and
`statusUpdated` (when the status last changed: a finished run's end) — the
exporter reads `statusUpdated` for `discover_finished_within`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from exporter.simulator.common import SIMULATOR_TOKEN, SimRequest, SimResponse, bearer_token, deterministic

if TYPE_CHECKING:
    from exporter.simulator.server import Simulator

PROJECT = "research"
MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
MAX_METRICS_LIMIT = 10_000
DEFAULT_METRICS_LIMIT = 2000
MAX_LIST_LIMIT = 200
DEFAULT_LIST_LIMIT = 50


@dataclass(frozen=True)
class FakeMetric:
    name: str
    shape: str  # loss | accuracy | lr | grad_norm | epoch | val_loss | top5
    every: int = 1  # logged every `every` steps

    @property
    def group(self) -> str:
        # The server's getLogGroupName: everything before the last "/".
        return self.name.rpartition("/")[0]


@dataclass
class FakeRun:
    id: int
    name: str
    start: float
    rate: float  # steps per second
    end: float | None = None
    final_status: str = "COMPLETED"
    metrics: list[FakeMetric] = field(default_factory=list)
    planned_steps: int = 20_000
    iso_times: bool = False
    diverges: bool = False  # loss NaN over the last 50 steps

    def status(self, now: float) -> str:
        return self.final_status if self.end is not None and now >= self.end else "RUNNING"

    def last_step(self, now: float) -> int | None:
        """Highest step logged by `now`; None before the run starts."""
        until = min(now, self.end) if self.end is not None else now
        if until < self.start:
            return None
        return math.floor((until - self.start) * self.rate + 1e-9)

    def step_time(self, step: int) -> float:
        return self.start + step / self.rate


TRAINING = [
    FakeMetric("train/loss", "loss"),
    FakeMetric("train/accuracy", "accuracy"),
    FakeMetric("train/lr", "lr"),
    FakeMetric("train/grad_norm", "grad_norm"),
    FakeMetric("val/loss", "val_loss", every=100),
    FakeMetric("val/acc@top5", "top5", every=100),
    FakeMetric("epoch", "epoch"),
]
SWEEP_STATUSES = ("COMPLETED", "FAILED", "TERMINATED", "CANCELLED")


def build_runs(anchor: float) -> dict[int, FakeRun]:
    a = anchor
    runs = [
        FakeRun(4101, "resnet50-baseline", a - 2 * HOUR, 2.0, metrics=list(TRAINING), planned_steps=30_000),
        FakeRun(4102, "resnet50-lr-sweep", a - 10 * MINUTE, 1.0, end=a + 20 * MINUTE,
                metrics=[FakeMetric("train/loss", "loss"), FakeMetric("train/lr", "lr"),
                         FakeMetric("val/loss", "val_loss", every=100)], planned_steps=1800),
        FakeRun(4103, "vit-small", a - 3 * HOUR, 1.5, end=a - 20 * MINUTE, iso_times=True,
                metrics=[FakeMetric("train/loss", "loss"), FakeMetric("train/accuracy", "accuracy"),
                         FakeMetric("val/loss", "val_loss", every=100)], planned_steps=14_400),
        FakeRun(4104, "vit-tiny-ablation", a - 4 * DAY, 1.0, end=a - 3 * DAY, final_status="FAILED",
                diverges=True, metrics=[FakeMetric("train/loss", "loss"), FakeMetric("train/grad_norm", "grad_norm")]),
        FakeRun(4105, "llama-long-haul", a - 12 * DAY, 0.05,
                metrics=[FakeMetric("train/loss", "loss"), FakeMetric("train/lr", "lr")], planned_steps=100_000),
        FakeRun(4106, "resnet50-finetune", a + 30 * MINUTE, 2.0, metrics=list(TRAINING), planned_steps=30_000),
        FakeRun(4107, "gpt-small", a - 5 * HOUR, 1.0, end=a - 50 * MINUTE, final_status="CANCELLED",
                metrics=[FakeMetric("train/loss", "loss")]),
        FakeRun(4108, "gpt-medium", a - 30 * HOUR, 1.0, end=a - 26 * HOUR, final_status="TERMINATED",
                metrics=[FakeMetric("train/loss", "loss")]),
    ]
    for i in range(250):
        start = a - 11 * DAY + i * (6 * DAY / 250)
        runs.append(FakeRun(3001 + i, f"sweep-{i:03d}", start, 1.0, end=start + HOUR,
                            final_status=SWEEP_STATUSES[i % len(SWEEP_STATUSES)],
                            metrics=[FakeMetric("train/loss", "loss")], planned_steps=3600))
    return {run.id: run for run in runs}


class PlutoFake:
    prefix = "pluto"

    def __init__(self, simulator: Simulator) -> None:
        self.sim = simulator
        self.anchor = math.floor(simulator.started_at / 60) * 60
        self.runs = build_runs(self.anchor)
        self.sampling = "stride"  # or "reservoir" (what the doc describes)
        self.routes = {
            "/api/runs/metrics": self.metrics,
            "/api/runs/list": self.list_runs,
            "/api/runs/projects": self.projects,
            "/api/runs/metric-names": self.metric_names,
        }

    # --- plumbing -------------------------------------------------------------

    def handle(self, request: SimRequest) -> SimResponse:
        token = bearer_token(request, "Bearer")
        if not token:
            return SimResponse(401, {"error": "Unauthorized"})
        if token != SIMULATOR_TOKEN:
            return SimResponse(401, {"error": "Unauthorized", "message": "Invalid API key"})
        handler = self.routes.get(request.path)
        if handler is None or request.method != "GET":
            return SimResponse(404, b"404 Not Found", {"Content-Type": "text/plain; charset=UTF-8"})
        return handler(request)

    def visible(self, now: float) -> list[FakeRun]:
        return [run for run in self.runs.values() if run.start <= now]

    # --- data -------------------------------------------------------------------

    def value(self, run: FakeRun, metric: FakeMetric, step: int) -> tuple[float, str]:
        """(value, valueFlag) of one point; non-finite points are 0 with a flag."""
        if run.diverges and metric.shape == "loss" and run.end is not None:
            last = run.last_step(run.end) or 0
            if step > last - 50:
                return 0.0, "NaN"
        if metric.shape == "grad_norm":
            flag = {500: "NaN", 750: "Inf", 999: "-Inf"}.get(step % 1000, "")
            if flag:
                return 0.0, flag
        phase = deterministic(self.sim.seed, run.id, metric.name)
        noise = math.sin(step * 12.9898 + phase * 78.233) * 0.5  # in [-0.5, 0.5]
        tau = run.planned_steps / 4
        loss = 2.3 * math.exp(-step / tau) + 0.08 + 0.02 * noise
        if metric.shape == "loss":
            return round(loss, 6), ""
        if metric.shape == "val_loss":
            return round(loss + 0.12 + 0.01 * noise, 6), ""
        if metric.shape == "accuracy":
            return round(min(0.995, 1 - 0.9 * math.exp(-step / tau) + 0.01 * noise), 6), ""
        if metric.shape == "top5":
            return round(min(0.999, 1 - 0.6 * math.exp(-step / tau) + 0.005 * noise), 6), ""
        if metric.shape == "lr":
            warm = min(1.0, (step + 1) / 1000)
            progress = min(step, run.planned_steps) / run.planned_steps
            return 1e-3 * warm * 0.5 * (1 + math.cos(math.pi * progress)), ""
        if metric.shape == "grad_norm":
            return round(1 + 0.5 * abs(math.sin(step / 50)) + 0.1 * noise, 6), ""
        return float(step // 500), ""  # epoch

    def row(self, run: FakeRun, metric: FakeMetric, step: int) -> dict[str, Any]:
        value, flag = self.value(run, metric, step)
        moment = datetime.fromtimestamp(run.step_time(step), UTC)
        if run.iso_times:
            time = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        else:
            time = moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
        return {
            "logName": metric.name,
            "logGroup": metric.group,
            "value": value,
            "valueFlag": flag,
            "time": time,
            # ClickHouse quotes UInt64 in JSON unless told not to: some rows
            # arrive as strings.
            "step": str(step) if step % 3 == 1 else step,
        }

    def rows(self, run: FakeRun, metric: FakeMetric, low: int, high: int | None, limit: float) -> list[dict[str, Any]]:
        last = run.last_step(self.sim.now())
        if last is None:
            return []
        top = last if high is None else min(last, high)
        first = -(-max(low, 0) // metric.every) * metric.every
        final = top // metric.every * metric.every
        if final < first:
            return []
        count = (final - first) // metric.every + 1
        picked = self.select(count, limit, (run.id, metric.name, first, final, limit))
        return [self.row(run, metric, first + i * metric.every) for i in picked]

    def select(self, count: int, limit: float, key: object) -> Sequence[int]:
        """0-based row numbers kept out of `count` matching rows."""
        if count <= limit:
            return range(count)
        if self.sampling == "reservoir":
            return sorted(random.Random(repr(key)).sample(range(count), int(limit)))
        # `rn % ceiling(total_rows / limit) = 1 OR rn = total_rows`, rn from 1.
        stride = math.ceil(count / limit)
        picked = list(range(0, count, stride))
        if picked[-1] != count - 1:
            picked.append(count - 1)
        return picked

    # --- endpoints ------------------------------------------------------------------

    def metrics(self, request: SimRequest) -> SimResponse:
        issues: list[dict[str, Any]] = []
        run_id = _number(request, "runId", issues, required=True)
        project = _string(request, "projectName", issues)
        limit = _number(request, "limit", issues, default=DEFAULT_METRICS_LIMIT, low=1, high=MAX_METRICS_LIMIT)
        step_min = _number(request, "stepMin", issues, low=0, integer=True)
        step_max = _number(request, "stepMax", issues, low=0, integer=True)
        if issues:
            return zod_error(issues)
        assert limit is not None
        run = self.runs.get(int(run_id)) if run_id is not None and float(run_id).is_integer() else None
        if run is None or project != PROJECT or run.start > self.sim.now():
            return SimResponse(200, {"metrics": []})
        log_name = request.param("logName")
        log_group = request.param("logGroup")
        rows: list[dict[str, Any]] = []
        for metric in sorted(run.metrics, key=lambda m: m.name):
            if log_name and metric.name != log_name:
                continue
            if log_group and metric.group != log_group:
                continue
            low = int(step_min) if step_min is not None else 0
            high = int(step_max) if step_max is not None else None
            rows.extend(self.rows(run, metric, low, high, limit))
        return SimResponse(200, {"metrics": rows})

    def list_runs(self, request: SimRequest) -> SimResponse:
        issues: list[dict[str, Any]] = []
        project = _string(request, "projectName", issues)
        limit = _number(request, "limit", issues, default=DEFAULT_LIST_LIMIT, low=1, high=MAX_LIST_LIMIT)
        offset = _number(request, "offset", issues, default=0, low=0)
        if issues:
            return zod_error(issues)
        assert limit is not None and offset is not None
        now = self.sim.now()
        runs = sorted(self.visible(now), key=lambda r: (r.start, r.id), reverse=True) if project == PROJECT else []
        page = runs[int(offset): int(offset) + int(limit)]
        numbers = {run.id: n for n, run in enumerate(sorted(self.runs.values(), key=lambda r: (r.start, r.id)), 1)}
        return SimResponse(200, {
            "runs": [self.run_payload(run, numbers[run.id], now) for run in page],
            "total": len(runs),
        })

    def run_payload(self, run: FakeRun, number: int, now: float) -> dict[str, Any]:
        finished = run.end is not None and now >= run.end
        status_changed = run.end if finished and run.end is not None else run.start
        last = run.last_step(now)
        updated = run.step_time(last) if last is not None else run.start
        return {
            "id": run.id,
            "name": run.name,
            "number": number,
            "displayId": f"RES-{number}",
            "status": run.status(now),
            "tags": ["sweep"] if run.name.startswith("sweep-") else [],
            "createdAt": _iso(run.start),
            "updatedAt": _iso(updated),
            "statusUpdated": _iso(status_changed),
        }

    def projects(self, request: SimRequest) -> SimResponse:
        count = len(self.visible(self.sim.now()))
        return SimResponse(200, {"projects": [{"name": PROJECT, "runCount": count}]})

    def metric_names(self, request: SimRequest) -> SimResponse:
        issues: list[dict[str, Any]] = []
        project = _string(request, "projectName", issues)
        run_id = _number(request, "runId", issues)
        if issues:
            return zod_error(issues)
        now = self.sim.now()
        runs: Iterable[FakeRun] = self.visible(now) if project == PROJECT else []
        if run_id is not None:
            runs = [r for r in runs if r.id == run_id]
        names = sorted({m.name for run in runs for m in run.metrics})
        return SimResponse(200, {"metricNames": names})


# --- @hono/zod-openapi style validation -------------------------------------------


def zod_error(issues: list[dict[str, Any]]) -> SimResponse:
    return SimResponse(400, {"success": False, "error": {"issues": issues, "name": "ZodError"}})


def _string(request: SimRequest, name: str, issues: list[dict[str, Any]]) -> str | None:
    value = request.param(name)
    if value is None:
        issues.append({"code": "invalid_type", "expected": "string", "received": "undefined",
                       "path": [name], "message": "Required"})
    return value


def _number(
    request: SimRequest,
    name: str,
    issues: list[dict[str, Any]],
    *,
    required: bool = False,
    default: float | None = None,
    low: float | None = None,
    high: float | None = None,
    integer: bool = False,
) -> float | None:
    """`z.coerce.number()` with the bounds of the route's schema."""
    raw = request.param(name)
    if raw is None or raw == "":
        if required:
            issues.append({"code": "invalid_type", "expected": "number", "received": "nan",
                           "path": [name], "message": "Expected number, received nan"})
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        issues.append({"code": "invalid_type", "expected": "number", "received": "nan",
                       "path": [name], "message": "Expected number, received nan"})
        return None
    if integer and not value.is_integer():
        issues.append({"code": "invalid_type", "expected": "integer", "received": "float",
                       "path": [name], "message": "Expected integer, received float"})
        return None
    if low is not None and value < low:
        issues.append({"code": "too_small", "minimum": low, "type": "number", "inclusive": True, "exact": False,
                       "path": [name], "message": f"Number must be greater than or equal to {low:g}"})
        return None
    if high is not None and value > high:
        issues.append({"code": "too_big", "maximum": high, "type": "number", "inclusive": True, "exact": False,
                       "path": [name], "message": f"Number must be less than or equal to {high:g}"})
        return None
    return value


def _iso(ts: float) -> str:
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
