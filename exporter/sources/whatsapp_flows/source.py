"""`WhatsAppFlowsSource`: one flow per target, its metrics every poll and, for backfill, its history."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import ClassVar
from urllib.parse import quote

from exporter.config.source import SourceConfigBase
from exporter.errors import InvalidResponse, PollError
from exporter.ledger.history import counter_history, history_samples
from exporter.ledger.registry import counter_samples, series_key
from exporter.model import HistogramValue, Labels, Sample
from exporter.sources.base import Source, SourceContext, Target
from exporter.sources.kit.payloads import read_body
from exporter.sources.kit.timeline import ordered
from exporter.sources.kit.timeparse import parse_timestamp
from exporter.sources.whatsapp_flows.config import (
    DAY_SECONDS,
    ERROR_RATE,
    LATENCY,
    MAX_LOOKBACK,
    WhatsAppFlowsConfig,
    Window,
    effective_lookback,
    window,
)
from exporter.sources.whatsapp_flows.families import (
    COUNTED,
    DURATION,
    ERROR_RATIO,
    INSUFFICIENT,
    KNOWN_LATENCY_KEYS,
    latency_buckets,
    latency_ceiling,
)
from exporter.sources.whatsapp_flows.graph import ANSWER, INSUFFICIENT_DATA, InsufficientData, Points, classify_error

log = logging.getLogger("exporter.sources.whatsapp_flows")  # one logger name for the package


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
        answers, refused = await self._fetch_all(target, asked)
        if refused:
            # One partial problem per poll, like one failure per failed poll.
            first = next(iter(refused.values()))
            self.report(target, InsufficientData(
                f"the flow has fewer than 250 endpoint requests, so WhatsApp computes no {', '.join(refused)} "
                "for it yet. Not an outage: the target stays up and whatsapp_flow_metrics_insufficient_data "
                f"is 1 for these metrics until the flow has enough traffic. The vendor's answer: {first.message}"))

        base: Labels = (("flow_id", target.id),)
        if asked.start is None:
            samples = self._lifetime_samples(answers, base)
        else:
            samples = self._ledger_samples(target, asked.start, answers, base)
        samples.extend(self._ratio_samples(answers, base))
        samples.extend(Sample(INSUFFICIENT, (*base, ("metric", metric)), 1.0 if metric in refused else 0.0)
                       for metric in self.config.metrics)
        return samples

    def check_range(self, since: float, until: float) -> None:
        if self.config.granularity == "LIFETIME":
            raise ValueError(f"{self.name}: granularity LIFETIME has a single running total and no history; "
                             "set granularity to HOUR or DAY to backfill")
        limit = MAX_LOOKBACK[self.config.granularity]
        oldest = window(self.context.clock(), self.config.granularity, limit).since
        if oldest is not None and datetime.fromtimestamp(since, UTC).date() < oldest:
            raise ValueError(f"{self.name}: --since {datetime.fromtimestamp(since, UTC):%Y-%m-%d} is older than the "
                             f"{limit / DAY_SECONDS:.0f} days the API serves with granularity "
                             f"{self.config.granularity} (the oldest date allowed is {oldest})")

    async def history(self, target: Target, since: float, until: float) -> AsyncIterator[list[Sample]]:
        """A backfill of one flow: counters from 0 at `since` with each
        complete period's count (at the period's end), the latency histogram
        the same way, and each period's error ratio (at its start)."""
        first = datetime.fromtimestamp(since, UTC).date()
        asked = Window(first, datetime.fromtimestamp(until, UTC).date() + timedelta(days=1), None)
        answers, refused = await self._fetch_all(target, asked)
        for exc in refused.values():
            log.warning("%s/%s: %s", self.name, target.id, exc.message)
        step = 3600.0 if self.config.granularity == "HOUR" else DAY_SECONDS
        values = {series_key(COUNTED[metric][0], labels): periods
                  for metric, points in answers.items() if metric in COUNTED
                  for labels, periods in self._series(metric, points).items()}
        totals = counter_history(values, lambda start: start + step, since, until)
        base: Labels = (("flow_id", target.id),)
        counted = {COUNTED[m][0].name: COUNTED[m][0] for m in answers if m in COUNTED and m != LATENCY}
        samples = history_samples(totals, counted, base, since)
        latency = {key[2]: points for key, points in totals.items() if key[0] == DURATION.name}
        if latency:
            line = [(when, HistogramValue(latency_buckets(counts))) for when, counts in _aligned(latency)]
            samples.append(Sample(DURATION, base, line[-1][1], timestamp=line[-1][0], created=since,
                                  history=tuple(line[:-1])))
        ratio = [(start, value) for start, value in ordered(
            (start, values["value"]) for start, values in (answers.get(ERROR_RATE) or {}).items()
            if "value" in values) if since <= start and start + step <= until]
        if ratio:
            samples.append(Sample(ERROR_RATIO, base, ratio[-1][1], timestamp=ratio[-1][0], history=tuple(ratio[:-1])))
        yield samples

    # --- requests ---------------------------------------------------------------

    async def _fetch_all(self, target: Target, asked: Window) -> tuple[dict[str, Points], dict[str, PollError]]:
        """Every configured metric's answer, and those refused for too little
        data: not an outage (the flow has little traffic yet), so the other
        metrics go on and the target stays up."""
        answers: dict[str, Points] = {}
        refused: dict[str, PollError] = {}
        for metric in self.config.metrics:
            try:
                answers[metric] = await self._fetch(target.id, metric, asked)
            except PollError as exc:
                if exc.reason != INSUFFICIENT_DATA:
                    raise
                refused[metric] = exc
        return answers, refused

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
        """The newest bucket's error ratio; the earlier buckets of the answer
        as its history, each sent once by push sinks at its own time."""
        line = ordered((start, values["value"]) for start, values in (answers.get(ERROR_RATE) or {}).items()
                       if "value" in values)
        if not line:
            return []
        (newest, value), history = line[-1], tuple(line[:-1])
        return [Sample(ERROR_RATIO, base, value, timestamp=newest, history=history)]

    def _note_key(self, metric: str, key: str, what: str) -> None:
        if (metric, key) not in self._logged_keys:
            self._logged_keys.add((metric, key))
            log.warning("%s: %s data key %r %s", self.name, metric, key, what, extra={"source": self.name})


def _aligned(series: Mapping[str, list[tuple[float, float]]]) -> list[tuple[float, dict[str, float]]]:
    """Running totals of several keys at every time any of them has a point:
    each key's newest value at or before that time."""
    times = sorted({when for points in series.values() for when, _ in points})
    seen, current = dict.fromkeys(series, 0), dict.fromkeys(series, 0.0)
    out = []
    for when in times:
        for key, points in series.items():
            while seen[key] < len(points) and points[seen[key]][0] <= when:
                current[key] = points[seen[key]][1]
                seen[key] += 1
        out.append((when, dict(current)))
    return out
