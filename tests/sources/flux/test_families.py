"""Flux families and values (families.py): each type with its aggregations, units, groups and buckets.

Over real sockets against the simulator; expected values come from replays of
the exporter's own queries (support.py).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from exporter.simulator import Simulator
from exporter.simulator.flux import FakeMetric, FluxFake
from exporter.sources.kit.timeparse import parse_timestamp
from tests.conftest import samples_of
from tests.sources.flux.support import REPLAY_KEY, Labels, floor, key, points_of, queries


def expected_documented(sim: Simulator, now: float, window: float, latest: dict[Any, float] | None = None,
                        ) -> dict[str, dict[Labels, float]]:
    """Families of the six default metrics from replays of the exporter's queries."""
    latest = {} if latest is None else latest
    current = floor(now)
    out: dict[str, dict[Labels, float]] = {}

    def put(family: str, labels: Labels, value: float) -> None:
        out.setdefault(family, {})[labels] = value

    for request in queries(sim):
        metric = request.path.split("/")[-2]
        aggs = request.query["aggregation"][0].split(",")
        points = points_of(sim, request)[()]
        complete = [p for p in points if p["t"] < current]
        last = next((p for p in points if p["t"] == current - 60), None)
        n = "flux_" + metric.replace(".", "_")
        if metric in ("users.online", "queue.depth"):
            if complete:
                put(n, key(), max(complete, key=lambda p: p["t"])["last"])
        elif metric == "daily_active_users":
            put(f"{n}_cardinality", key(), last["count"] if last else 0.0)
        elif metric == "api.requests":
            for p in points:
                if p["t"] >= window:
                    latest[(metric, p["t"])] = p["sum"]
        elif len(aggs) > 1:  # distributions (the probe asked only p50)
            for agg, q in (("p50", "0.5"), ("p90", "0.9"), ("p95", "0.95"), ("p99", "0.99")):
                if last:
                    out.setdefault(n, {})[key(quantile=q)] = last[agg]
            for agg in ("min", "max", "avg"):
                if last:
                    put(f"{n}_{agg}", key(), last[agg])
            for p in points:
                if p["t"] >= window:
                    latest[(f"{n}_count", p["t"])] = p["count"]
                    latest[(f"{n}_sum", p["t"])] = p["sum"]
    totals: dict[str, float] = {}
    for (what, _), value in latest.items():
        totals[what] = totals.get(what, 0.0) + value
    put("flux_api_requests_total", key(), totals["api.requests"])
    for name in ("flux_api_response_time", "flux_payload_size"):
        put(f"{name}_count", key(), totals[f"{name}_count"])
        put(f"{name}_sum", key(), totals[f"{name}_sum"])
    return out


FAMILIES = ["flux_users_online", "flux_queue_depth", "flux_daily_active_users_cardinality",
            "flux_api_requests_total", "flux_api_response_time", "flux_api_response_time_count",
            "flux_api_response_time_sum", "flux_api_response_time_min", "flux_api_response_time_max",
            "flux_api_response_time_avg", "flux_payload_size", "flux_payload_size_count"]


def test_each_type_discovered_with_its_default_aggregations(simulator: Simulator, harness: Any) -> None:
    h = harness()
    now = simulator.now()
    window = floor(now) - 5 * 60
    assert h.poll()
    text = h.text()
    latest: dict[Any, float] = {}
    expected = expected_documented(simulator, now, window, latest)
    for family in FAMILIES:
        assert samples_of(text, family) == pytest.approx(expected[family]), family
    for family in ("flux_payload_size_sum", "flux_api_response_time_sum"):
        assert samples_of(text, family) == pytest.approx(expected[family])
    assert samples_of(text, "flux_api_info") == {key(dialect="documented"): 1.0}
    types = {m.name: m.type for m in text_families(text)}
    assert types["flux_api_response_time"] == "summary" and types["flux_api_requests"] == "counter"
    # One request per metric (the probe is the single-aggregation gauge), plus the list.
    assert samples_of(text, "flux_queries_planned") == {key(): 7.0}
    assert samples_of(text, "flux_queries_completed") == {key(): 7.0}

    # Three minutes later the window reaches back to the previous poll's start:
    # every bucket counts once, with its newest value.
    simulator.clear_requests()
    simulator.clock.frozen = now + 180
    assert h.poll()
    expected = expected_documented(simulator, now + 180, window, latest)
    text = h.text()
    for family in ("flux_api_requests_total", "flux_api_response_time_count", "flux_payload_size_sum"):
        assert samples_of(text, family) == pytest.approx(expected[family]), family
    (request, *_) = queries(simulator, "api.requests")
    assert parse_timestamp(request.query["from"][0]) == window  # lookback from the previous poll's start


def text_families(text: str) -> list[Any]:
    from prometheus_client.parser import text_string_to_metric_families

    return list(text_string_to_metric_families(text))


def test_configured_metrics_group_by_filters_and_units(simulator: Simulator, harness: Any,
                                                       client: httpx.Client) -> None:
    h = harness("""
    [[sources.metrics]]
    name = "users.online"
    aggregations = ["last", "min", "max", "avg"]
    group_by = ["region"]
    [[sources.metrics]]
    name = "api.response_time"
    unit = "ms"
    aggregations = ["p50", "p99", "count", "sum", "max"]
    group_by = ["tags.endpoint"]
    tags = { method = "GET" }
    [[sources.metrics]]
    name = "api.requests"
    group_by = ["endpoint", "status"]
    """)
    now = simulator.now()
    assert h.poll()
    text = h.text()
    current = floor(now)

    (latency,) = queries(simulator, "api.response_time")  # one request for five aggregations
    assert latency.query["aggregation"] == ["p50,p99,count,sum,max"]
    assert latency.query["group_by"] == ["tags.endpoint"] and latency.query["tags[method]"] == ["GET"]
    quantiles, counts, maxima = {}, {}, {}
    for labels, points in points_of(simulator, latency, ["endpoint"]).items():
        last = next(p for p in points if p["t"] == current - 60)
        for agg, q in (("p50", "0.5"), ("p99", "0.99")):
            quantiles[key(**dict(labels), quantile=q)] = last[agg] / 1000
        maxima[key(**dict(labels))] = last["max"] / 1000
        counts[key(**dict(labels))] = sum(p["count"] for p in points)
    assert {dict(k)["endpoint"] for k in counts} == {"/users", "/orders"}
    assert samples_of(text, "flux_api_response_time_seconds") == pytest.approx(quantiles)
    assert samples_of(text, "flux_api_response_time_seconds_count") == pytest.approx(counts)
    assert samples_of(text, "flux_api_response_time_max_seconds") == pytest.approx(maxima)
    # The filter matters: GET alone counts fewer than both methods.
    unfiltered = client.get(f"{simulator.base_url('flux')}/api/v1/metrics/api.response_time/query",
                           params={**{k: v[0] for k, v in latency.query.items() if k != "tags[method]"},
                                   "aggregation": "count"},
                           headers={"Authorization": f"Bearer {REPLAY_KEY}"}).json()["data"]["groups"]
    assert sum(p["value"] for p in unfiltered["/users"]) > counts[key(endpoint="/users")]

    (online,) = queries(simulator, "users.online")
    for labels, points in points_of(simulator, online, ["region"]).items():
        newest = max((p for p in points if p["t"] < current), key=lambda p: p["t"])
        assert samples_of(text, "flux_users_online")[key(**dict(labels))] == newest["last"]
        for agg in ("min", "max", "avg"):
            assert samples_of(text, f"flux_users_online_{agg}")[key(**dict(labels))] == newest[agg]

    (requests,) = queries(simulator, "api.requests")
    assert requests.query["group_by"] == ["tags.endpoint,tags.status"]
    totals = {key(**dict(labels)): sum(p["sum"] for p in points)
              for labels, points in points_of(simulator, requests, ["endpoint", "status"]).items()}
    assert len(totals) == 4
    assert samples_of(text, "flux_api_requests_total") == pytest.approx(totals)


@pytest.mark.parametrize(("bucket", "seconds", "lookback"), [("5m", 300, 3), ("1h", 3600, 2), ("1d", 86400, 1)])
def test_every_interval(simulator: Simulator, harness: Any, bucket: str, seconds: int, lookback: int) -> None:
    h = harness(f'bucket = "{bucket}"\nlookback = {lookback}\nmetrics = ["users.online", "api.requests"]')
    now = simulator.now()
    assert h.poll()
    text = h.text()
    (counter,) = queries(simulator, "api.requests")
    assert counter.query["interval"] == [bucket]
    assert parse_timestamp(counter.query["from"][0]) == floor(now, seconds) - lookback * seconds
    points = points_of(simulator, counter)[()]
    assert samples_of(text, "flux_api_requests_total") == {key(): sum(p["sum"] for p in points)}
    (gauge,) = queries(simulator, "users.online")
    newest = max((p for p in points_of(simulator, gauge)[()] if p["t"] < floor(now, seconds)), key=lambda p: p["t"])
    assert samples_of(text, "flux_users_online") == {key(): newest["last"]}


def test_a_summary_count_and_a_counter_named_count_stay_apart(simulator: Simulator, flux: FluxFake,
                                                               harness: Any) -> None:
    flux.add(FakeMetric("api.response_time.count", "counter"))
    h = harness('metrics = ["api.response_time", "api.response_time.count"]')
    assert h.poll()
    text = h.text()
    (counter,) = queries(simulator, "api.response_time.count")
    (summary,) = [r for r in queries(simulator, "api.response_time") if "," in r.query["aggregation"][0]]
    assert samples_of(text, "flux_api_response_time_count_total") == {
        key(): sum(p["sum"] for p in points_of(simulator, counter)[()])}
    assert samples_of(text, "flux_api_response_time_count") == {
        key(): sum(p["count"] for p in points_of(simulator, summary)[()])}
