"""Fake of the k6 Cloud REST v2 test-run endpoints (seed 004, API_NOTES.md).

Three test runs, deterministic from the seed and time-varying with the clock:

- 103054: running for 30 minutes against test.k6.io (home, news and login
  pages, a share of logins refused with 403), an integer metric id and
  values sent as JSON strings, as the API does;
- 103055: finished an hour ago (its series stop at its end);
- every series holds a point every 15 s from its run's start (at most the
  newest hour of them);
- 103056: 150 metrics, to exercise paging and batching.

With `hostile_fixtures` (tests only, never the demo) run 103054 also has
URLs with hostile tag values (quotes, a newline, unicode, a backslash), a tag
key that needs sanitising, a tag named like one of our labels and a metric
whose series has no values.

Like the real API: `Authorization: Token <t>` (401 with codes 5/6), 404 with
code 3 for an unknown run or metric, 400 with code 2 and `field_errors` for bad
parameters, more than 50 `ids[]` refused, `page_size` capped at 100.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from exporter.simulator.common import SIMULATOR_TOKEN, SimRequest, SimResponse, bearer_token, deterministic

if TYPE_CHECKING:
    from exporter.simulator.server import Simulator

STEP = 15.0  # seconds between series points
# A series is served from its run's start, as the API serves a run's whole
# series, but at most its newest hour: a load test's length, and a bound on
# what a demo that runs for days asks of the exporter.
POINTS = 241
MAX_IDS = 50
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20

STATS = {
    "trend": {"avg": 1.0, "min": 0.3, "max": 3.2, "mean": 1.0, "median": 0.9, "std": 0.4,
              "0.75": 1.2, "0.9": 1.5, "0.95": 1.8, "0.99": 2.5, "0.999": 2.9, "0.9999": 3.1},
    "counter": {"count": 1.0, "rps": 1.0},
    "rate": {"rate": 1.0},
    "gauge": {"value": 1.0},
}
DEFAULT_METHOD = {"trend": "avg", "counter": "count", "rate": "rate", "gauge": "value"}

# Tag values of the hostile fixtures (see hostile_metrics).
HOSTILE_URL = 'https://test.k6.io/login?next="/my account"\nline2'
UNICODE_URL = "https://test.k6.io/ünïcödé/路径\\back"
EMPTY_METRIC = "ws_session_duration"


@dataclass
class FakeMetric:
    id: Any
    name: str
    type: str
    contains: str
    tags: dict[str, str]
    base: float
    strings: bool = False  # send values as JSON strings
    empty: bool = False  # series with no values

    def payload(self, run: int) -> dict[str, Any]:
        return {
            "check_id": None, "contains": self.contains, "group_id": _hex(run, "group"),
            "id": self.id, "name": self.name, "project_id": 123, "tags": self.tags,
            "test_run_id": run, "type": self.type, "url_id": None,
        }


@dataclass
class FakeThreshold:
    id: int
    name: str
    metric: str
    stat: str
    limit: float
    contains: str
    tainted: bool


@dataclass
class FakeRun:
    id: int
    start: float
    end: float | None
    metrics: list[FakeMetric] = field(default_factory=list)
    thresholds: list[FakeThreshold] = field(default_factory=list)

    def last_time(self, now: float) -> float:
        return min(now, self.end) if self.end is not None else now


def _hex(*parts: object) -> str:
    return hashlib.md5(repr(parts).encode()).hexdigest()  # noqa: S324 - ids, not security


def _metric(run: int, name: str, type_: str, contains: str, tags: dict[str, str], base: float, **kw: Any) -> FakeMetric:
    return FakeMetric(_hex(run, name, sorted(tags.items())), name, type_, contains, tags, base, **kw)


def build_runs(anchor: float, hostile: bool = False) -> dict[int, FakeRun]:
    home = {"method": "GET", "status": "200", "url": "https://test.k6.io/", "expected_response": "true"}
    news = {"method": "GET", "status": "200", "url": "https://test.k6.io/news.php", "expected_response": "true"}
    login = {"method": "POST", "status": "200", "url": "https://test.k6.io/login.php", "expected_response": "true"}
    refused = {**login, "status": "403", "expected_response": "false"}
    live = FakeRun(103054, anchor - 1800, None)
    live.metrics = [
        _metric(103054, "http_req_duration", "trend", "time", home, 120.0),
        _metric(103054, "http_req_duration", "trend", "time", news, 180.0),
        _metric(103054, "http_req_duration", "trend", "time", login, 340.0),
        _metric(103054, "http_req_duration", "trend", "time", refused, 90.0),
        _metric(103054, "http_reqs", "counter", "default", home, 40.0),
        _metric(103054, "http_reqs", "counter", "default", news, 20.0),
        _metric(103054, "http_reqs", "counter", "default", login, 8.0),
        _metric(103054, "http_reqs", "counter", "default", refused, 0.4, strings=True),
        _metric(103054, "iteration_duration", "trend", "time", {}, 1500.0),
        _metric(103054, "checks", "rate", "default", {"check": "status is 200"}, 0.97),
        _metric(103054, "http_req_failed", "rate", "default", {}, 0.02),
        _metric(103054, "data_received", "counter", "data", {}, 52000.0, strings=True),
        FakeMetric(4242, "vus", "gauge", "default", {}, 50.0),
    ]
    if hostile:
        live.metrics += hostile_metrics()
    live.thresholds = [
        FakeThreshold(166100, "p(95)<500", "http_req_duration", "0.95", 500.0, "time", False),
        FakeThreshold(166101, "rate<0.01", "http_req_failed", "rate", 0.01, "default", True),
        FakeThreshold(166102, "count>200", "iterations", "count", 200.0, "default", False),
    ]
    done = FakeRun(103055, anchor - 7200, anchor - 3600)
    done.metrics = [
        _metric(103055, "http_req_duration", "trend", "time", home, 95.0),
        _metric(103055, "http_reqs", "counter", "default", home, 25.0),
        _metric(103055, "vus", "gauge", "default", {}, 20.0),
    ]
    done.thresholds = [FakeThreshold(166200, "p(99)<1500", "http_req_duration", "0.99", 1500.0, "time", False)]
    wide = FakeRun(103056, anchor - 600, None)
    wide.metrics = [
        _metric(103056, "http_req_duration", "trend", "time",
                {**home, "url": f"https://test.k6.io/pi.php?decimals={i}"}, 50.0 + i)
        for i in range(150)
    ]
    return {run.id: run for run in (live, done, wide)}


def hostile_metrics() -> list[FakeMetric]:
    """Test fixtures for escaping, sanitising and label collisions: what a
    careless test script can send, not what a demo should show."""
    login = {"method": "POST", "status": "400", "url": HOSTILE_URL, "expected_response": "false"}
    odd = {"method": "GET", "status": "200", "url": UNICODE_URL, "my-tag.name": 'va"l\\ue', "stat": "collides"}
    return [
        _metric(103054, "http_req_duration", "trend", "time", login, 340.0),
        _metric(103054, "http_req_duration", "trend", "time", odd, 80.0),
        _metric(103054, "http_reqs", "counter", "default", login, 3.0, strings=True),
        _metric(103054, EMPTY_METRIC, "trend", "time", {}, 900.0, empty=True),
    ]


class K6CloudFake:
    prefix = "k6"

    def __init__(self, simulator: Simulator) -> None:
        self.sim = simulator
        anchor = math.floor(simulator.started_at / 60) * 60
        self.runs = build_runs(anchor, hostile=simulator.hostile_fixtures)
        self.routes: list[tuple[str, re.Pattern[str], Any]] = [
            ("GET", re.compile(r"/loadtests/v2/metrics"), self.list_metrics),
            ("GET", re.compile(r"/loadtests/v2/metrics/(?P<id>[^/]+)"), self.read_metric),
            ("GET", re.compile(r"/loadtests/v2/series"), self.series),
            ("GET", re.compile(r"/loadtests/v2/thresholds"), self.list_thresholds),
            ("GET", re.compile(r"/loadtests/v2/thresholds/(?P<id>\d+)"), self.read_threshold),
            ("GET", re.compile(r"/loadtests/v2/run-overviews"), self.overview),
            ("POST", re.compile(r"/loadtests/v2/runs/(?P<id>\d+)/export"), self.export),
        ]

    # --- plumbing -------------------------------------------------------------

    def handle(self, request: SimRequest) -> SimResponse:
        token = bearer_token(request, "Token")
        if token is None:
            return error(401, 5, "Authentication credentials were not provided.")
        if token != SIMULATOR_TOKEN:
            return error(401, 6, "Invalid token.")
        for method, pattern, handler in self.routes:
            match = pattern.fullmatch(request.path)
            if match and method == request.method:
                response: SimResponse = handler(request, **match.groupdict())
                return response
        return SimResponse(404, b"<h1>Not Found</h1>", {"Content-Type": "text/html"})

    def _run(self, request: SimRequest) -> FakeRun | SimResponse:
        raw = request.param("test_run_id")
        if raw is None:
            return error(400, 2, "Validation error.", {"test_run_id": ["This field is required."]})
        if not raw.lstrip("-").isdigit():
            return error(400, 2, "Validation error.", {"test_run_id": ["A valid integer is required."]})
        run = self.runs.get(int(raw))
        return run if run is not None else error(404, 3, "Not found.")

    # --- data ---------------------------------------------------------------

    def value(self, run: FakeRun, metric: FakeMetric, method: str, ts: float) -> float:
        # One phase per metric, so that avg <= p95 <= max holds at every instant.
        phase = deterministic(self.sim.seed, run.id, str(metric.id)) * 2 * math.pi
        wave = 1 + 0.25 * math.sin(2 * math.pi * ts / 600 + phase)
        if metric.type == "trend":
            return round(metric.base * STATS["trend"][method] * wave, 3)
        if metric.type == "counter":
            if method == "count":
                return float(round(metric.base * (ts - run.start)))
            return round(metric.base * wave, 3)
        if metric.type == "rate":
            return round(min(1.0, metric.base * wave), 4)
        return float(round(metric.base * wave))

    def points(self, run: FakeRun, metric: FakeMetric, method: str) -> list[dict[str, Any]]:
        if metric.empty:
            return []
        last = math.floor(run.last_time(self.sim.now()) / STEP) * STEP
        times = [last - STEP * i for i in range(POINTS) if last - STEP * i >= run.start]
        # Oldest first, as the doc's example; the client must not rely on it.
        points = []
        for ts in reversed(times):
            value: Any = self.value(run, metric, method, ts)
            points.append({"timestamp": _iso(ts), "value": str(value) if metric.strings else value})
        return points

    def overview_payload(self, run: FakeRun) -> dict[str, Any]:
        elapsed = max(0.0, run.last_time(self.sim.now()) - run.start)
        hits = int(elapsed * 24)
        failed_checks = int(hits * 0.01)
        return {
            "checks_hits_successes": hits - failed_checks, "checks_hits_total": hits,
            "checks_successes": 1, "checks_total": 2,
            "http_req_duration_avg": round(110 + 10 * math.sin(elapsed / 300), 4),
            "http_reqs_avg": round(hits / max(elapsed, 1) * 2, 4),
            "test_run_id": run.id,
            "thresholds_successes": sum(not t.tainted for t in run.thresholds),
            "thresholds_total": len(run.thresholds),
            "urls_hits_successes": hits * 2 - failed_checks, "urls_hits_total": hits * 2,
            "urls_successes": len({m.tags.get("url") for m in run.metrics if m.tags.get("url")}) - 1,
            "urls_total": len({m.tags.get("url") for m in run.metrics if m.tags.get("url")}),
        }

    def threshold_payload(self, run: FakeRun, t: FakeThreshold, id_key: str) -> dict[str, Any]:
        end = run.last_time(self.sim.now())
        phase = deterministic(self.sim.seed, run.id, t.id)
        # A threshold passes below its limit for "<" and above it for ">".
        passing = (0.4 + 0.4 * phase) if "<" in t.name else (2.0 + phase)
        failing = 1.6 if "<" in t.name else 0.5
        calculated = round(t.limit * (failing if t.tainted else passing) * (1 + 0.1 * math.sin(end / 300)), 4)
        return {
            "calc_state": {
                "max_created_at": _space_iso(end + 0.348933),
                "max_time": _space_iso(end), "min_time": _space_iso(run.start), "tainted_value": None,
            },
            "calculated_value": calculated, "id": t.id, "metric_id": f"threshold_{t.id}",
            "name": t.name, "stat": t.stat, "tainted": t.tainted,
            "tainted_at": _iso(end) if t.tainted else None, id_key: run.id, "value": t.limit,
        }

    def threshold_metric(self, run: FakeRun, t: FakeThreshold) -> dict[str, Any]:
        return {
            "check_id": None, "contains": t.contains, "group_id": _hex(run.id, "group"),
            "id": f"threshold_{t.id}", "name": t.metric, "project_id": 123, "tags": {},
            "test_run_id": run.id, "type": "trend" if t.contains == "time" else "rate", "url_id": None,
        }

    # --- endpoints ------------------------------------------------------------

    def list_metrics(self, request: SimRequest) -> SimResponse:
        run = self._run(request)
        if isinstance(run, SimResponse):
            return run
        try:
            page = int(request.param("page") or 1)
            size = min(MAX_PAGE_SIZE, int(request.param("page_size") or DEFAULT_PAGE_SIZE))
        except ValueError:
            return error(400, 2, "Validation error.", {"page": ["A valid integer is required."]})
        if page < 1 or size < 1:
            return error(404, 3, "Invalid page.")
        items = run.metrics[(page - 1) * size: page * size]
        if not items and page > 1:
            return error(404, 3, "Invalid page.")
        return SimResponse(200, {"k6-metrics": [m.payload(run.id) for m in items], "meta": {"count": len(run.metrics)}})

    def read_metric(self, request: SimRequest, id: str) -> SimResponse:  # noqa: A002
        run = self._run(request)
        if isinstance(run, SimResponse):
            return run
        for metric in run.metrics:
            if str(metric.id) == id:
                return SimResponse(200, {"k6-metric": metric.payload(run.id)})
        return error(404, 3, "Not found.")

    def series(self, request: SimRequest) -> SimResponse:
        run = self._run(request)
        if isinstance(run, SimResponse):
            return run
        ids = request.query.get("ids[]", [])
        if not ids:
            return error(400, 2, "Validation error.", {"ids": ["This field is required."]})
        if len(ids) > MAX_IDS:
            too_many = f"Ensure this field has no more than {MAX_IDS} elements."
            return error(400, 2, "Validation error.", {"ids": [too_many]})
        method = request.param("method")
        if method is not None and not any(method in stats for stats in STATS.values()):
            return error(400, 2, "Validation error.", {"method": [f"Unknown method {method!r}."]})
        wanted = set(ids)
        series = []
        for metric in run.metrics:
            if str(metric.id) not in wanted:
                continue
            chosen = method or DEFAULT_METHOD[metric.type]
            if chosen not in STATS[metric.type]:
                continue
            series.append({
                "agg": {}, "id": _hex(run.id, metric.id, chosen), "method": chosen,
                "metric_id": metric.id, "test_run_id": run.id, "values": self.points(run, metric, chosen),
            })
        return SimResponse(200, {"k6-serie": series})

    def list_thresholds(self, request: SimRequest) -> SimResponse:
        run = self._run(request)
        if isinstance(run, SimResponse):
            return run
        wanted = set(request.query.get("ids[]", []))
        chosen = [t for t in run.thresholds if not wanted or str(t.id) in wanted]
        return SimResponse(200, {
            "k6-metrics": [self.threshold_metric(run, t) for t in chosen],
            "k6-thresholds": [self.threshold_payload(run, t, "testrun_id") for t in chosen],
        })

    def read_threshold(self, request: SimRequest, id: str) -> SimResponse:  # noqa: A002
        run = self._run(request)
        if isinstance(run, SimResponse):
            return run
        for t in run.thresholds:
            if str(t.id) == id:
                return SimResponse(200, {"k6-threshold": self.threshold_payload(run, t, "test_run_id")})
        return error(404, 3, "Not found.")

    def overview(self, request: SimRequest) -> SimResponse:
        run = self._run(request)
        if isinstance(run, SimResponse):
            return run
        return SimResponse(200, {"k6-run-overviews": [self.overview_payload(run)]})

    def export(self, request: SimRequest, id: str) -> SimResponse:  # noqa: A002
        if int(id) not in self.runs:
            return error(404, 3, "Not found.")
        return SimResponse(200, {"exports": [{"export_status": 1, "load_test_run_id": int(id)}]})


def error(status: int, code: int, message: str, field_errors: dict[str, list[str]] | None = None) -> SimResponse:
    body: dict[str, Any] = {"message": message, "code": code}
    if field_errors:
        body["field_errors"] = field_errors
    return SimResponse(status, {"error": body})


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _space_iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat(sep=" ")
