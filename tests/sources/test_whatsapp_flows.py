"""WhatsApp Flows metrics source against the simulator over real sockets.

Expected values are computed here from the simulator's raw answers: replay
every request the exporter made, keep the newest value of every (flow, metric,
key, period), add them up; histogram buckets are rebuilt from the latency keys
by their own arithmetic. That is the source's promise, stated independently.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter.config import ConfigError
from exporter.simulator import SIMULATOR_TOKEN, Fault, Simulator
from exporter.simulator.whatsapp_flows import (
    LATENCY_SHARES,
    MISSING_FLOW,
    QUIET_FLOW,
    WhatsAppFlowsFake,
    pacific_midnight,
)
from exporter.sources.kit.timeparse import parse_timestamp
from exporter.sources.whatsapp_flows import latency_buckets, window
from tests.conftest import FROZEN_NOW, ExporterProcess, exposition, free_port, samples_of, settings_from, write_config
from tests.sources.test_bird import Harness
from tests.test_integration_prometheus import require

FLOWS = ["1234567890123456", "2345678901234567"]
METRICS = ["ENDPOINT_REQUEST_COUNT", "ENDPOINT_REQUEST_ERROR", "ENDPOINT_REQUEST_ERROR_RATE",
           "ENDPOINT_REQUEST_LATENCY_SECONDS_CEIL", "ENDPOINT_AVAILABILITY"]
COUNTERS = {
    "ENDPOINT_REQUEST_COUNT": ("whatsapp_flow_endpoint_requests_total", None),
    "ENDPOINT_REQUEST_ERROR": ("whatsapp_flow_endpoint_request_errors_total", "error_type"),
    "ENDPOINT_AVAILABILITY": ("whatsapp_flow_endpoint_availability_checks_total", "result"),
}
HISTOGRAM = "whatsapp_flow_endpoint_request_duration_seconds"
Key = tuple[tuple[str, str], ...]
# One client for the test's own requests: HTTP.get() builds a client (and an
# SSL context) per call, ~30 ms each.
HTTP = httpx.Client(timeout=10)


def wa_config(sim: Simulator, extra: str = "", flows: list[str] | None = None, retries: int = 2) -> str:
    return f"""
    [[sources]]
    type = "whatsapp_flows"
    name = "wa"
    base_url = "{sim.base_url('whatsapp')}"
    access_token = "{SIMULATOR_TOKEN}"
    flow_ids = {json.dumps(flows or FLOWS)}
    http = {{ retries = {retries}, backoff = 0.01, max_backoff = 0.02 }}
    {extra}
    """


def fake(sim: Simulator) -> WhatsAppFlowsFake:
    return sim.vendors["whatsapp"]  # type: ignore[return-value]


@pytest.fixture
def make(simulator: Simulator, tmp_path: Path) -> Iterator[Any]:
    made: list[Harness] = []

    def build(text: str) -> Harness:
        made.append(Harness(simulator, tmp_path, text))
        return made[-1]

    yield build
    for harness in made:
        harness.close()


# --- independent expectations -------------------------------------------------------


def replay(sim: Simulator, request: Any) -> dict[str, Any]:
    response = HTTP.get(f"{sim.url}{request.path}", params={"fields": request.param("fields")},
                         headers={"Authorization": f"Bearer {SIMULATOR_TOKEN}"})
    response.raise_for_status()
    return response.json()


class Served:
    """Newest value of every (flow, metric, key, period) the exporter's requests returned."""

    def __init__(self) -> None:
        self.latest: dict[tuple[str, str, str, float], float] = {}
        self.newest_rate: dict[str, tuple[float, float]] = {}
        self.points: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def fold(self, sim: Simulator, requests: list[Any]) -> None:
        for request in requests:
            flow = request.path.rsplit("/", 1)[1]
            payload = replay(sim, request)
            metric = payload["metric"]
            self.points[(flow, metric["name"])] = metric["data_points"]
            for point in metric["data_points"]:
                start = parse_timestamp(point["timestamp"])
                for entry in point["data"]:
                    self.latest[(flow, metric["name"], entry["key"], start)] = entry["value"]
                newer = flow not in self.newest_rate or start >= self.newest_rate[flow][0]
                if metric["name"] == "ENDPOINT_REQUEST_ERROR_RATE" and newer:
                    self.newest_rate[flow] = (start, point["data"][0]["value"])

    def totals(self, metric: str) -> dict[tuple[str, str], float]:
        """{(flow, key): sum over periods}."""
        out: dict[tuple[str, str], float] = {}
        for (flow, name, key, _), value in self.latest.items():
            if name == metric:
                out[(flow, key)] = out.get((flow, key), 0.0) + value
        return out

    def counter(self, metric: str) -> dict[Key, float]:
        label = COUNTERS[metric][1]
        expected = {}
        for (flow, key), total in self.totals(metric).items():
            labels = {"flow_id": flow} | ({label: key} if label else {})
            expected[tuple(sorted(labels.items()))] = total
        return expected

    def buckets(self) -> dict[Key, float]:
        """`le` buckets computed directly: a ceiling counts where it fits, `N+` in +Inf only."""
        per_flow: dict[str, dict[str, float]] = {}
        for (flow, key), total in self.totals("ENDPOINT_REQUEST_LATENCY_SECONDS_CEIL").items():
            per_flow.setdefault(flow, {})[key] = total
        expected = {}
        for flow, keys in per_flow.items():
            for bound in range(1, 11):
                count = sum(v for k, v in keys.items() if not k.endswith("+") and float(k) <= bound)
                expected[(("flow_id", flow), ("le", f"{float(bound)}"))] = count
            expected[(("flow_id", flow), ("le", "+Inf"))] = sum(keys.values())
        return expected


def assert_exports(text: str, served: Served) -> None:
    for metric, (family, _) in COUNTERS.items():
        assert samples_of(text, family) == served.counter(metric), family
    assert samples_of(text, f"{HISTOGRAM}_bucket") == served.buckets()
    infinite = {(("flow_id", dict(k)["flow_id"]),): v for k, v in served.buckets().items() if dict(k)["le"] == "+Inf"}
    assert samples_of(text, f"{HISTOGRAM}_count") == infinite
    assert samples_of(text, f"{HISTOGRAM}_sum") == {}
    assert samples_of(text, "whatsapp_flow_endpoint_request_error_ratio") == {
        (("flow_id", flow),): value for flow, (_, value) in served.newest_rate.items()}


# --- values ------------------------------------------------------------------------


def test_counters_and_histogram_equal_what_the_simulator_served(simulator: Simulator, make: Any) -> None:
    h = make(wa_config(simulator))
    served = Served()
    assert h.poll()
    served.fold(simulator, simulator.requests)
    assert_exports(exposition(h.app), served)
    # Requests equal the histogram's count (the fake's requests are its latency keys).
    text = exposition(h.app)
    assert samples_of(text, "whatsapp_flow_endpoint_requests_total") == samples_of(text, f"{HISTOGRAM}_count")

    # Three hours later recent hours were revised upwards; a day later the
    # window moved on (since changed) and the oldest hours settled.
    for step in (3 * 3600, 86400):
        simulator.clear_requests()
        simulator.clock.frozen += step
        assert h.poll()
        served.fold(simulator, simulator.requests)
        assert_exports(exposition(h.app), served)


def test_recent_hours_are_revised_upwards(simulator: Simulator, make: Any) -> None:
    h = make(wa_config(simulator, flows=FLOWS[:1], extra='metrics = ["ENDPOINT_REQUEST_COUNT"]'))
    assert h.poll()
    before = samples_of(exposition(h.app), "whatsapp_flow_endpoint_requests_total")
    first = Served()
    first.fold(simulator, simulator.requests)
    simulator.clock.frozen += 1800  # same hour buckets, later look
    simulator.clear_requests()
    assert h.poll()
    again = Served()
    again.fold(simulator, simulator.requests)
    revised = [k for k, v in again.latest.items() if k in first.latest and v > first.latest[k]]
    assert revised, "the fake must revise recent hours upwards"
    after = samples_of(exposition(h.app), "whatsapp_flow_endpoint_requests_total")
    assert all(after[k] > before[k] for k in before)


@pytest.mark.parametrize("granularity", ["HOUR", "DAY"])
def test_every_metric_per_period(simulator: Simulator, make: Any, granularity: str) -> None:
    h = make(wa_config(simulator, extra=f'granularity = "{granularity}"'))
    assert h.poll()
    assert len(simulator.requests) == len(FLOWS) * len(METRICS)
    served = Served()
    served.fold(simulator, simulator.requests)
    assert_exports(exposition(h.app), served)
    assert set(served.totals("ENDPOINT_REQUEST_ERROR")) >= {(FLOWS[0], "flow_token_expired_error")}  # unlisted type


def test_lifetime_exports_the_running_total_directly(simulator: Simulator, make: Any) -> None:
    h = make(wa_config(simulator, extra='granularity = "LIFETIME"'))
    assert h.poll()
    fields = simulator.requests[0].param("fields")
    assert ".since(" not in fields and ".granularity(LIFETIME)" in fields
    served = Served()
    served.fold(simulator, simulator.requests)
    assert all(len(points) == 1 for points in served.points.values())
    assert_exports(exposition(h.app), served)

    # The value is the total, not a sum of polls: a second poll exports the new total.
    simulator.clock.frozen += 3600
    simulator.clear_requests()
    assert h.poll()
    again = Served()
    again.fold(simulator, simulator.requests)
    assert_exports(exposition(h.app), again)

    # `_created` is the start of the lifetime period (the point's timestamp).
    openmetrics = exposition_openmetrics(h)
    start = parse_timestamp(again.points[(FLOWS[0], "ENDPOINT_REQUEST_COUNT")][0]["timestamp"])
    for family in ("whatsapp_flow_endpoint_requests", HISTOGRAM):
        (line,) = [line for line in openmetrics.splitlines()
                   if line.startswith(f'{family}_created{{flow_id="{FLOWS[0]}"}}')]
        assert float(line.rsplit(" ", 1)[1]) == start


def exposition_openmetrics(h: Harness) -> str:
    return h.app.exposition("application/openmetrics-text; version=1.0.0").decode()


def test_until_is_tomorrow_so_the_open_hour_counts(simulator: Simulator, make: Any) -> None:
    h = make(wa_config(simulator, flows=FLOWS[:1], extra='metrics = ["ENDPOINT_REQUEST_COUNT"]'))
    assert h.poll()
    (request,) = simulator.requests
    now = datetime.fromtimestamp(FROZEN_NOW, UTC)
    since, until = (now - timedelta(days=2)).date(), now.date() + timedelta(days=1)
    assert request.path == f"/whatsapp/v25.0/{FLOWS[0]}"
    assert request.param("fields") == (f"metric.name(ENDPOINT_REQUEST_COUNT).granularity(HOUR)"
                                       f".since({since}).until({until})")
    assert request.headers["authorization"] == f"Bearer {SIMULATOR_TOKEN}"
    served = Served()
    served.fold(simulator, [request])
    open_hour = FROZEN_NOW - FROZEN_NOW % 3600
    assert (FLOWS[0], "ENDPOINT_REQUEST_COUNT", "value", open_hour) in served.latest
    # The fake reads `until` as exclusive: today's date would have lost today.
    fields = request.param("fields").replace(f".until({until})", f".until({now.date()})")
    response = HTTP.get(f"{simulator.base_url('whatsapp')}/v25.0/{FLOWS[0]}", params={"fields": fields},
                         headers={"Authorization": f"Bearer {SIMULATOR_TOKEN}"}).json()
    assert max(parse_timestamp(p["timestamp"]) for p in response["metric"]["data_points"]) < open_hour - 3600 * 19


def test_window_reading() -> None:
    now = datetime(2026, 5, 28, 20, 26, tzinfo=UTC).timestamp()
    asked = window(now, "DAY", 7 * 86400)
    assert (asked.since, asked.until) == (date(2026, 5, 21), date(2026, 5, 29))
    assert asked.start == datetime(2026, 5, 21, tzinfo=UTC).timestamp()
    # Pacific-midnight day buckets of `since` start after the window start.
    assert pacific_midnight(date(2026, 5, 21)) > asked.start
    assert window(now, "LIFETIME", None).since is None


@pytest.mark.parametrize(("moment", "hour"), [(FROZEN_NOW, 7), (datetime(2026, 1, 20, 12, tzinfo=UTC).timestamp(), 8)])
def test_day_buckets_start_at_pacific_midnight(tmp_path: Path, moment: float, hour: int) -> None:
    with Simulator("127.0.0.1:0", seed=7, freeze_time=moment) as simulator:
        h = Harness(simulator, tmp_path, wa_config(simulator, flows=FLOWS[:1],
                                                   extra='granularity = "DAY"\nmetrics = ["ENDPOINT_REQUEST_COUNT"]'))
        try:
            assert h.poll()
            points = replay(simulator, simulator.requests[0])["metric"]["data_points"]
            assert len(points) == 8  # since 7 days ago through today
            assert {p["timestamp"][10:] for p in points} == {f"T{hour:02d}:00:00+0000"}
            served = Served()
            served.fold(simulator, simulator.requests)
            assert samples_of(exposition(h.app), "whatsapp_flow_endpoint_requests_total") == served.counter(
                "ENDPOINT_REQUEST_COUNT")
        finally:
            h.close()


def test_pacific_midnight_matches_the_tz_database() -> None:
    zoneinfo = pytest.importorskip("zoneinfo")
    pacific = zoneinfo.ZoneInfo("America/Los_Angeles")
    day = date(2024, 1, 1)
    while day < date(2028, 1, 1):
        assert pacific_midnight(day) == datetime(day.year, day.month, day.day, tzinfo=pacific).timestamp(), day
        day += timedelta(days=1)


@pytest.mark.parametrize("style", [
    lambda ts: datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00"),
    lambda ts: datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    lambda ts: datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.000000000Z"),
    lambda ts: datetime.fromtimestamp(ts - 8 * 3600, UTC).strftime("%Y-%m-%dT%H:%M:%S-0800"),
    lambda ts: datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S"),
    lambda ts: int(ts),
], ids=["colon", "zulu", "nanoseconds", "pacific-offset", "zoneless", "epoch"])
def test_timestamp_formats(simulator: Simulator, make: Any, style: Any) -> None:
    reference = make(wa_config(simulator))
    assert reference.poll()
    expected = exposition(reference.app)
    fake(simulator).timestamp_format = style
    other = make(wa_config(simulator))
    assert other.poll()
    text = exposition(other.app)
    for family in ("whatsapp_flow_endpoint_requests_total", f"{HISTOGRAM}_bucket",
                   "whatsapp_flow_endpoint_availability_checks_total"):
        assert samples_of(text, family) == samples_of(expected, family)


# --- histogram arithmetic ---------------------------------------------------------


def test_latency_buckets_are_cumulative() -> None:
    # The doc's example: 410 at 1 s, 61 at 3 s, 2 at 10 s, 33 beyond 10 s; other keys missing.
    buckets = dict(latency_buckets({"1": 410, "3": 61, "10": 2, "10+": 33}))
    assert [buckets[float(b)] for b in range(1, 11)] == [410, 410, 471, 471, 471, 471, 471, 471, 471, 473]
    assert buckets[math.inf] == 506
    assert list(dict(latency_buckets({}))) == [*(float(b) for b in range(1, 11)), math.inf]
    assert set(dict(latency_buckets({})).values()) == {0.0}


def test_unusual_latency_keys() -> None:
    buckets = dict(latency_buckets({"2.5": 4, "12": 5, "20+": 6, "unknown": 7, "0": 1}))
    assert buckets[1.0] == 1 and buckets[2.0] == 1 and buckets[3.0] == 5 and buckets[10.0] == 5
    assert buckets[math.inf] == 23


def test_unknown_latency_keys_are_counted_and_logged_once(
    simulator: Simulator, make: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(LATENCY_SHARES, "30+", 0.01)
    h = make(wa_config(simulator, extra='metrics = ["ENDPOINT_REQUEST_LATENCY_SECONDS_CEIL"]'))
    assert h.poll() and h.poll()
    served = Served()
    served.fold(simulator, simulator.requests)
    assert any(key == "30+" for (_, _, key, _) in served.latest)
    assert samples_of(exposition(h.app), f"{HISTOGRAM}_bucket") == served.buckets()
    lines = [r.getMessage() for r in caplog.records if "'30+'" in r.getMessage()]
    assert len(lines) == 1 and 'le="+Inf" only' in lines[0]


# --- Graph errors ----------------------------------------------------------------


def errors_of(h: Harness, flow: str = FLOWS[0]) -> dict[str, float]:
    found = samples_of(exposition(h.app), "apimetrics_poll_errors_total")
    return {dict(k)["reason"]: v for k, v in found.items() if dict(k)["target"] == flow and v}


def up(h: Harness, flow: str) -> float:
    return samples_of(exposition(h.app), "apimetrics_target_up")[(("source", "wa"), ("target", flow))]


def test_wrong_token_is_auth_and_not_retried(simulator: Simulator, make: Any, caplog: pytest.LogCaptureFixture) -> None:
    h = make(wa_config(simulator, flows=FLOWS[:1]).replace(f'"{SIMULATOR_TOKEN}"', '"expired-token"'))
    assert not h.poll()
    assert errors_of(h) == {"auth": 1}
    assert len(simulator.requests) == 1
    (line,) = [r.getMessage() for r in caplog.records if "failed (auth)" in r.getMessage()]
    assert "Graph error 190" in line and "fbtrace_id: A" in line and "expired-token" not in line


@pytest.mark.parametrize(("code", "status"), [(4, 400), (17, 400), (32, 400), (613, 400), (80007, 400),
                                              (80008, 400), (130429, 400), (4, 429)])
def test_throttling_codes_are_rate_limited(simulator: Simulator, make: Any, code: int, status: int) -> None:
    fake(simulator).throttle(times=100, code=code, status=status)
    h = make(wa_config(simulator, flows=FLOWS[:1], retries=0))
    assert not h.poll()
    assert errors_of(h) == {"rate_limited": 1}


@pytest.mark.parametrize("status", [400, 429])
def test_throttling_is_not_retried_within_the_poll(simulator: Simulator, make: Any, status: int) -> None:
    # Graph throttling lasts until the app's usage decays (minutes): a retry
    # within the poll would only be throttled again, so the first answer fails
    # the poll as rate_limited and the next scheduled poll tries again.
    fake(simulator).throttle(times=2, code=80007, status=status)
    h = make(wa_config(simulator, flows=FLOWS[:1]))
    assert not h.poll()
    assert len(simulator.requests) == 1
    assert errors_of(h) == {"rate_limited": 1}
    retries = samples_of(exposition(h.app), "apimetrics_http_retries_total")
    assert retries.get((("reason", "rate_limited"), ("source", "wa")), 0) == 0
    fake(simulator).throttle(times=0)
    simulator.clear_requests()
    h.poll()  # the throttle's second answer
    assert h.poll()  # then the throttling is over
    assert errors_of(h) == {"rate_limited": 2}


@pytest.mark.parametrize("status", [400, 429])
def test_persistent_throttling_fails_as_rate_limited_on_the_first_answer(
    simulator: Simulator, make: Any, status: int
) -> None:
    fake(simulator).throttle(times=100, code=4, status=status)
    h = make(wa_config(simulator, flows=FLOWS[:1], retries=2))
    assert not h.poll()
    assert len(simulator.requests) == 1
    assert errors_of(h) == {"rate_limited": 1}


@pytest.mark.parametrize(("code", "reason", "attempts"), [
    (1, "http_5xx", 3), (2, "http_5xx", 3), (10, "auth", 1), (200, "auth", 1), (294, "auth", 1),
    (100, "http_4xx", 1),
])
def test_other_graph_codes(simulator: Simulator, make: Any, code: int, reason: str, attempts: int) -> None:
    fake(simulator).fail(100, 400 if code != 1 else 500, code, f"(#{code}) something")
    h = make(wa_config(simulator, flows=FLOWS[:1], retries=2))
    assert not h.poll()
    assert errors_of(h) == {reason: 1}
    assert len(simulator.requests) == attempts


def test_transient_code_is_retried_then_succeeds(simulator: Simulator, make: Any) -> None:
    fake(simulator).fail(1, 400, 2, "(#2) Service temporarily unavailable")
    h = make(wa_config(simulator, flows=FLOWS[:1]))
    assert h.poll()


def test_insufficient_data_keeps_the_target_up(simulator: Simulator, make: Any,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="exporter")
    h = make(wa_config(simulator, flows=[FLOWS[0], QUIET_FLOW]))
    assert h.poll()
    assert up(h, QUIET_FLOW) == 1 and up(h, FLOWS[0]) == 1
    assert errors_of(h, QUIET_FLOW) == {"insufficient_data": 1}
    assert errors_of(h, FLOWS[0]) == {}
    gauges = samples_of(exposition(h.app), "whatsapp_flow_metrics_insufficient_data")
    assert gauges == {
        **{(("flow_id", QUIET_FLOW), ("metric", m)): 1.0 for m in METRICS},
        **{(("flow_id", FLOWS[0]), ("metric", m)): 0.0 for m in METRICS},
    }
    assert len([r for r in simulator.requests if QUIET_FLOW in r.path]) == len(METRICS)  # not retried
    # A documented state, not an error: explained once, at INFO.
    (record,) = [r for r in caplog.records if "insufficient_data" in r.getMessage()]
    assert record.levelno == logging.INFO
    assert "fbtrace_id: A" in record.getMessage() and "fewer than 250" in record.getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    # Once the flow has 250 requests, its data comes as usual.
    simulator.clock.frozen += 10 * 86400
    assert h.poll()
    gauges = samples_of(exposition(h.app), "whatsapp_flow_metrics_insufficient_data")
    assert gauges[(("flow_id", QUIET_FLOW), ("metric", "ENDPOINT_REQUEST_COUNT"))] == 0
    assert errors_of(h, QUIET_FLOW) == {"insufficient_data": 1}  # not counted again
    assert samples_of(exposition(h.app), "whatsapp_flow_endpoint_requests_total")[(("flow_id", QUIET_FLOW),)] > 0


def test_insufficient_data_is_explained_once(simulator: Simulator, make: Any,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="exporter")
    h = make(wa_config(simulator, flows=[QUIET_FLOW]))
    for _ in range(3):
        assert h.poll()
    levels = [r.levelno for r in caplog.records if "insufficient_data" in r.getMessage()]
    assert levels == [logging.INFO, logging.DEBUG, logging.DEBUG]
    assert errors_of(h, QUIET_FLOW) == {"insufficient_data": 3}  # still counted at every poll


def test_one_refused_metric_does_not_stop_the_others(simulator: Simulator, make: Any) -> None:
    fake(simulator).fail(1, 400, 100, "(#100) Not enough data to compute this metric")
    h = make(wa_config(simulator, flows=FLOWS[:1]))
    assert h.poll()
    text = exposition(h.app)
    gauges = samples_of(text, "whatsapp_flow_metrics_insufficient_data")
    assert gauges == {(("flow_id", FLOWS[0]), ("metric", m)): float(m == METRICS[0]) for m in METRICS}
    assert samples_of(text, "whatsapp_flow_endpoint_requests_total") == {}
    assert samples_of(text, "whatsapp_flow_endpoint_availability_checks_total")
    assert errors_of(h) == {"insufficient_data": 1}


@pytest.mark.parametrize("mode", [True, "deprecated", "gone", "404-without-envelope"])
def test_retired_api_is_reported_as_such(simulator: Simulator, make: Any, mode: Any,
                                         caplog: pytest.LogCaptureFixture) -> None:
    if mode == "404-without-envelope":
        simulator.inject(Fault(path="/whatsapp/", kind="status", status=404, times=100))
    else:
        fake(simulator).retired = mode
    h = make(wa_config(simulator, flows=FLOWS[:1], extra='api_version = "v26.0"'))
    assert not h.poll()
    assert errors_of(h) == {"retired": 1}
    assert len(simulator.requests) == 1
    lines = [r.getMessage() for r in caplog.records if "retired" in r.getMessage()]
    assert len(lines) == 1
    assert "v26.0" in lines[0] and "deprecated" in lines[0] and "fbtrace_id" in lines[0]


def test_unknown_flow_is_not_found(simulator: Simulator, make: Any) -> None:
    h = make(wa_config(simulator, flows=[MISSING_FLOW]))
    assert not h.poll()
    assert errors_of(h, MISSING_FLOW) == {"not_found": 1}


@pytest.mark.parametrize("change", [
    lambda body: {"id": body["id"]},
    lambda body: {**body, "metric": {k: v for k, v in body["metric"].items() if k != "data_points"}},
    lambda body: {**body, "metric": {**body["metric"], "name": "ENDPOINT_AVAILABILITY"}},
    lambda body: {**body, "metric": {**body["metric"], "granularity": "DAY"}},
    lambda body: {**body, "metric": {**body["metric"], "data_points": [{"timestamp": "yesterday", "data": []}]}},
    lambda body: {**body, "metric": {**body["metric"], "data_points": [
        {"timestamp": "2026-05-28T00:00:00+0000", "data": [{"key": "value", "value": "12"}]}]}},
    lambda body: {**body, "metric": {**body["metric"], "data_points": [
        {"timestamp": "2026-05-28T00:00:00+0000", "data": [{"key": "value", "value": -1}]}]}},
], ids=["no-metric", "no-data-points", "other-name", "other-granularity", "bad-timestamp", "string-value",
        "negative"])
def test_unexpected_shapes_are_invalid_response(simulator: Simulator, make: Any, change: Any) -> None:
    fake(simulator).transform = change
    h = make(wa_config(simulator, flows=FLOWS[:1]))
    assert not h.poll()
    assert errors_of(h) == {"invalid_response": 1}


def test_expired_version_is_served_by_the_oldest_usable_one(simulator: Simulator, make: Any) -> None:
    response = HTTP.get(f"{simulator.base_url('whatsapp')}/v16.0/{FLOWS[0]}",
                         params={"fields": "metric.name(ENDPOINT_REQUEST_COUNT).granularity(DAY)"},
                         headers={"Authorization": f"Bearer {SIMULATOR_TOKEN}"})
    assert response.status_code == 200
    assert response.headers["facebook-api-version"] == "v21.0"
    assert json.loads(response.headers["x-app-usage"])["call_count"] >= 0
    h = make(wa_config(simulator, flows=FLOWS[:1], extra='api_version = "v16.0"'))
    assert h.poll()


# --- config -------------------------------------------------------------------------


@pytest.mark.parametrize(("extra", "problem"), [
    ('api_version = "25.0"', "api_version"),
    ('api_version = "v25"', "api_version"),
    ('granularity = "WEEK"', "granularity"),
    ('metrics = ["ENDPOINT_REQUEST_COUNTS"]', "metrics"),
    ("metrics = []", "metrics"),
    ('lookback = "soon"', "lookback"),
])
def test_config_problems(simulator: Simulator, tmp_path: Path, extra: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from(tmp_path, wa_config(simulator, extra=extra))
    assert any(problem in loc for loc, _ in caught.value.details)


def test_flow_ids_are_graph_ids(simulator: Simulator, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from(tmp_path, wa_config(simulator, flows=["welcome-flow"]))
    assert any("flow_ids" in loc for loc, _ in caught.value.details)


def test_defaults_and_access_token_file(simulator: Simulator, tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text(SIMULATOR_TOKEN + "\n")
    text = wa_config(simulator, extra='granularity = "day"').replace(
        f'access_token = "{SIMULATOR_TOKEN}"', f'access_token_file = "{secret}"')
    source = settings_from(tmp_path, text).sources[0]
    assert source.granularity == "DAY" and source.api_version == "v25.0" and source.metrics == METRICS
    assert source.access_token.get_secret_value() == SIMULATOR_TOKEN


@pytest.mark.parametrize(("granularity", "lookback", "days"), [
    ("HOUR", None, 2), ("DAY", None, 7), ("HOUR", "45d", 30), ("DAY", "200d", 90), ("DAY", "90d", 90),
])
def test_lookback_default_and_clamp(simulator: Simulator, make: Any, granularity: str, lookback: str | None,
                                    days: int, caplog: pytest.LogCaptureFixture) -> None:
    extra = f'granularity = "{granularity}"\nmetrics = ["ENDPOINT_REQUEST_COUNT"]'
    extra += f'\nlookback = "{lookback}"' if lookback else ""
    h = make(wa_config(simulator, flows=FLOWS[:1], extra=extra))
    assert h.poll()  # the server accepts the clamped since
    since = simulator.requests[0].param("fields").split(".since(")[1][:10]
    today = datetime.fromtimestamp(FROZEN_NOW, UTC).date()
    assert date.fromisoformat(since) == today - timedelta(days=days)
    clamped = [r for r in caplog.records if "beyond the oldest date" in r.getMessage()]
    assert len(clamped) == (1 if days < int((lookback or "0d")[:-1]) else 0)


# --- the simulator's strictness -----------------------------------------------------


@pytest.mark.parametrize("fields", [
    "metric.name(ENDPOINT_REQUEST_COUNT).granularity(HOUR",
    "metric.name(ENDPOINT_REQUEST_COUNT)).granularity(HOUR)",
    "metric.name(ENDPOINT_REQUEST_COUNT).granularity((HOUR))",
    "metric.name(REQUESTS).granularity(HOUR)",
    "metric.name(ENDPOINT_REQUEST_COUNT).granularity(WEEK)",
    "metric.name(ENDPOINT_REQUEST_COUNT).granularity(HOUR).since(2026-5-1)",
    "metric.name(ENDPOINT_REQUEST_COUNT).granularity(HOUR).since(2026-02-30)",
    "metric.name(ENDPOINT_REQUEST_COUNT).granularity(HOUR).from(2026-05-01)",
    "metric.name(ENDPOINT_REQUEST_COUNT).name(ENDPOINT_REQUEST_COUNT).granularity(HOUR)",
    "metric.granularity(HOUR)",
    "metric.name(ENDPOINT_REQUEST_COUNT).granularity(HOUR)x",
    "metric.name(ENDPOINT_REQUEST_COUNT).granularity(HOUR),",
    "metrics.name(ENDPOINT_REQUEST_COUNT).granularity(HOUR)",
    "metric.name(ENDPOINT_REQUEST_COUNT).granularity(HOUR).since(2026-04-01)",  # older than 30 days
    "metric.name(ENDPOINT_REQUEST_COUNT).granularity(HOUR).since(2026-05-20).until(2026-05-10)",
])
def test_simulator_refuses_malformed_fields(simulator: Simulator, fields: str) -> None:
    response = HTTP.get(f"{simulator.base_url('whatsapp')}/v25.0/{FLOWS[0]}", params={"fields": fields},
                         headers={"Authorization": f"Bearer {SIMULATOR_TOKEN}"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 100 and error["fbtrace_id"] and error["type"] and error["message"]


def test_simulator_date_limits_and_lowercase_granularity(simulator: Simulator) -> None:
    today = datetime.fromtimestamp(FROZEN_NOW, UTC).date()

    def get(fields: str) -> httpx.Response:
        return HTTP.get(f"{simulator.base_url('whatsapp')}/v25.0/{FLOWS[0]}", params={"fields": fields},
                         headers={"Authorization": f"Bearer {SIMULATOR_TOKEN}"})

    assert get(f"metric.name(ENDPOINT_REQUEST_COUNT).granularity(day).since({today - timedelta(days=90)})"
               ).json()["metric"]["granularity"] == "DAY"
    assert get(f"metric.name(ENDPOINT_REQUEST_COUNT).granularity(DAY).since({today - timedelta(days=91)})"
               ).status_code == 400
    assert get(f"metric.name(ENDPOINT_REQUEST_COUNT).granularity(HOUR).since({today - timedelta(days=30)})"
               ).status_code == 200


def test_simulator_error_rate_is_errors_over_requests(simulator: Simulator) -> None:
    def points(metric: str) -> dict[str, list[dict[str, Any]]]:
        body = HTTP.get(f"{simulator.base_url('whatsapp')}/v25.0/{FLOWS[0]}",
                         params={"fields": f"metric.name({metric}).granularity(DAY)"},
                         headers={"Authorization": f"Bearer {SIMULATOR_TOKEN}"}).json()
        return {p["timestamp"]: p["data"] for p in body["metric"]["data_points"]}

    requests, errors, rates = (points(m) for m in METRICS[:3])
    assert requests.keys() == rates.keys() and len(rates) > 30
    for stamp, rate in rates.items():
        total = requests[stamp][0]["value"]
        assert rate[0]["value"] == pytest.approx(sum(e["value"] for e in errors.get(stamp, [])) / total)


# --- promtool -------------------------------------------------------------------------


def test_promtool_finds_nothing(simulator: Simulator, make: Any) -> None:
    promtool = require("promtool")
    for granularity in ("HOUR", "LIFETIME"):
        h = make(wa_config(simulator, flows=[*FLOWS, QUIET_FLOW], extra=f'granularity = "{granularity}"'))
        assert h.poll()
        text = exposition(h.app)
        ours = "\n".join(line for line in text.splitlines()
                         if line.startswith(("whatsapp_", "# HELP whatsapp_", "# TYPE whatsapp_"))) + "\n"
        assert "whatsapp_flow_endpoint_request_duration_seconds_bucket" in ours
        result = subprocess.run([promtool, "check", "metrics"], input=ours, capture_output=True, text=True,
                                check=False)
        assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_a_throttled_source_with_a_short_interval_ends_every_poll_by_its_deadline(
    simulator: Simulator, tmp_path: Path
) -> None:
    # #18 finding 8, on a real process with the default retry settings: Graph code 4 inside HTTP
    # 400 on every request, a 2 s interval. Each poll ends at the first answer, counted as
    # rate_limited; none runs into its deadline or the next poll.
    fake(simulator).throttle(times=100_000, code=4, status=400)
    port = free_port()
    flows = [*FLOWS, "3456789012345678"]
    text = wa_config(simulator, 'interval = "2s"', flows=flows).replace(
        "http = { retries = 2, backoff = 0.01, max_backoff = 0.02 }", "")
    process = ExporterProcess(write_config(tmp_path, f'[server]\nlisten = "127.0.0.1:{port}"\n' + text), port)
    try:
        process.wait_ready()
        time.sleep(7)
        exposition_text = HTTP.get(f"{process.url}/metrics").text
    finally:
        output = process.stop()
    errors = samples_of(exposition_text, "apimetrics_poll_errors_total")
    counts = samples_of(exposition_text, "apimetrics_poll_duration_seconds_count")
    within = samples_of(exposition_text, "apimetrics_poll_duration_seconds_bucket")
    overruns = samples_of(exposition_text, "apimetrics_poll_overruns_total")
    for flow in flows:
        target = (("source", "wa"), ("target", flow))
        polls = counts[target]
        assert polls >= 3, output
        assert errors[(("reason", "rate_limited"), *target)] == polls, output
        assert errors[(("reason", "timeout"), *target)] == 0, output
        assert within[(("le", "2.5"), *target)] == polls  # every poll ended by its 2 s deadline
        assert overruns[target] == 0, output
    assert output.count("failed (rate_limited)") == len(flows)  # once per flow, then at DEBUG


def teardown_module() -> None:
    HTTP.close()
