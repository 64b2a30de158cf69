"""Fake of the WhatsApp Flows Metrics API on the Graph API (seed 001, API_NOTES.md).

    GET /{version}/{flow_id}?fields=metric.name(NAME).granularity(G).since(YYYY-MM-DD).until(YYYY-MM-DD)

Data: every component (each latency ceiling, each error type, each availability
result) of a flow is the floored integral of a smooth daily curve, counted per
UTC hour. Like the real service the data lags: an hour shows about 70% of its
events when it ends and the rest arrives over the next few hours, so later
polls revise recent hours upwards. DAY buckets are Pacific days (they start at
08:00 UTC, 07:00 in northern summer) and are sums of their hours; LIFETIME is
one data point, the sum of the DAY buckets asked for, stamped with the start
of the first. The request count of an hour is the sum of its latency
components, so the histogram's count equals the requests, and the error rate
is exactly errors / requests. Latency keys `"4"` and `"7"` never occur (missing
keys), `"10+"` does, and one error type the doc does not list appears.

Request reading: `since`/`until` are dates; a bucket belongs to the answer when
it starts in [since 00:00 UTC, until 00:00 UTC) and has begun, so `until` is
exclusive here (the harsher of the two readings of the doc) and a client that
sends today's date loses today's buckets. Without `since` the oldest allowed
date is used (30 days back for HOUR, 90 for DAY and, unconfirmed, LIFETIME);
an older `since` is refused with code 100.

Graph behaviour: errors are `{"error": {message, type, code, error_subcode?,
fbtrace_id}}`; a wrong token is code 190 (HTTP 400), a malformed `fields=`
expression code 100, an unknown numeric id code 100 subcode 33, a non-numeric
id code 803 (HTTP 404); flows with fewer than 250 requests get the "not enough
data" refusal (code 100). Versions older than `oldest_version` have expired and
are served as that version (the `facebook-api-version` header says which),
as Graph does. Every answer carries `X-App-Usage`.

Test hooks: `throttle(times, code, status)` answers the next requests with a
Graph throttling error; `fail(...)` with any Graph error; `retired = True`
(or `"deprecated"`, `"gone"`) answers like an API that was removed;
`timestamp_format` formats data-point times; `transform` rewrites every
successful body (to serve what the doc does not promise).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from exporter.simulator.common import SIMULATOR_TOKEN, SimRequest, SimResponse, bearer_token, deterministic

if TYPE_CHECKING:
    from exporter.simulator.server import Simulator

METRICS = (
    "ENDPOINT_REQUEST_COUNT",
    "ENDPOINT_REQUEST_ERROR",
    "ENDPOINT_REQUEST_ERROR_RATE",
    "ENDPOINT_REQUEST_LATENCY_SECONDS_CEIL",
    "ENDPOINT_AVAILABILITY",
)
GRANULARITIES = ("HOUR", "DAY", "LIFETIME")
MAX_DAYS = {"HOUR": 30, "DAY": 90, "LIFETIME": 90}
MIN_REQUESTS = 250

# Share of requests by latency ceiling (seconds); "4" and "7" never occur.
LATENCY_SHARES = {"1": 0.55, "2": 0.18, "3": 0.09, "5": 0.06, "6": 0.04, "8": 0.03, "9": 0.015, "10": 0.01,
                  "10+": 0.025}
# Share of requests failing, by error type; the last one is not in the doc.
ERROR_SHARES = {"timeout_error": 0.012, "unexpected_http_status_code": 0.02, "cannot_be_served": 0.004,
                "no_http_response_error": 0.003, "flow_token_expired_error": 0.002}
CHECKS_PER_HOUR = 12.0
CHECK_FAILURE_SHARE = 0.04
LATE_SHARE, LAG_SECONDS = 0.3, 2 * 3600.0
# After 24 lag periods the missing share is below 1e-10 of an hour's count: none.
SETTLED_SECONDS = 24 * LAG_SECONDS
DAILY_SWING = 0.6

DEMO_FLOWS = ("1234567890123456", "2345678901234567")
QUIET_FLOW = "3456789012345678"  # fewer than 250 requests when the simulator starts
MISSING_FLOW = "9999999999999999"  # a numeric id no flow has

THROTTLE_MESSAGES = {
    4: "(#4) Application request limit reached",
    17: "(#17) User request limit reached",
    32: "(#32) Page request limit reached",
    613: "(#613) Calls to this api have exceeded the rate limit.",
    80007: "(#80007) Rate limit issues for the WhatsApp Business Account.",
    80008: "(#80008) There have been too many calls to this WhatsApp Business account. Wait a bit and try again.",
    130429: "(#130429) Rate limit hit",
}

VERSION = re.compile(r"v(\d+)\.(\d+)")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
MODIFIER = re.compile(r"\.([A-Za-z_]+)\(([^()]*)\)")
HOUR = 3600.0


@dataclass(frozen=True)
class GraphError(Exception):
    status: int
    code: int
    message: str
    type: str = "OAuthException"
    subcode: int | None = None


@dataclass(frozen=True)
class MetricQuery:
    name: str
    granularity: str
    since: date | None
    until: date | None


# --- the fields= expression --------------------------------------------------


def parse_fields(text: str) -> tuple[list[str], MetricQuery | None]:
    """Plain fields and the metric query of a `fields=` value; GraphError (code 100) on anything malformed."""
    depth = 0
    for index, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0 or depth > 1:
            raise _syntax(text, index)
    if depth:
        raise _syntax(text, len(text))
    plain: list[str] = []
    query: MetricQuery | None = None
    for field in _split_top_level(text):
        if field in ("id", "name", "status"):
            plain.append(field)
        elif field == "metric" or field.startswith(("metric.", "metric(")):
            if query is not None:
                raise GraphError(400, 100, "(#100) Field metric is requested more than once")
            query = _parse_metric(field)
        elif re.fullmatch(r"[A-Za-z_]+", field):
            raise GraphError(400, 100, f"(#100) Tried accessing nonexisting field ({field}) on node type "
                                       "(WhatsAppBusinessFlow)")
        else:
            raise _syntax(text, text.find(field))
    return plain, query


def _split_top_level(text: str) -> list[str]:
    fields, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            fields.append(current)
            current = ""
        else:
            current += char
    fields.append(current)
    if any(not field for field in fields):
        raise GraphError(400, 100, "(#100) Syntax error: empty field in fields parameter")
    return fields


def _parse_metric(field: str) -> MetricQuery:
    args: dict[str, str] = {}
    position = len("metric")
    while position < len(field):
        match = MODIFIER.match(field, position)
        if match is None:
            raise _syntax(field, position)
        name, value = match.group(1), match.group(2)
        if name not in ("name", "granularity", "since", "until"):
            raise GraphError(400, 100, f"(#100) Unknown modifier {name} on field metric; "
                                       "expected name, granularity, since, until")
        if name in args:
            raise GraphError(400, 100, f"(#100) Modifier {name} is given more than once")
        args[name] = value
        position = match.end()
    if "name" not in args:
        raise GraphError(400, 100, "(#100) The parameter name is required for field metric")
    if args["name"] not in METRICS:
        raise GraphError(400, 100, f"(#100) Param name must be one of {{{', '.join(METRICS)}}}")
    granularity = args.get("granularity", "")
    if granularity.upper() not in GRANULARITIES:
        raise GraphError(400, 100, f"(#100) Param granularity must be one of {{{', '.join(GRANULARITIES)}}}")
    return MetricQuery(args["name"], granularity.upper(), _date(args, "since"), _date(args, "until"))


def _date(args: dict[str, str], name: str) -> date | None:
    value = args.get(name)
    if value is None:
        return None
    if not DATE.fullmatch(value):
        raise GraphError(400, 100, f"(#100) Param {name} must be a date in the format YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise GraphError(400, 100, f"(#100) Param {name} must be a date in the format YYYY-MM-DD") from None


def _syntax(text: str, position: int) -> GraphError:
    return GraphError(400, 100, f'(#100) Syntax error "Expected end of string" at character {position}: {text}')


# --- Pacific days --------------------------------------------------------------


def _nth_sunday(year: int, month: int, n: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(6 - first.weekday()) % 7 + 7 * (n - 1))


def pacific_midnight(day: date) -> float:
    """Epoch seconds of 00:00 America/Los_Angeles on `day` (US rules since 2007:
    daylight time from the second Sunday of March to the first of November,
    switching at 02:00 local, so the midnight of either Sunday is still the old offset)."""
    summer = _nth_sunday(day.year, 3, 2) < day <= _nth_sunday(day.year, 11, 1)
    return datetime(day.year, day.month, day.day, 7 if summer else 8, tzinfo=UTC).timestamp()


def utc_midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def graph_time(ts: float) -> str:
    """`2024-01-28T08:00:00+0000`: Graph's ISO 8601, no colon in the offset."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


# --- the fake ------------------------------------------------------------------


class WhatsAppFlowsFake:
    prefix = "whatsapp"

    def __init__(self, simulator: Simulator) -> None:
        self.sim = simulator
        self.oldest_version = (21, 0)
        self.retired: bool | str = False
        self.missing_flows = {MISSING_FLOW}
        self.timestamp_format: Callable[[float], str] = graph_time
        self.transform: Callable[[dict[str, Any]], Any] | None = None
        self._pending: list[GraphError] = []
        self._lock = threading.Lock()
        self._calls = 0
        self._cumulative: dict[tuple[str, str, float], int] = {}
        self._components: dict[str, dict[str, float]] = {}

    # --- test hooks ---------------------------------------------------------------

    def throttle(self, times: int = 1, code: int = 4, status: int = 400) -> None:
        """Answer the next `times` requests with Graph throttling `code` as HTTP `status`."""
        message = THROTTLE_MESSAGES.get(code, f"(#{code}) Rate limit reached")
        self.fail(times, status, code, message)

    def fail(self, times: int, status: int, code: int, message: str, type: str = "OAuthException",
             subcode: int | None = None) -> None:
        """Answer the next `times` requests with this Graph error."""
        with self._lock:
            self._pending.extend([GraphError(status, code, message, type, subcode)] * times)

    # --- data ----------------------------------------------------------------------

    def profile(self, flow: str) -> tuple[float, float]:
        """(first request time, mean requests per hour) of a flow."""
        if flow == QUIET_FLOW:
            return self.sim.started_at - 2 * 86400, 1.5
        return self.sim.started_at - 40 * 86400, 200 + 800 * deterministic(self.sim.seed, "whatsapp", flow)

    def components(self, flow: str) -> dict[str, float]:
        """Mean events per hour of each component of a flow."""
        cached = self._components.get(flow)
        if cached is not None:
            return cached
        _, rate = self.profile(flow)
        parts = {f"latency:{key}": rate * share for key, share in LATENCY_SHARES.items()}
        parts.update({f"error:{key}": rate * share for key, share in ERROR_SHARES.items()})
        parts["check:succeeded"] = CHECKS_PER_HOUR * (1 - CHECK_FAILURE_SHARE)
        parts["check:failed"] = CHECKS_PER_HOUR * CHECK_FAILURE_SHARE
        self._components[flow] = parts
        return parts

    def cumulative(self, flow: str, component: str, ts: float) -> int:
        """Events of one component from the flow's start to `ts`."""
        key = (flow, component, ts)
        cached = self._cumulative.get(key)
        if cached is not None:
            return cached
        created, _ = self.profile(flow)
        if ts <= created:
            return 0
        per_second = self.components(flow)[component] / HOUR
        omega = 2 * math.pi / 86400
        phase = deterministic(self.sim.seed, "whatsapp", flow, component) * 2 * math.pi
        swing = DAILY_SWING / omega * (math.cos(omega * created + phase) - math.cos(omega * ts + phase))
        value = math.floor(per_second * ((ts - created) + swing))
        if len(self._cumulative) > 500_000:
            self._cumulative.clear()
        self._cumulative[key] = value
        return value

    def hour(self, flow: str, start: float, now: float) -> dict[str, int]:
        """What the API shows for one UTC hour at `now`: late events still missing."""
        end = min(start + HOUR, now)
        counts = {}
        for component in self.components(flow):
            true = self.cumulative(flow, component, end) - self.cumulative(flow, component, start)
            missing = math.floor(true * LATE_SHARE * math.exp(-(now - end) / LAG_SECONDS))
            counts[component] = true - missing
        return counts

    def span(self, flow: str, start: float, end: float, now: float) -> dict[str, int]:
        """Sum of the hours in [start, end) that have begun (hour-aligned bounds)."""
        created, _ = self.profile(flow)
        hour = max(start, math.floor(created / HOUR) * HOUR)
        # Hours that ended SETTLED_SECONDS ago have no late events left, so
        # their sum telescopes to a difference of cumulative counts.
        settled = min(end, math.floor((now - SETTLED_SECONDS) / HOUR) * HOUR)
        totals: dict[str, int] = dict.fromkeys(self.components(flow), 0)
        if settled > hour:
            for component in totals:
                totals[component] = self.cumulative(flow, component, settled) - self.cumulative(flow, component, hour)
            hour = settled
        while hour < min(end, now):
            for component, count in self.hour(flow, hour, now).items():
                totals[component] += count
            hour += HOUR
        return totals

    def total_requests(self, flow: str, now: float) -> int:
        return sum(self.cumulative(flow, f"latency:{key}", now) for key in LATENCY_SHARES)

    def data(self, metric: str, counts: dict[str, int]) -> list[dict[str, Any]]:
        """The `data` array of one point of `metric`."""
        requests = sum(v for k, v in counts.items() if k.startswith("latency:"))
        errors = {k.partition(":")[2]: v for k, v in counts.items() if k.startswith("error:")}
        if metric == "ENDPOINT_REQUEST_COUNT":
            return [{"key": "value", "value": requests}]
        if metric == "ENDPOINT_REQUEST_ERROR":
            return [{"key": k, "value": v} for k, v in errors.items() if v]
        if metric == "ENDPOINT_REQUEST_ERROR_RATE":
            return [{"key": "value", "value": sum(errors.values()) / requests if requests else 0.0}]
        if metric == "ENDPOINT_REQUEST_LATENCY_SECONDS_CEIL":
            return [{"key": k, "value": counts[f"latency:{k}"]} for k in LATENCY_SHARES if counts[f"latency:{k}"]]
        return [{"key": "succeeded", "value": counts["check:succeeded"]},
                {"key": "failed", "value": counts["check:failed"]}]

    def data_points(self, flow: str, query: MetricQuery, since: date, until: date) -> list[dict[str, Any]]:
        now = self.sim.now()
        created, _ = self.profile(flow)
        low, high = utc_midnight(since), utc_midnight(until)
        points = []
        if query.granularity == "HOUR":
            hour = low
            while hour < min(high, now):
                if hour + HOUR > created:
                    points.append((hour, self.hour(flow, hour, now)))
                hour += HOUR
        else:
            days = [since + timedelta(days=n) for n in range((until - since).days)]
            buckets = [(pacific_midnight(d), pacific_midnight(d + timedelta(days=1))) for d in days]
            buckets = [(start, end) for start, end in buckets if low <= start < min(high, now) and end > created]
            if query.granularity == "DAY":
                points = [(start, self.span(flow, start, end, now)) for start, end in buckets]
            elif buckets:
                points = [(buckets[0][0], self.span(flow, buckets[0][0], buckets[-1][1], now))]
        return [{"timestamp": self.timestamp_format(start), "data": self.data(query.name, counts)}
                for start, counts in points]

    # --- endpoint ------------------------------------------------------------------

    def handle(self, request: SimRequest) -> SimResponse:
        with self._lock:
            self._calls += 1
            call = self._calls
        served = "v{}.{}".format(*self.oldest_version)
        try:
            served, body = self._answer(request)
        except GraphError as error:
            return self._error(error, call, served)
        if self.transform is not None:
            body = self.transform(body)
        return SimResponse(200, body, self._headers(call, served))

    def _answer(self, request: SimRequest) -> tuple[str, dict[str, Any]]:
        parts = request.path.strip("/").split("/")
        version = VERSION.fullmatch(parts[0]) if parts else None
        if version is None or len(parts) != 2 or request.method != "GET":
            raise GraphError(400, 2500, f"Unknown path components: {request.path}")
        requested = (int(version.group(1)), int(version.group(2)))
        served = "v{}.{}".format(*max(requested, self.oldest_version))  # expired versions: the oldest usable one
        token = bearer_token(request, "Bearer")
        if token is None:
            raise GraphError(400, 104, "An access token is required to request this resource.")
        if token != SIMULATOR_TOKEN:
            raise GraphError(400, 190, "Invalid OAuth access token - Cannot parse access token")
        with self._lock:
            pending = self._pending.pop(0) if self._pending else None
        if pending is not None:
            raise pending
        self._check_retired(served)
        flow = parts[1]
        if not flow.isdigit():
            raise GraphError(404, 803, f"(#803) Some of the aliases you requested do not exist: {flow}")
        if flow in self.missing_flows:
            raise GraphError(400, 100, f"Unsupported get request. Object with ID '{flow}' does not exist, cannot be "
                                       "loaded due to missing permissions, or does not support this operation.",
                             "GraphMethodException", 33)
        fields = request.param("fields")
        plain, query = parse_fields(fields) if fields else (["id"], None)
        body: dict[str, Any] = {"id": flow}
        if "name" in plain:
            body["name"] = f"Flow {flow}"
        if "status" in plain:
            body["status"] = "PUBLISHED"
        if query is not None:
            body["metric"] = self._metric(flow, query)
        return served, body

    def _check_retired(self, served: str) -> None:
        mode = "nonexisting_field" if self.retired is True else self.retired
        if not mode:
            return
        if mode == "deprecated":
            raise GraphError(400, 12, f"(#12) metric field is deprecated for versions {served} and higher")
        if mode == "gone":
            raise GraphError(410, 100, "(#100) This endpoint has been removed")
        raise GraphError(400, 100, "(#100) Tried accessing nonexisting field (metric) on node type "
                                   "(WhatsAppBusinessFlow)")

    def _metric(self, flow: str, query: MetricQuery) -> dict[str, Any]:
        now = self.sim.now()
        today = datetime.fromtimestamp(now, UTC).date()
        oldest = today - timedelta(days=MAX_DAYS[query.granularity])
        since = query.since or oldest
        until = query.until or today + timedelta(days=1)
        if since < oldest:
            raise GraphError(400, 100, f"(#100) Param since must not be earlier than {oldest.isoformat()} "
                                       f"for granularity {query.granularity}")
        if until < since:
            raise GraphError(400, 100, "(#100) Param until must not be earlier than since")
        if self.total_requests(flow, now) < MIN_REQUESTS:
            raise GraphError(400, 100, f"(#100) Not enough data: the flow generated fewer than {MIN_REQUESTS} "
                                       "endpoint requests", "GraphMethodException")
        return {"granularity": query.granularity, "name": query.name,
                "data_points": self.data_points(flow, query, since, until)}

    def _headers(self, call: int, served: str, throttled: bool = False) -> dict[str, str]:
        used = 100 if throttled else call % 100
        usage = {"call_count": used, "total_cputime": used // 2, "total_time": used // 2}
        return {"X-App-Usage": json.dumps(usage), "facebook-api-version": served}

    def _error(self, error: GraphError, call: int, served: str) -> SimResponse:
        digest = hashlib.blake2b(repr((self.sim.seed, call)).encode(), digest_size=12).digest()
        body: dict[str, Any] = {"message": error.message, "type": error.type, "code": error.code}
        if error.subcode is not None:
            body["error_subcode"] = error.subcode
        body["fbtrace_id"] = "A" + base64.urlsafe_b64encode(digest).decode().rstrip("=")
        throttled = error.code in THROTTLE_MESSAGES
        return SimResponse(error.status, {"error": body}, self._headers(call, served, throttled))
