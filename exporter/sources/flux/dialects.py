"""The two wire dialects of a Flux server: how each is asked, recognised and read.

Follows seed 003 (the documented API: `from`/`to`/`interval`, several
aggregations per request, `{"data": {"series"|"groups": …}}`) and the
open-source server as API_NOTES.md describes it (`since`/`bucket`, one
aggregation per request, `{"data": [{"time", "value", "count"}]}`, a list
`{"metrics": [...]}`, `group_by` ignored). `ServerDialect` is the one place
that knows which of the two a source's server speaks.

Readings of the doc: `group_by` with several keys is sent comma-separated
(like `aggregation`) and a group's name is read as the values joined by ",";
a point holds `value` for a single aggregation and one field per aggregation
otherwise.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal
from urllib.parse import quote

from exporter.errors import InvalidResponse, PollError, UpstreamHTTPError, reason_for_status
from exporter.model import Labels
from exporter.sources.flux.config import AGGREGATIONS, tag_label
from exporter.sources.flux.families import Metric, Result, merge
from exporter.sources.flux.notes import Notes
from exporter.sources.kit.payloads import json_or_none
from exporter.sources.kit.periods import rfc3339
from exporter.sources.kit.timeparse import parse_timestamp

Dialect = Literal["documented", "opensource"]
DOCUMENTED: Dialect = "documented"
OPENSOURCE: Dialect = "opensource"
LIST_PATH = "/api/v1/metrics"
OPENSOURCE_BUCKETS = {"1m": "1 minute", "5m": "5 minutes", "1h": "1 hour", "1d": "1 day"}
Buckets = dict[float, dict[str, float]]  # {bucket start: {aggregation: value}}


def definition_path(name: str) -> str:
    return f"{LIST_PATH}/{quote(name, safe='')}"


def query_path(name: str) -> str:
    return f"{definition_path(name)}/query"


# --- which dialect ---------------------------------------------------------------------------------


class ServerDialect:
    """The dialect of one source's server: known from the first query answer; guessed before it.

    The guess only steers the first requests (and the request estimate): an
    open-source list (`{"metrics": [...]}`) makes the first query ask the
    open-source way. Once known, an answer in the other shape is invalid.
    """

    def __init__(self, notes: Notes, server: str, grouped: bool) -> None:
        self.known: Dialect | None = None
        self.guess: Dialect = DOCUMENTED
        self._notes = notes
        self._server = server
        self._grouped = grouped  # some configured metric asks group_by, which the open-source server ignores

    @property
    def assumed(self) -> Dialect:
        return self.known or self.guess

    def requests(self, metric: Metric) -> int:
        """Requests one query of `metric` takes in the dialect assumed now."""
        if self.assumed == DOCUMENTED:
            return 1
        return len(metric.opensource_aggregations())

    def list_answered(self, shape: Dialect) -> None:
        """Take the shape of a metric list as the guess, until a query answer tells."""
        if shape == OPENSOURCE and self.known is None:
            self.guess = OPENSOURCE

    def settle(self, payload: Any, metric: Metric) -> Dialect:
        """The dialect of a query answer; the first one decides the source's."""
        shape = query_shape(payload)
        if shape is None:
            raise InvalidResponse(f"query of {metric.name!r}: neither data.series/data.groups (documented) "
                                  f"nor a data list (open source): {str(payload)[:200]}")
        if self.known is None:
            self.known = shape
            self._notes.say(logging.INFO, "%s: the Flux server at %s speaks the %s dialect",
                            self._notes.source, self._server, shape)
            if shape == OPENSOURCE and self._grouped:
                self._notes.once("group_by", logging.WARNING, "%s: the open-source Flux server ignores group_by; "
                                 "those metrics are exported without their group labels", self._notes.source)
        elif shape != self.known:
            raise InvalidResponse(f"query of {metric.name!r} answered in the {shape} shape, but this server "
                                  f"speaks the {self.known} dialect")
        return shape


def query_shape(payload: Any) -> Dialect | None:
    if not isinstance(payload, dict):
        return None
    data = payload.get("data")
    if isinstance(data, dict) and (isinstance(data.get("series"), list) or "groups" in data):
        return DOCUMENTED
    if isinstance(data, list):
        return OPENSOURCE
    return None


# --- asking -----------------------------------------------------------------------------------------


def documented_params(metric: Metric, aggregations: tuple[str, ...], bucket: str, window: float,
                      now: float) -> list[tuple[str, str]]:
    params = [("from", rfc3339(window)), ("to", rfc3339(now)), ("interval", bucket),
              ("aggregation", ",".join(aggregations))]
    if metric.group_by:
        params.append(("group_by", ",".join(f"tags.{key}" for key in metric.group_by)))
    return params + [(f"tags[{key}]", value) for key, value in metric.tags]


def opensource_params(metric: Metric, aggregation: str, bucket: str, window: float,
                      now: float) -> list[tuple[str, str]]:
    # One minute more than the window: a server clock a little ahead of
    # ours must not cut the first bucket we keep (earlier ones are ignored).
    minutes = math.ceil((now - window) / 60) + 1
    params = [("since", f"{minutes}m"), ("bucket", OPENSOURCE_BUCKETS[bucket]), ("aggregation", aggregation)]
    return params + [(f"tags[{key}]", value) for key, value in metric.tags]


# --- reading query answers ---------------------------------------------------------------------------


def parse_documented(payload: dict[str, Any], metric: Metric, aggregations: tuple[str, ...], notes: Notes) -> Result:
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
            merge(result, {group_labels(metric, str(name)): parse_points(points, aggregations, where)})
    else:
        if metric.group_by:
            notes.once(("ignored", metric.name), logging.WARNING, "%s: the server answered %r without groups; "
                       "it is exported without its group labels", notes.source, metric.name)
        merge(result, {(): parse_points(data["series"], aggregations, where)})
    return result


def parse_opensource(payload: dict[str, Any], metric: Metric, aggregation: str) -> Result:
    where = f"query of {metric.name!r} ({aggregation})"
    with_count = metric.type == "distribution" and "count" in metric.aggregations
    buckets: Buckets = {}
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


def group_labels(metric: Metric, name: str) -> Labels:
    keys = metric.group_by
    parts = [name] if len(keys) == 1 else name.split(",")
    if len(parts) != len(keys):
        raise InvalidResponse(f"query of {metric.name!r}: group {name!r} does not split into the "
                              f"{len(keys)} values of group_by {', '.join(keys)}")
    return tuple((tag_label(key), part) for key, part in zip(keys, parts, strict=True))


def parse_points(points: Any, aggregations: tuple[str, ...], where: str) -> Buckets:
    if not isinstance(points, list):
        raise InvalidResponse(f"{where}: the points are not a list")
    buckets: Buckets = {}
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


# --- the list, a definition, an error -------------------------------------------------------------


def list_items(payload: Any) -> tuple[list[Any], Dialect]:
    """The entries of GET /metrics and the dialect its shape suggests (`data` documented, `metrics` open source)."""
    if isinstance(payload, dict):
        if isinstance(payload.get("data"), list):
            return payload["data"], DOCUMENTED
        if isinstance(payload.get("metrics"), list):
            return payload["metrics"], OPENSOURCE
    raise InvalidResponse(f"GET {LIST_PATH}: neither a `data` nor a `metrics` list")


def listed_metrics(items: list[Any]) -> list[tuple[str, str]]:
    """(name, type) of each list entry; the type as given (an unknown one is skipped later, with a warning)."""
    listed = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise InvalidResponse(f"GET {LIST_PATH}: a metric without a name: {str(item)[:100]}")
        listed.append((item["name"], str(item.get("type"))))
    return listed


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
