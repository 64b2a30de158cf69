"""Fake of the Flux metrics API (seed 003), in both dialects of API_NOTES.md.

    GET /api/v1/metrics                  list the metric definitions
    GET /api/v1/metrics/{name}           one definition (404 for an unknown name)
    GET /api/v1/metrics/{name}/query     a time series, bucketed

`dialect = "documented"` answers like the doc: `from`/`to`/`interval`,
several aggregations at once (`aggregation=p50,p95`), `group_by=tags.k`
(several keys comma-separated; a group's name is then the tag values joined
by ","), `{"data": {"series": [...]}}` or `{"data": {"groups": {...}}}`, and
404 for an unknown metric. `dialect = "opensource"` answers like the
open-source server: `since` (`30m`, `2h`, `1d`, `1w`) and `bucket` (`1 minute`,
`5 minutes`, `1 hour`, `1 day`), one aggregation per request, `group_by`
ignored, `{"metric", "aggregation", "data": [{"time", "value", "count"}],
"since", "bucket"}`, and 200 with empty data for an unknown metric. Both
validate the aggregation against the metric's type (400), filter by
`tags[key]=value`, omit empty buckets and read the key from `Authorization:
Bearer` or `X-API-Key` (401 `{"error": "Missing API key"}` / `{"error":
"Invalid API key"}`).

The data: every metric has one series per combination of its tag values, and
every series has deterministic raw events per minute (gauges two readings,
counters increments of 1–3, distributions 1–6 observations, none in a share
`idle` of minutes (0 for the demo's metrics), sets 0–4 member ids).
Aggregations are computed from those events, so buckets of any size, filters
and groups agree with each other; only events up to the simulator clock
exist, so the open bucket grows.

A limiter per API key allows `rate_limit` requests in any window of
`rate_window` seconds (60 per 60 s, the documented query limit; it counts
every read, which is stricter than the doc) and answers 429 with
`Retry-After` beyond. `metrics` may be edited by tests; `add_bulk(n)` adds
many metrics at once.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from exporter.simulator.common import SIMULATOR_TOKEN, SimRequest, SimResponse
from exporter.sources.kit.periods import rfc3339
from exporter.sources.kit.timeparse import parse_timestamp

if TYPE_CHECKING:
    from exporter.simulator.server import Simulator

AGGREGATIONS = {
    "gauge": ("last", "avg", "min", "max"),
    "counter": ("sum", "rate"),
    "distribution": ("avg", "sum", "min", "max", "p50", "p90", "p95", "p99", "count"),
    "set": ("count",),
}
INTERVALS = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400}
BUCKETS = {"1 minute": 60, "5 minutes": 300, "1 hour": 3600, "1 day": 86400}
SINCE = re.compile(r"(\d+)([mhdw])")
SINCE_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_BUCKETS = 20_000
PATH = re.compile(r"/api/v1/metrics(?:/(?P<name>[^/]+)(?P<query>/query)?)?")


@dataclass(frozen=True)
class FakeMetric:
    name: str
    type: str
    tags: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unit: str = ""
    description: str = ""
    level: float = 100.0  # typical value: gauges' level, distributions' median
    # Distributions: the share of minutes with no observation (their min, max,
    # avg and quantiles are then absent). The demo's are busy: none.
    idle: float = 0.15

    def series(self) -> list[tuple[tuple[str, str], ...]]:
        keys = sorted(self.tags)
        return [tuple(zip(keys, values, strict=True)) for values in itertools.product(*(self.tags[k] for k in keys))]


DEFAULT_METRICS = (
    FakeMetric("api.response_time", "distribution",
               {"endpoint": ("/users", "/orders"), "method": ("GET", "POST")}, "ms", "API response time", 120.0,
               idle=0.0),
    FakeMetric("api.requests", "counter", {"endpoint": ("/users", "/orders"), "status": ("200", "500")},
               "", "API requests"),
    FakeMetric("users.online", "gauge", {"region": ("eu", "us")}, "", "Users online", 240.0),
    FakeMetric("daily_active_users", "set", {"plan": ("free", "pro")}, "", "Distinct active users"),
    FakeMetric("queue.depth", "gauge", {}, "", "Jobs waiting", 12.0),
    FakeMetric("payload.size", "distribution", {}, "bytes", "Request body size", 2048.0, idle=0.0),
)


@functools.lru_cache(maxsize=500_000)
def events(seed: int, name: str, kind: str, level: float, series: tuple[tuple[str, str], ...],
           minute: int, idle: float = 0.15) -> tuple[tuple[float, float | str], ...]:
    """The raw events of one series in one minute: `(time, value)` pairs."""
    rng = random.Random(f"{seed}|{name}|{series}|{minute}")
    start = minute * 60.0
    if kind == "gauge":
        phase = rng.random()
        wave = math.sin(2 * math.pi * (minute / 60.0 + phase))
        return tuple((start + offset, round(level * (1 + 0.2 * wave) + rng.uniform(-1, 1), 3))
                     for offset in (15.0, 45.0))
    if kind == "counter":
        n = rng.randint(0, 8)
        return tuple((start + (j + 0.5) * 60 / n, float(rng.randint(1, 3))) for j in range(n))
    if kind == "distribution":
        n = 0 if rng.random() < idle else rng.randint(1, 6)
        return tuple((start + (j + 0.5) * 60 / n, round(rng.lognormvariate(math.log(level), 0.5), 2))
                     for j in range(n))
    n = rng.randint(0, 4)  # set
    return tuple((start + (j + 0.5) * 60 / n, f"user_{rng.randrange(40)}") for j in range(n))


def aggregate(kind: str, aggregation: str, values: list[float | str], seconds: float) -> float:
    """One aggregation over the values of one bucket (never empty)."""
    if kind == "set":
        return float(len(set(values)))
    numbers = sorted(float(v) for v in values)
    if aggregation == "count":
        return float(len(numbers))
    if aggregation == "sum":
        return math.fsum(numbers)
    if aggregation == "rate":
        return math.fsum(numbers) / seconds
    if aggregation == "avg":
        return math.fsum(numbers) / len(numbers)
    if aggregation == "min":
        return numbers[0]
    if aggregation == "max":
        return numbers[-1]
    if aggregation == "last":
        return float(values[-1])
    # pNN: nearest rank
    rank = math.ceil(int(aggregation[1:]) / 100 * len(numbers))
    return numbers[max(rank, 1) - 1]


class Limiter:
    """At most `limit` accepted requests per key in any window of `window` seconds."""

    def __init__(self) -> None:
        self.limit = 60
        self.window = 60.0
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def admit(self, key: str, at: float) -> float | None:
        """None when admitted, else the seconds until a request would be."""
        with self._lock:
            seen = self._seen.setdefault(key, deque())
            while seen and seen[0] <= at - self.window:
                seen.popleft()
            if len(seen) >= self.limit:
                return seen[-self.limit] + self.window - at
            seen.append(at)
            return None


class FluxFake:
    prefix = "flux"

    def __init__(self, simulator: Simulator) -> None:
        self.sim = simulator
        self.dialect = "documented"
        self.api_keys = {SIMULATOR_TOKEN}
        self.metrics: dict[str, FakeMetric] = {m.name: m for m in DEFAULT_METRICS}
        self.limiter = Limiter()

    # --- control --------------------------------------------------------------------

    @property
    def rate_limit(self) -> tuple[int, float]:
        return self.limiter.limit, self.limiter.window

    @rate_limit.setter
    def rate_limit(self, value: tuple[int, float]) -> None:
        self.limiter.limit, self.limiter.window = value[0], float(value[1])

    def add(self, metric: FakeMetric) -> None:
        self.metrics[metric.name] = metric

    def add_bulk(self, count: int, prefix: str = "bulk.metric", kind: str = "gauge") -> list[str]:
        names = [f"{prefix}_{i:04d}" for i in range(count)]
        for i, name in enumerate(names):
            self.add(FakeMetric(name, kind, {}, "", "bulk", 10.0 + i))
        return names

    # --- data -------------------------------------------------------------------------

    def buckets(self, metric: FakeMetric, start: float, end: float, seconds: int,
                filters: dict[str, str], group_by: list[str]) -> dict[str, dict[float, list[float | str]]]:
        """`{group name: {bucket start: values}}` of events in [start, end)."""
        end = min(end, self.sim.now())
        timed: dict[str, dict[float, list[tuple[float, float | str]]]] = {}
        if end <= start:
            return {}
        for series in metric.series():
            tags = dict(series)
            if any(tags.get(k) != v for k, v in filters.items()):
                continue
            group = timed.setdefault(",".join(tags.get(k, "") for k in group_by), {})
            for minute in range(math.floor(start / 60), math.ceil(end / 60)):
                for ts, value in events(self.sim.seed, metric.name, metric.type, metric.level, series, minute,
                                        metric.idle):
                    if start <= ts < end:
                        group.setdefault(ts - ts % seconds, []).append((ts, value))
        # Values in time order (for `last`), without their times.
        return {name: {bucket: [v for _, v in sorted(pairs, key=lambda p: p[0])] for bucket, pairs in sorted(b.items())}
                for name, b in timed.items()}

    # --- endpoints ----------------------------------------------------------------------

    def handle(self, request: SimRequest) -> SimResponse:
        auth = request.headers.get("authorization", "")
        key = auth[len("Bearer "):] if auth.startswith("Bearer ") else request.headers.get("x-api-key")
        if key is None:
            key = request.param("api_key")  # the server accepts it; the exporter must never send it
        if not key:
            return SimResponse(401, {"error": "Missing API key"})
        if key not in self.api_keys:
            return SimResponse(401, {"error": "Invalid API key"})
        match = PATH.fullmatch(request.path)
        if match is None or request.method != "GET":
            return SimResponse(404, {"error": "Not found"})
        wait = self.limiter.admit(key, request.received_at)
        if wait is not None:
            return SimResponse(429, {"error": "Rate limit exceeded"}, {"Retry-After": str(max(1, math.ceil(wait)))})
        if match["name"] is None:
            return self.list()
        name = unquote(match["name"])
        if match["query"]:
            return self.query(name, request)
        return self.definition(name)

    def _describe(self, metric: FakeMetric) -> dict[str, Any]:
        if self.dialect == "opensource":
            return {"name": metric.name, "display_name": metric.name.replace(".", " ").replace("_", " ").title(),
                    "type": metric.type, "unit": metric.unit, "description": metric.description}
        return {"name": metric.name, "type": metric.type, "tags": sorted(metric.tags),
                "first_seen": rfc3339(self.sim.started_at - 30 * 86400), "last_seen": rfc3339(self.sim.now())}

    def list(self) -> SimResponse:
        described = [self._describe(m) for m in self.metrics.values()]
        return SimResponse(200, {"metrics": described} if self.dialect == "opensource" else {"data": described})

    def definition(self, name: str) -> SimResponse:
        metric = self.metrics.get(name)
        if metric is None:
            return SimResponse(404, {"error": "Metric not found"})
        if self.dialect == "opensource":
            return SimResponse(200, {"metric": self._describe(metric)})
        return SimResponse(200, {"data": {**self._describe(metric), "data_points": 1234567}})

    def query(self, name: str, request: SimRequest) -> SimResponse:
        metric = self.metrics.get(name)
        filters = {m[1]: values[0] for k, values in request.query.items() if (m := re.fullmatch(r"tags\[(.+)\]", k))}
        if self.dialect == "opensource":
            return self._query_opensource(name, metric, request, filters)
        if metric is None:
            return SimResponse(404, {"error": "Metric not found"})
        aggregations = (request.param("aggregation") or AGGREGATIONS[metric.type][0]).split(",")
        for aggregation in aggregations:
            if aggregation not in AGGREGATIONS[metric.type]:
                return invalid_aggregation(aggregation, metric)
        interval = request.param("interval") or "1h"
        if interval not in INTERVALS:
            return SimResponse(400, {"error": f"Invalid interval '{interval}' (valid: {', '.join(INTERVALS)})"})
        try:
            end = parse_timestamp(request.param("to") or rfc3339(self.sim.now()))
            start = parse_timestamp(request.param("from") or rfc3339(end - 86400))
        except ValueError as exc:
            return SimResponse(400, {"error": f"Invalid timestamp: {exc}"})
        seconds = INTERVALS[interval]
        if (end - start) / seconds > MAX_BUCKETS:
            return SimResponse(400, {"error": f"Time range too large for interval {interval}"})
        group_by = [k.removeprefix("tags.") for k in (request.param("group_by") or "").split(",") if k]
        grouped = self.buckets(metric, start, end, seconds, filters, group_by)

        def points(buckets: dict[float, list[float | str]]) -> list[dict[str, Any]]:
            out = []
            for bucket, values in buckets.items():
                point: dict[str, Any] = {"timestamp": rfc3339(bucket)}
                for aggregation in aggregations:
                    value = aggregate(metric.type, aggregation, values, seconds)
                    point["value" if len(aggregations) == 1 else aggregation] = value
                out.append(point)
            return out

        if group_by:
            return SimResponse(200, {"data": {"groups": {g: points(b) for g, b in grouped.items()}}})
        data: dict[str, Any] = {"name": metric.name}
        if len(aggregations) == 1:
            data["aggregation"] = aggregations[0]
        data["interval"] = interval
        data["series"] = points(grouped.get("", {}))
        return SimResponse(200, {"data": data})

    def _query_opensource(self, name: str, metric: FakeMetric | None, request: SimRequest,
                          filters: dict[str, str]) -> SimResponse:
        aggregation = request.param("aggregation") or "avg"
        known = {a for aggs in AGGREGATIONS.values() for a in aggs}
        if aggregation not in known or (metric is not None and aggregation not in AGGREGATIONS[metric.type]):
            if metric is None:
                return SimResponse(400, {"error": f"Invalid aggregation '{aggregation}'"})
            return invalid_aggregation(aggregation, metric)
        since = request.param("since") or "1h"
        match = SINCE.fullmatch(since)
        if match is None:
            return SimResponse(400, {"error": f"Invalid since '{since}' (e.g. 30m, 2h, 1d, 1w)"})
        bucket = request.param("bucket") or "1 hour"
        if bucket not in BUCKETS:
            return SimResponse(400, {"error": f"Invalid bucket '{bucket}' (valid: {', '.join(BUCKETS)})"})
        seconds = BUCKETS[bucket]
        now = self.sim.now()
        start = now - int(match[1]) * SINCE_SECONDS[match[2]]
        if (now - start) / seconds > MAX_BUCKETS:
            return SimResponse(400, {"error": f"Time range too large for bucket {bucket}"})
        data = []
        if metric is not None:
            buckets = self.buckets(metric, start, now, seconds, filters, []).get("", {})
            data = [{"time": rfc3339(b), "value": aggregate(metric.type, aggregation, values, seconds),
                     "count": len(values)} for b, values in buckets.items()]
        return SimResponse(200, {"metric": name, "aggregation": aggregation, "data": data,
                                 "since": since, "bucket": bucket})


def invalid_aggregation(aggregation: str, metric: FakeMetric) -> SimResponse:
    valid = ", ".join(AGGREGATIONS[metric.type])
    return SimResponse(400, {"error": f"Invalid aggregation '{aggregation}' for {metric.type} metric "
                                      f"'{metric.name}' (valid: {valid})"})
