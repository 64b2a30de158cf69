"""WhatsApp Flows endpoint metrics (seed 001; Graph quirks from API_NOTES.md).

For each flow (one target) a poll calls, once per configured metric and one
after the other (Graph throttles per app and per business account),

    GET /{api_version}/{flow_id}?fields=metric.name(NAME).granularity(HOUR).since(2026-05-26).until(2026-05-29)

and exports, with HOUR or DAY granularity through the period ledger:

    whatsapp_flow_endpoint_requests_total{flow_id="1234"} 31415
    whatsapp_flow_endpoint_request_errors_total{flow_id="1234",error_type="timeout_error"} 377
    whatsapp_flow_endpoint_request_error_ratio{flow_id="1234"} 0.041
    whatsapp_flow_endpoint_request_duration_seconds_bucket{flow_id="1234",le="1.0"} 17280
    whatsapp_flow_endpoint_availability_checks_total{flow_id="1234",result="failed"} 12
    whatsapp_flow_metrics_insufficient_data{flow_id="1234",metric="ENDPOINT_REQUEST_COUNT"} 0

Readings of the doc:
- `until` is sent as tomorrow's UTC date. Whether `until` is inclusive is not
  said: if it is exclusive, today's buckets (UTC and Pacific alike, as the UTC
  date is never behind the Pacific one) are still inside; if inclusive,
  tomorrow simply has no data yet. Sending today's date would lose today's
  buckets under the exclusive reading.
- `since` is the UTC date `lookback` ago, and the ledger's window starts at
  that date's UTC midnight: every bucket the server can return for it (UTC
  hours from that midnight, Pacific days from 07:00/08:00 UTC) starts at or
  after it, so none is mistaken for a settled one. `lookback` is clamped to the
  oldest date the API allows (30 days for HOUR, 90 for DAY).
- Latency keys are ceilings in seconds: `"N"` goes into every `le` bucket
  >= N, `"10+"` only into `+Inf`. A key of another shape is counted in `+Inf`
  only (the request happened; its latency is unknown) and logged once.
- LIFETIME: `since` is left out, so the server uses its oldest allowed date,
  and the single data point is the running total: exported as the counter
  value directly, with the point's timestamp (the start of its period) as
  `_created`. A total the vendor computes over a sliding window can go down;
  `_created` then moves too, which is how OpenMetrics marks a reset.
- Several entries with one key in a point, or several points with one
  timestamp, are added up.

Graph errors are read from `error.code`, not the HTTP status (throttling has
been seen as 400 and as 429); see `classify_error`.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, ClassVar, Literal, NotRequired
from urllib.parse import quote

from pydantic import BeforeValidator, ConfigDict, Field, SecretStr, TypeAdapter, field_validator, with_config
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from exporter.config.source import SourceConfigBase
from exporter.config.types import Duration
from exporter.errors import EndpointRetired, InvalidResponse, PollError, UpstreamHTTPError, reason_for_status
from exporter.ledger.registry import counter_samples, series_key
from exporter.model import Family, HistogramValue, Kind, Labels, Sample
from exporter.sources.base import Source, SourceContext, Target
from exporter.sources.kit.payloads import coded_error, read_body
from exporter.sources.kit.timeparse import parse_timestamp

log = logging.getLogger(__name__)

# The newest Graph API version released before the vendor's deprecation date of
# this Metrics API (30 April 2026): v25.0, released 18 February 2026, available
# until 29 July 2028 per the vendor's version table. v26.0 (July 2026) came
# after that date; were the API removed as a versioned change, v26.0 would not
# serve it while v25.0 still would.
DEFAULT_API_VERSION = "v25.0"

REQUEST_COUNT = "ENDPOINT_REQUEST_COUNT"
REQUEST_ERROR = "ENDPOINT_REQUEST_ERROR"
ERROR_RATE = "ENDPOINT_REQUEST_ERROR_RATE"
LATENCY = "ENDPOINT_REQUEST_LATENCY_SECONDS_CEIL"
AVAILABILITY = "ENDPOINT_AVAILABILITY"
METRICS = (REQUEST_COUNT, REQUEST_ERROR, ERROR_RATE, LATENCY, AVAILABILITY)
MetricName = Literal[
    "ENDPOINT_REQUEST_COUNT",
    "ENDPOINT_REQUEST_ERROR",
    "ENDPOINT_REQUEST_ERROR_RATE",
    "ENDPOINT_REQUEST_LATENCY_SECONDS_CEIL",
    "ENDPOINT_AVAILABILITY",
]

DAY_SECONDS = 86400.0
DEFAULT_LOOKBACK = {"HOUR": 2 * DAY_SECONDS, "DAY": 7 * DAY_SECONDS}
# The oldest `since` the API accepts, counted back from the current date.
MAX_LOOKBACK = {"HOUR": 30 * DAY_SECONDS, "DAY": 90 * DAY_SECONDS}

REQUESTS = Family("whatsapp_flow_endpoint_requests", Kind.COUNTER,
                  "Requests WhatsApp sent to the flow's endpoint (ENDPOINT_REQUEST_COUNT).")
ERRORS = Family("whatsapp_flow_endpoint_request_errors", Kind.COUNTER,
                "Failed requests to the flow's endpoint by error type (ENDPOINT_REQUEST_ERROR).")
ERROR_RATIO = Family("whatsapp_flow_endpoint_request_error_ratio", Kind.GAUGE,
                     "Errors / requests of the newest period (ENDPOINT_REQUEST_ERROR_RATE).", "ratio")
DURATION = Family("whatsapp_flow_endpoint_request_duration_seconds", Kind.HISTOGRAM,
                  "Latency of requests to the flow's endpoint, rounded up to whole seconds "
                  "(ENDPOINT_REQUEST_LATENCY_SECONDS_CEIL); no _sum: the vendor gives none.", "seconds")
CHECKS = Family("whatsapp_flow_endpoint_availability_checks", Kind.COUNTER,
                "Availability checks of the flow's endpoint by result (ENDPOINT_AVAILABILITY).")
INSUFFICIENT = Family("whatsapp_flow_metrics_insufficient_data", Kind.GAUGE,
                      "1 when the API refused the metric for lack of data (fewer than 250 requests), else 0.")

# Metric → (family, label of the data key); None: a single value under key "value".
COUNTED: dict[str, tuple[Family, str | None]] = {
    REQUEST_COUNT: (REQUESTS, None),
    REQUEST_ERROR: (ERRORS, "error_type"),
    AVAILABILITY: (CHECKS, "result"),
    LATENCY: (DURATION, "latency"),  # a ledger key only: latency keys become `le` buckets
}

BOUNDS = tuple(float(n) for n in range(1, 11))
KNOWN_LATENCY_KEYS = frozenset({*(str(n) for n in range(1, 11)), "10+"})
_CEILING = re.compile(r"\d+(?:\.\d+)?")
_BEYOND = re.compile(r"\d+(?:\.\d+)?\+")

INSUFFICIENT_DATA = "insufficient_data"
AUTH_CODES = frozenset({10, 102, 104, 190})
THROTTLE_CODES = frozenset({4, 17, 32, 613, 130429})
TRANSIENT_CODES = frozenset({1, 2})
_NOT_ENOUGH = re.compile(r"not enough data|fewer than 250|insufficient data", re.IGNORECASE)
_REMOVED = re.compile(r"unknown path components|nonexisting field \(metric\)", re.IGNORECASE)


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


class WhatsAppFlowsConfig(SourceConfigBase):
    """`type = "whatsapp_flows"`: one target per flow."""

    type: Literal["whatsapp_flows"]
    access_token: SecretStr | None = None
    api_version: str = Field(default=DEFAULT_API_VERSION, pattern=r"^v\d+\.\d+$",
                             description="Graph API version, e.g. v25.0")
    flow_ids: list[Annotated[str, Field(pattern=r"^\d+$")]] = Field(min_length=1)
    granularity: Annotated[Literal["HOUR", "DAY", "LIFETIME"], BeforeValidator(_upper)] = "HOUR"
    lookback: Duration | None = None
    metrics: list[MetricName] = Field(default_factory=lambda: list(METRICS), min_length=1)  # type: ignore[arg-type]

    @field_validator("metrics")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    def target_ids(self) -> list[str]:
        return list(dict.fromkeys(self.flow_ids))


# --- upstream payloads ------------------------------------------------------


# Answers hold a point per hour for up to 30 days per metric: they are read
# straight from the body into TypedDicts (payloads.read_body). Counts are
# strict numbers: a bool or a string where a count belongs means the server
# sent something else than the doc says, so it is refused rather than guessed.
# Latency ceilings may arrive as JSON numbers; keys are kept as strings.
@with_config(ConfigDict(coerce_numbers_to_str=True))
class _Entry(TypedDict):
    key: str
    value: Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]


class _Point(TypedDict):
    timestamp: str | float
    data: NotRequired[list[_Entry]]


class _Metric(TypedDict):
    name: str
    granularity: str
    data_points: list[_Point]


class _Answer(TypedDict):
    metric: _Metric


ANSWER = TypeAdapter(_Answer)


Points = dict[float, dict[str, float]]  # period start -> {data key: value}


@dataclass(frozen=True, slots=True)
class Window:
    """What one poll asks for: `since` (None: the server's oldest), `until`,
    and the ledger's window start (None without a ledger)."""

    since: date | None
    until: date
    start: float | None


def window(now: float, granularity: str, lookback: float | None) -> Window:
    today = datetime.fromtimestamp(now, UTC).date()
    until = today + timedelta(days=1)
    if granularity == "LIFETIME" or lookback is None:
        return Window(None, until, None)
    since = datetime.fromtimestamp(now - lookback, UTC).date()
    return Window(since, until, datetime.combine(since, time(), UTC).timestamp())


def effective_lookback(config: WhatsAppFlowsConfig) -> float | None:
    """The configured lookback, defaulted and clamped to what the API allows."""
    if config.granularity == "LIFETIME":
        if config.lookback is not None:
            log.info("%s: lookback is ignored with granularity LIFETIME", config.name)
        return None
    lookback = config.lookback if config.lookback is not None else DEFAULT_LOOKBACK[config.granularity]
    limit = MAX_LOOKBACK[config.granularity]
    if lookback > limit:
        log.warning("%s: lookback %.0f days is beyond the oldest date the API allows for %s; using %.0f days",
                    config.name, lookback / DAY_SECONDS, config.granularity, limit / DAY_SECONDS)
        return limit
    return lookback


def latency_ceiling(key: str) -> float | None:
    """Upper bound in seconds of a latency key; None when only `+Inf` holds it."""
    text = key.strip()
    return float(text) if _CEILING.fullmatch(text) else None


def latency_buckets(counts: Mapping[str, float]) -> tuple[tuple[float, float], ...]:
    """Cumulative `(le, count)` buckets 1..10 and +Inf from per-key counts.

    A key `"N"` counts in every bucket whose bound is >= N; `"10+"` and keys
    that are not a number count in `+Inf` only. Missing keys are zero.
    """
    per_bound: list[list[float]] = [[] for _ in BOUNDS]
    for key, count in counts.items():
        ceiling = latency_ceiling(key)
        if ceiling is None:
            continue
        for index, bound in enumerate(BOUNDS):
            if ceiling <= bound:
                per_bound[index].append(count)
    buckets = tuple((bound, math.fsum(values)) for bound, values in zip(BOUNDS, per_bound, strict=True))
    return (*buckets, (math.inf, math.fsum(counts.values())))


class WhatsAppFlowsSource(Source[WhatsAppFlowsConfig]):
    config_model: ClassVar[type[SourceConfigBase]] = WhatsAppFlowsConfig
    type: ClassVar[str] = "whatsapp_flows"
    default_base_url: ClassVar[str] = "https://graph.facebook.com"
    simulator_prefix: ClassVar[str] = "whatsapp"
    auth_scheme: ClassVar[str] = "Bearer"
    extra_reasons: ClassVar[tuple[str, ...]] = (INSUFFICIENT_DATA,)

    def __init__(self, config: WhatsAppFlowsConfig, context: SourceContext) -> None:
        super().__init__(config, context)
        self.lookback = effective_lookback(config)
        self._logged_keys: set[tuple[str, str]] = set()

    async def poll(self, target: Target) -> list[Sample]:
        asked = window(self.context.clock(), self.config.granularity, self.lookback)
        answers: dict[str, Points] = {}
        refused: dict[str, PollError] = {}
        for metric in self.config.metrics:
            try:
                answers[metric] = await self._fetch(target.id, metric, asked)
            except PollError as exc:
                if exc.reason != INSUFFICIENT_DATA:
                    raise
                # Not an outage: the flow has too little traffic yet. The other
                # metrics go on, and the target stays up.
                refused[metric] = exc
        if refused:
            # One partial problem per poll, like one failure per failed poll.
            first = next(iter(refused.values()))
            self.report(target, PollError(INSUFFICIENT_DATA, f"{', '.join(refused)} refused: {first.message}"))

        base: Labels = (("flow_id", target.id),)
        if asked.start is None:
            samples = self._lifetime_samples(answers, base)
        else:
            samples = self._ledger_samples(target, asked.start, answers, base)
        samples.extend(self._ratio_samples(answers, base))
        samples.extend(Sample(INSUFFICIENT, (*base, ("metric", metric)), 1.0 if metric in refused else 0.0)
                       for metric in self.config.metrics)
        return samples

    # --- requests ---------------------------------------------------------------

    async def _fetch(self, flow: str, metric: str, asked: Window) -> Points:
        fields = f"metric.name({metric}).granularity({self.config.granularity})"
        if asked.since is not None:
            fields += f".since({asked.since.isoformat()})"
        fields += f".until({asked.until.isoformat()})"
        path = f"/{self.config.api_version}/{quote(flow, safe='')}"

        def classify(status: int, body: bytes, where: str) -> PollError | None:
            return classify_error(status, body, f"{where} ({metric})", self.config.api_version)

        body = await self.http.get(path, params={"fields": fields}, classify=classify)
        return self._points(body, metric)

    def _points(self, body: bytes, metric: str) -> Points:
        answer = read_body(ANSWER, body, metric)["metric"]
        if answer["name"] != metric:
            raise InvalidResponse(f"asked for metric {metric}, the answer is for {answer['name']!r}")
        if answer["granularity"].upper() != self.config.granularity:
            raise InvalidResponse(f"{metric}: asked for granularity {self.config.granularity}, "
                                  f"the answer has {answer['granularity']!r}")
        points: Points = {}
        for point in answer["data_points"]:
            try:
                start = parse_timestamp(point["timestamp"])
            except ValueError as exc:
                raise InvalidResponse(f"{metric}: {exc}") from None
            values = points.setdefault(start, {})
            for entry in point.get("data", ()):
                key = entry["key"]
                values[key] = values.get(key, 0.0) + entry["value"]
        return points

    # --- samples ----------------------------------------------------------------

    def _series(self, metric: str, points: Points) -> dict[Labels, dict[float, float]]:
        """`{series labels: {period start: count}}` of a counted metric."""
        label = COUNTED[metric][1]
        series: dict[Labels, dict[float, float]] = {}
        for start, values in points.items():
            for key, value in values.items():
                if label is None and key != "value":
                    self._note_key(metric, key, "is not the single value key \"value\"; ignored")
                    continue
                if metric == LATENCY and key not in KNOWN_LATENCY_KEYS:
                    where = "le buckets >= its value" if latency_ceiling(key) is not None else "le=\"+Inf\" only"
                    self._note_key(metric, key, f"is not one of 1..10, 10+; counted in {where}")
                labels: Labels = () if label is None else ((label, key),)
                periods = series.setdefault(labels, {})
                periods[start] = periods.get(start, 0.0) + value
        return series

    def _ledger_samples(self, target: Target, start: float, answers: dict[str, Points], base: Labels) -> list[Sample]:
        values = {
            series_key(COUNTED[metric][0], labels): periods
            for metric, points in answers.items() if metric in COUNTED
            for labels, periods in self._series(metric, points).items()
        }
        ledger = self.context.ledgers.get(self.name, target.id)
        ledger.observe(start, values)
        families = {COUNTED[m][0].name: COUNTED[m][0] for m in self.config.metrics if m in COUNTED and m != LATENCY}
        samples = counter_samples(ledger, families, base)
        if LATENCY in self.config.metrics:
            latencies = {key[2]: total for key, total in ledger.totals().items() if key[0] == DURATION.name}
            if latencies:
                samples.append(Sample(DURATION, base, HistogramValue(latency_buckets(latencies)),
                                      created=ledger.created))
        return samples

    def _lifetime_samples(self, answers: dict[str, Points], base: Labels) -> list[Sample]:
        samples = []
        for metric, points in answers.items():
            if metric not in COUNTED or not points:
                continue
            created = min(points)
            totals = {labels: math.fsum(periods.values()) for labels, periods in self._series(metric, points).items()}
            family = COUNTED[metric][0]
            if metric == LATENCY:
                latencies = {labels[0][1]: total for labels, total in totals.items()}
                samples.append(Sample(DURATION, base, HistogramValue(latency_buckets(latencies)), created=created))
            else:
                samples.extend(Sample(family, base + labels, total, created=created)
                               for labels, total in sorted(totals.items()))
        return samples

    def _ratio_samples(self, answers: dict[str, Points], base: Labels) -> list[Sample]:
        points = answers.get(ERROR_RATE)
        if not points:
            return []
        newest = max(points)
        value = points[newest].get("value")
        return [] if value is None else [Sample(ERROR_RATIO, base, value, timestamp=newest)]

    def _note_key(self, metric: str, key: str, what: str) -> None:
        if (metric, key) not in self._logged_keys:
            self._logged_keys.add((metric, key))
            log.warning("%s: %s data key %r %s", self.name, metric, key, what, extra={"source": self.name})


# --- errors -------------------------------------------------------------------


def classify_error(status: int, body: bytes, where: str, api_version: str) -> PollError | None:
    """Graph's envelope `{"error": {message, type, code, error_subcode, fbtrace_id}}`, by `code`.

    190/102/104, 10 and 200-299 → auth; 4, 17, 32, 613, 80000-80099, 130429 →
    rate_limited, not retried within the poll (Graph throttling lasts until
    the app's usage decays, minutes; the next poll tries again); 1, 2 →
    http_5xx (temporary, retried);
    100 "not enough data" → insufficient_data (a partial problem); 12,
    "nonexisting field (metric)", "Unknown path components", or 404/410 →
    retired; 100 subcode 33 and 803 → not_found.
    """
    error = coded_error(body)
    if error is None:
        if status in (404, 410):
            return EndpointRetired(f"GET {where}: HTTP {status} (fbtrace_id: none): " + _retired_note(api_version))
        return None
    code, subcode = error["code"], error.get("error_subcode")
    message = str(error.get("message", ""))[:300]
    text = (f"GET {where}: HTTP {status}: Graph error {code}"
            f"{f'/{subcode}' if isinstance(subcode, int) else ''} {error.get('type', '')}: {message} "
            f"(fbtrace_id: {error.get('fbtrace_id') or 'none'})")
    if code in AUTH_CODES or 200 <= code <= 299:
        reason = "auth"
    elif code in THROTTLE_CODES or 80000 <= code <= 80099:
        return UpstreamHTTPError("rate_limited", text, status=status, body=body, retryable=False)
    elif code in TRANSIENT_CODES:
        reason = "http_5xx"
    elif code == 12 or (code in (100, 2500) and _REMOVED.search(message)) or (status in (404, 410) and code != 803):
        return EndpointRetired(f"{text}: {_retired_note(api_version)}")
    elif code == 100 and _NOT_ENOUGH.search(message):
        return PollError(INSUFFICIENT_DATA, f"{text}: the flow has fewer than 250 endpoint requests, "
                                            "so the vendor has no metrics for it yet")
    elif (code == 100 and subcode == 33) or code == 803:
        reason = "not_found"
    else:
        reason = reason_for_status(status)
    return UpstreamHTTPError(reason, text, status=status, body=body)


def _retired_note(api_version: str) -> str:
    return (f"the WhatsApp Flows Metrics API is not served at Graph API {api_version}: Meta deprecated this "
            "API (announced for 30 April 2026) and retires Graph versions about two years after their release; "
            "set api_version to a version that still serves it, or the API is gone")


