"""`K6CloudSource`: one poll (or one backfill) of one k6 test run; the families it exports.

The package docstring (`exporter.sources.k6_cloud`) says what is asked and
exported and how the doc is read.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

from exporter.config.source import SourceConfigBase
from exporter.errors import EndpointRetired, PollError, UpstreamHTTPError
from exporter.model import Family, Kind, Labels, Sample
from exporter.sources.base import Source, SourceContext, Target
from exporter.sources.k6_cloud.config import (
    API,
    SCALE_BY_CONTAINS,
    SERIES_ANSWER,
    UNIT_BY_CONTAINS,
    K6CloudConfig,
    K6Metric,
    K6RunOverview,
    K6Serie,
    K6Threshold,
)
from exporter.sources.k6_cloud.series import (
    Grids,
    Span,
    _newest,
    all_or_cancel,
    bounded_gather,
    points_between,
    tag_labels,
    timestamp_or_none,
)
from exporter.sources.kit.naming import metric_name, with_unit
from exporter.sources.kit.payloads import coded_error, list_field, parse_payload, read_body

log = logging.getLogger(__name__)


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
        # Per run and series (metric id, stat): the newest time the last poll
        # saw; the next poll's history starts after it.
        self._cursors: dict[str, dict[Any, float]] = {}

    async def poll(self, target: Target) -> list[Sample]:
        run = target.id
        metrics = await self._list_metrics(run)
        series = asyncio.ensure_future(self._series_samples(run, metrics))
        thresholds = asyncio.ensure_future(self._threshold_samples(run))
        overview = asyncio.ensure_future(self._overview_samples(run))
        await all_or_cancel(series, thresholds, overview)  # the first failure cancels the others
        samples, self._cursors[run] = series.result()
        return [*samples, *thresholds.result(), *overview.result()]

    async def history(self, target: Target, since: float, until: float) -> AsyncIterator[list[Sample]]:
        """A backfill of one run: every point of its series (the configured
        stats) within [since, until], at its time. Thresholds and the run
        overview have no time series: they are not backfilled."""
        metrics = await self._list_metrics(target.id)
        samples, _ = await self._series_samples(target.id, metrics, (since, until))
        yield samples

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
                first, second = await all_or_cancel(self._series(run, stat, ids[:half]),
                                                    self._series(run, stat, ids[half:]))
                return first + second
            raise
        series: list[K6Serie] = read_body(SERIES_ANSWER, body, "series")["k6-serie"]
        return series

    async def _series_samples(
        self, run: str, metrics: list[K6Metric], span: Span | None = None
    ) -> tuple[list[Sample], dict[Any, float]]:
        """The newest point of every series (live, `span` None: with the points
        since the previous poll as history), or its points within `span`; and
        the newest time of each series (the next poll's cursors)."""
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
        grids = Grids({}, {})
        cursors = self._cursors.get(run, {})
        newest: dict[Any, float] = {}
        for batch in await bounded_gather(requests, limit=4):
            for serie in batch:
                metric = by_id.get(serie["metric_id"])
                if metric is None:
                    continue
                if span is None:
                    sample = self._series_sample(run, metric, tags[metric.id], serie, grids, cursors)
                else:
                    sample = self._series_span(run, metric, tags[metric.id], serie, grids, span)
                if sample is not None:
                    samples.append(sample)
                    if sample.timestamp is not None:
                        newest[(metric.id, serie.get("method", ""))] = sample.timestamp
        return samples, newest

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
        self, run: str, metric: K6Metric, tags: Labels, serie: K6Serie, grids: Grids, cursors: dict[Any, float]
    ) -> Sample | None:
        points = serie.get("values") or []
        point = _newest(points, grids.newest)
        raw = point.get("value") if point is not None else None
        if point is None or raw is None:
            return None
        scale = SCALE_BY_CONTAINS.get(metric.contains or "", 1.0)
        when = timestamp_or_none(point["timestamp"])
        history: tuple[tuple[float, float], ...] = ()
        if when is not None:
            # Every point since the newest one the previous poll saw, for push
            # sinks (the OTLP sink sends each it has not sent before).
            after = cursors.get((metric.id, serie.get("method", "")), -math.inf)
            history = tuple(points_between(points, grids.lines, after, when, scale))[:-1]
        return Sample(self._family(metric.name, metric.type, metric.contains or ""),
                      (("test_run_id", run), ("stat", serie.get("method", "")), *tags),
                      raw * scale, timestamp=when, history=history)

    def _series_span(
        self, run: str, metric: K6Metric, tags: Labels, serie: K6Serie, grids: Grids, span: Span
    ) -> Sample | None:
        """Every point of a series within `span` (a backfill): the newest as the sample, the others its history."""
        since, until = span
        line = points_between(serie.get("values") or [], grids.lines, since - 1e-6, until,
                       SCALE_BY_CONTAINS.get(metric.contains or "", 1.0))
        if not line:
            return None
        return Sample(self._family(metric.name, metric.type, metric.contains or ""),
                      (("test_run_id", run), ("stat", serie.get("method", "")), *tags),
                      line[-1][1], timestamp=line[-1][0], history=tuple(line[:-1]))

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
        self._cursors.pop(target.id, None)

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
