"""k6 Cloud REST v2 test-run metrics (seed 004; quirks from API_NOTES.md).

For each test run (one target) a poll calls:

    GET /loadtests/v2/metrics?test_run_id=R&page=N&page_size=M     all metrics, paged
    GET /loadtests/v2/series?test_run_id=R&ids[]=..&method=STAT    latest series values
    GET /loadtests/v2/thresholds?test_run_id=R                      thresholds + their metrics
    GET /loadtests/v2/run-overviews?test_run_id=R                   run overview

and exports, for example:

    k6_http_req_duration_seconds{test_run_id="103054",stat="0.95",method="GET",url="https://test.k6.io/"} 0.213
    k6_http_reqs{test_run_id="103054",stat="rps",method="GET",status="200",url="https://test.k6.io/"} 41.5
    k6_cloud_threshold_failed{test_run_id="103054",threshold="p(95)<500",stat="0.95",metric="http_req_duration"} 0
    k6_cloud_run_checks{test_run_id="103054",state="succeeded"} 2

Interpretations of the doc (see also docs/metrics.md):
- `contains: "time"` values are milliseconds (k6 reports trends in ms); they are
  divided by 1000 and the family gets `_seconds`. `contains: "data"` values are
  bytes and get `_bytes`. Other `contains` values are exported as sent.
- A series' `method` (not the one we asked for) becomes the `stat` label, so a
  server that ignores `method=` still yields correctly labelled series.
- `values` may be empty (no sample), hold numbers or numeric strings, and are
  not guaranteed sorted: the point with the newest timestamp wins.
- Metric ids are ints or strings (`threshold_166100`); both are kept as strings.
- Thresholds name their run `testrun_id` in lists and `test_run_id` elsewhere;
  we never need either, the target id is the label.
- 410, or a 404 without k6's error envelope, means the endpoint itself is gone
  (the vendor deprecated v2 for v6): reason `retired`. A 404 with the envelope
  (code 3) is an unknown test run: reason `not_found`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import operator
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Any, ClassVar, Literal, NotRequired, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveInt,
    SecretStr,
    TypeAdapter,
    field_validator,
    with_config,
)
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from exporter.config.source import SourceConfigBase
from exporter.errors import EndpointRetired, PollError, UpstreamHTTPError
from exporter.model import Family, Kind, Labels, Sample
from exporter.sources.base import Source, SourceContext, Target
from exporter.sources.kit.naming import label_name, metric_name, with_unit
from exporter.sources.kit.payloads import coded_error, list_field, parse_payload, read_body
from exporter.sources.kit.timeparse import parse_timestamp

log = logging.getLogger(__name__)
T = TypeVar("T")

API = "/loadtests/v2"

# Series `method` values the API accepts per metric type (API_NOTES.md).
ALLOWED_STATS: dict[str, frozenset[str]] = {
    "trend": frozenset(
        {"avg", "min", "max", "mean", "median", "std", "0.75", "0.9", "0.95", "0.99", "0.999", "0.9999"}
    ),
    "counter": frozenset({"count", "rps"}),
    "rate": frozenset({"rate"}),
    "gauge": frozenset({"value"}),
}
DEFAULT_STATS: dict[str, list[str]] = {
    "trend": ["avg", "0.95", "0.99", "max"],
    "counter": ["count", "rps"],
    "rate": ["rate"],
    "gauge": ["value"],
}
# Labels the source sets itself; a k6 tag with one of these keys is exported as `tag_<key>`.
RESERVED_LABELS = frozenset({"test_run_id", "stat"})
UNIT_BY_CONTAINS = {"time": "seconds", "data": "bytes"}
SCALE_BY_CONTAINS = {"time": 0.001}


class K6CloudConfig(SourceConfigBase):
    """`type = "k6_cloud"`: one target per test run."""

    type: Literal["k6_cloud"]
    token: SecretStr | None = None
    test_run_ids: list[PositiveInt] = Field(min_length=1)
    # Statistics asked per metric type; a type left out keeps its default.
    stats: dict[Literal["trend", "counter", "rate", "gauge"], list[str]] = Field(
        default_factory=lambda: dict(DEFAULT_STATS)  # type: ignore[arg-type]  # the keys are those literals
    )
    page_size: int = Field(default=100, ge=1, le=1000)
    series_batch_size: int = Field(default=20, ge=1, le=500)

    @field_validator("stats")
    @classmethod
    def _known_stats(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for metric_type, stats in value.items():
            unknown = sorted(set(stats) - ALLOWED_STATS[metric_type])
            if unknown:
                allowed = ", ".join(sorted(ALLOWED_STATS[metric_type]))
                raise ValueError(f"{metric_type}: unknown stat(s) {', '.join(unknown)}; allowed: {allowed}")
        return {**DEFAULT_STATS, **value}

    def target_ids(self) -> list[str]:
        return [str(run) for run in dict.fromkeys(self.test_run_ids)]


# --- upstream payloads ------------------------------------------------------

def _to_str(value: Any) -> Any:
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


IdStr = Annotated[str, BeforeValidator(_to_str)]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore")


class K6Metric(_Payload):
    id: IdStr
    name: str
    type: str = ""
    contains: str | None = None
    tags: dict[str, Any] | None = None


# Series answers are the bulk of a poll (thousands of points): they are read
# straight from the body into TypedDicts (payloads.read_body). Lax float
# validation takes numbers and numeric strings ("12.5", "NaN") alike, as the
# API sends both; ids may be ints or strings and are kept as strings.
class K6Point(TypedDict):
    timestamp: str | float
    value: NotRequired[float | None]


@with_config(ConfigDict(coerce_numbers_to_str=True))
class K6Serie(TypedDict):
    metric_id: str
    method: NotRequired[str]
    values: NotRequired[list[K6Point] | None]


# "k6-serie" is no identifier: the functional TypedDict form.
K6SeriesAnswer = TypedDict("K6SeriesAnswer", {"k6-serie": list[K6Serie]})
SERIES_ANSWER = TypeAdapter(K6SeriesAnswer)


class K6Threshold(_Payload):
    id: IdStr
    name: str
    metric_id: IdStr | None = None
    stat: str = ""
    value: float | None = None
    calculated_value: float | None = None
    tainted: bool | None = False


class K6RunOverview(_Payload):
    checks_hits_successes: float | None = None
    checks_hits_total: float | None = None
    checks_successes: float | None = None
    checks_total: float | None = None
    http_req_duration_avg: float | None = None
    http_reqs_avg: float | None = None
    thresholds_successes: float | None = None
    thresholds_total: float | None = None
    urls_hits_successes: float | None = None
    urls_hits_total: float | None = None
    urls_successes: float | None = None
    urls_total: float | None = None


# --- families ---------------------------------------------------------------

def _overview_family(name: str, help_text: str, unit: str = "") -> Family:
    return Family(name, Kind.GAUGE, help_text, unit)


THRESHOLD_VALUE = Family("k6_cloud_threshold_value", Kind.GAUGE,
                         "Current calculated value of a k6 threshold (time thresholds in seconds).")
THRESHOLD_LIMIT = Family("k6_cloud_threshold_limit", Kind.GAUGE,
                         "Limit of a k6 threshold (time thresholds in seconds).")
THRESHOLD_FAILED = Family("k6_cloud_threshold_failed", Kind.GAUGE,
                          "1 when the k6 threshold is tainted (failed), else 0.")
RUN_CHECKS = _overview_family("k6_cloud_run_checks", "Checks of the test run by state (succeeded, total).")
RUN_CHECK_HITS = _overview_family("k6_cloud_run_check_hits",
                                  "Check evaluations of the test run by state (succeeded, total).")
RUN_THRESHOLDS = _overview_family("k6_cloud_run_thresholds", "Thresholds of the test run by state (succeeded, total).")
RUN_URLS = _overview_family("k6_cloud_run_urls", "URLs of the test run by state (succeeded, total).")
RUN_URL_HITS = _overview_family("k6_cloud_run_url_hits", "Requests to the test run's URLs by state (succeeded, total).")
RUN_DURATION_AVG = _overview_family(
    "k6_cloud_run_http_req_duration_avg_seconds", "Average HTTP request duration of the test run.", "seconds"
)
RUN_REQS_AVG = _overview_family("k6_cloud_run_http_reqs_avg",
                                "Average HTTP requests per second of the test run (run overview http_reqs_avg).")

OVERVIEW_STATES: tuple[tuple[Family, str, str], ...] = (
    (RUN_CHECKS, "checks_successes", "checks_total"),
    (RUN_CHECK_HITS, "checks_hits_successes", "checks_hits_total"),
    (RUN_THRESHOLDS, "thresholds_successes", "thresholds_total"),
    (RUN_URLS, "urls_successes", "urls_total"),
    (RUN_URL_HITS, "urls_hits_successes", "urls_hits_total"),
)


class K6CloudSource(Source[K6CloudConfig]):
    config_model: ClassVar[type[SourceConfigBase]] = K6CloudConfig
    type: ClassVar[str] = "k6_cloud"
    default_base_url: ClassVar[str] = "https://api.k6.io"
    simulator_prefix: ClassVar[str] = "k6"
    auth_scheme: ClassVar[str] = "Token"

    def __init__(self, config: K6CloudConfig, context: SourceContext) -> None:
        super().__init__(config, context)
        # Families are shared by every sample of one k6 metric name: build once.
        self._families: dict[tuple[str, str], Family] = {}
        # Per run and metric id: its tags and their labels, reused while the
        # tags stay the same (they do for a run's whole life).
        self._tag_labels: dict[str, dict[str, tuple[dict[str, Any], Labels]]] = {}

    async def poll(self, target: Target) -> list[Sample]:
        run = target.id
        metrics = await self._list_metrics(run)
        series, thresholds, overview = await _all(
            self._series_samples(run, metrics),
            self._threshold_samples(run),
            self._overview_samples(run),
        )
        return [*series, *thresholds, *overview]

    # --- requests -----------------------------------------------------------

    async def _get(self, path: str, params: list[tuple[str, Any]]) -> Any:
        return await self.http.get_json(f"{API}/{path}", params=params, classify=classify_error)

    async def _list_metrics(self, run: str) -> list[K6Metric]:
        metrics: list[K6Metric] = []
        page = 1
        while True:
            payload = await self._get(
                "metrics", [("test_run_id", run), ("page", page), ("page_size", self.config.page_size)]
            )
            items = list_field(payload, "k6-metrics", "metrics list")
            metrics.extend(parse_payload(K6Metric, item, "metrics list") for item in items)
            total = (payload.get("meta") or {}).get("count")
            # No `meta.count` means the server does not page: one response is all.
            if not items or not isinstance(total, int) or len(metrics) >= total:
                return metrics
            page += 1

    async def _series(self, run: str, stat: str, ids: list[str]) -> list[K6Serie]:
        """One batch; a batch the server refuses as too large is split in two."""
        params: list[tuple[str, Any]] = [("test_run_id", run), ("method", stat), *(("ids[]", i) for i in ids)]
        try:
            body = await self.http.get(f"{API}/series", params=params, classify=classify_error)
        except UpstreamHTTPError as exc:
            if exc.status in (400, 413, 414) and len(ids) > 1:
                half = len(ids) // 2
                first, second = await _all(self._series(run, stat, ids[:half]), self._series(run, stat, ids[half:]))
                return first + second
            raise
        series: list[K6Serie] = read_body(SERIES_ANSWER, body, "series")["k6-serie"]
        return series

    async def _series_samples(self, run: str, metrics: list[K6Metric]) -> list[Sample]:
        by_id = {m.id: m for m in metrics}
        # Every stat of a metric carries the same tags: turn them into labels once.
        tags = self._labels_of_tags(run, metrics)
        requests: list[Callable[[], Awaitable[list[K6Serie]]]] = []
        for metric_type, stats in self.config.stats.items():
            ids = [m.id for m in metrics if m.type == metric_type]
            for stat in stats:
                for start in range(0, len(ids), self.config.series_batch_size):
                    chunk = ids[start:start + self.config.series_batch_size]
                    requests.append(functools.partial(self._series, run, stat, chunk))
        samples: list[Sample] = []
        grids: dict[tuple[Any, ...], int] = {}
        for batch in await _bounded_gather(requests, limit=4):
            for serie in batch:
                metric = by_id.get(serie["metric_id"])
                sample = self._series_sample(run, metric, tags[metric.id], serie, grids) if metric else None
                if sample is not None:
                    samples.append(sample)
        return samples

    async def _threshold_samples(self, run: str) -> list[Sample]:
        payload = await self._get("thresholds", [("test_run_id", run)])
        listed = list_field(payload, "k6-thresholds", "thresholds")
        thresholds = [parse_payload(K6Threshold, t, "thresholds") for t in listed]
        related = payload.get("k6-metrics") or []
        metrics = {m.id: m for m in (parse_payload(K6Metric, m, "thresholds metrics") for m in related)}
        samples: list[Sample] = []
        for threshold in thresholds:
            metric = metrics.get(threshold.metric_id or "")
            scale = SCALE_BY_CONTAINS.get(metric.contains or "", 1.0) if metric else 1.0
            labels: Labels = (
                ("test_run_id", run),
                ("threshold", threshold.name),
                ("stat", threshold.stat),
                ("metric", metric.name if metric else (threshold.metric_id or "")),
            )
            if threshold.calculated_value is not None:
                samples.append(Sample(THRESHOLD_VALUE, labels, threshold.calculated_value * scale))
            if threshold.value is not None:
                samples.append(Sample(THRESHOLD_LIMIT, labels, threshold.value * scale))
            samples.append(Sample(THRESHOLD_FAILED, labels, 1.0 if threshold.tainted else 0.0))
        return samples

    async def _overview_samples(self, run: str) -> list[Sample]:
        payload = await self._get("run-overviews", [("test_run_id", run)])
        items = list_field(payload, "k6-run-overviews", "run overview")
        if not items:
            return []
        overview = parse_payload(K6RunOverview, items[0], "run overview")
        samples: list[Sample] = []
        for family, succeeded, total in OVERVIEW_STATES:
            for state, field in (("succeeded", succeeded), ("total", total)):
                value = getattr(overview, field)
                if value is not None:
                    samples.append(Sample(family, (("test_run_id", run), ("state", state)), value))
        if overview.http_req_duration_avg is not None:
            samples.append(Sample(RUN_DURATION_AVG, (("test_run_id", run),), overview.http_req_duration_avg / 1000.0))
        if overview.http_reqs_avg is not None:
            samples.append(Sample(RUN_REQS_AVG, (("test_run_id", run),), overview.http_reqs_avg))
        return samples

    # --- conversion ---------------------------------------------------------

    def _series_sample(
        self, run: str, metric: K6Metric, tags: Labels, serie: K6Serie, grids: dict[tuple[Any, ...], int]
    ) -> Sample | None:
        point = _newest(serie.get("values") or [], grids)
        raw = point.get("value") if point is not None else None
        if point is None or raw is None:
            return None
        contains = metric.contains or ""
        value = raw * SCALE_BY_CONTAINS.get(contains, 1.0)
        family = self._family(metric.name, metric.type, contains)
        return Sample(
            family,
            (("test_run_id", run), ("stat", serie.get("method", "")), *tags),
            value,
            timestamp=_timestamp_or_none(point["timestamp"]),
        )

    def _labels_of_tags(self, run: str, metrics: list[K6Metric]) -> dict[str, Labels]:
        known = self._tag_labels.get(run, {})
        fresh: dict[str, tuple[dict[str, Any], Labels]] = {}
        for metric in metrics:
            tags = metric.tags or {}
            cached = known.get(metric.id)
            fresh[metric.id] = cached if cached is not None and cached[0] == tags else (tags, tag_labels(tags))
        self._tag_labels[run] = fresh  # metrics gone from the run go too
        return {metric_id: labels for metric_id, (_, labels) in fresh.items()}

    def forget(self, target: Target) -> None:
        self._tag_labels.pop(target.id, None)

    def _family(self, name: str, metric_type: str, contains: str) -> Family:
        unit = UNIT_BY_CONTAINS.get(contains, "")
        key = (name, unit)
        family = self._families.get(key)
        if family is None:
            family = Family(
                with_unit(f"k6_{metric_name(name)}", unit),
                Kind.GAUGE,
                f"k6 {metric_type or 'metric'} {name}: latest value of each series statistic (stat label).",
                unit,
            )
            self._families[key] = family
        return family


def tag_labels(tags: dict[str, Any]) -> Labels:
    """k6 tags as labels: keys sanitised, reserved ones prefixed `tag_`, and of
    two keys that sanitise alike the first in sorted order wins."""
    out: dict[str, str] = {}
    for key in sorted(tags):
        name = label_name(key)
        if name in RESERVED_LABELS:
            name = f"tag_{name}"
        if name in out:
            continue
        value = tags[key]
        out[name] = "" if value is None else value if isinstance(value, str) else json.dumps(value)
    return tuple(out.items())


def _timestamp_or_none(value: str | float) -> float | None:
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


_TIMESTAMP = operator.itemgetter("timestamp")


def _newest(points: list[K6Point], grids: dict[tuple[Any, ...], int]) -> K6Point | None:
    """The point with the newest timestamp (the last of equals); unreadable
    timestamps count as oldest. The series of one run share a time grid, so
    the answer is kept per grid (`grids`, one poll's): a series costs a tuple
    of its timestamps and a lookup, not a parse per point."""
    if not points:
        return None
    stamps = tuple(map(_TIMESTAMP, points))
    index = grids.get(stamps)
    if index is None:
        moments = [_timestamp_or_none(stamp) for stamp in stamps]
        order = [-math.inf if moment is None else moment for moment in moments]
        index = grids[stamps] = max(range(len(stamps) - 1, -1, -1), key=order.__getitem__)
    return points[index]


async def _bounded_gather(calls: Iterable[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """The results of `calls`, at most `limit` in flight, to be gentle upstream.

    Each coroutine is made only when its turn comes: one made up front and
    never awaited (the poll's deadline cancelled the gather first) printed
    `RuntimeWarning: coroutine ... was never awaited`."""
    semaphore = asyncio.Semaphore(limit)

    async def run(call: Callable[[], Awaitable[T]]) -> T:
        async with semaphore:
            return await call()

    return await _all(*(run(call) for call in calls))


async def _all(*coroutines: Awaitable[T]) -> list[T]:
    """gather(), but the first failure cancels the others: a failed poll
    leaves no request of its own running behind it."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


def classify_error(status: int, body: bytes, path: str) -> PollError | None:
    """k6's envelope: `{"error": {"message", "code", "detail_code", "field_errors"}}`."""
    envelope = coded_error(body)
    if status == 410 or (status == 404 and envelope is None):
        return EndpointRetired(
            f"k6 Cloud endpoint {path} answered HTTP {status}: the v2 REST API is deprecated "
            "(the vendor moved to v6); this source can no longer read it"
        )
    if envelope is None:
        return None
    code = envelope.get("code")
    message = str(envelope.get("message", ""))[:300]
    details = envelope.get("field_errors") or envelope.get("errors")
    text = f"GET {path}: HTTP {status}: k6 error code {code}: {message}" + (f" {details}" if details else "")
    if code in (5, 6) or status in (401, 403):
        reason = "auth"
    elif code == 3 or status == 404:
        reason = "not_found"
    elif status == 429:
        reason = "rate_limited"
    else:
        reason = "http_5xx" if status >= 500 else "http_4xx"
    return UpstreamHTTPError(reason, text, status=status, body=body)
