"""Flux families and values (families.py): each type with its aggregations, units, groups and buckets.

Over real sockets against the simulator, expected values coming from replays of
the exporter's own queries (support.py); then the module's functions alone, on
answers and ledger totals written in the test.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from exporter.model import SummaryValue
from exporter.simulator import Simulator
from exporter.simulator.flux import FakeMetric, FluxFake
from exporter.sources.flux.families import (
    FreshAnswer,
    Metric,
    Result,
    families_of,
    latest,
    ledger_series,
    merge,
    metric_samples,
    own_samples,
)
from exporter.sources.kit.periods import MINUTE
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


# --- the functions of families.py -----------------------------------------------------------------

START = 29_666_666 * 60.0  # a minute boundary


def test_family_names_units_and_what_each_exposes() -> None:
    timing = families_of(Metric("request.seconds", "distribution", ("p95", "count", "max"), unit="s"), "1m")
    assert timing.summary is not None and timing.summary.name == "flux_request_seconds"
    assert {a: f.name for a, f in timing.gauges.items()} == {"max": "flux_request_max_seconds"}
    assert timing.count is not None and timing.count.name == "flux_request_seconds#count" and timing.sum is None
    assert timing.exposed() == {"flux_request_max_seconds", "flux_request_seconds", "flux_request_seconds_count",
                                "flux_request_seconds_sum", "flux_request_seconds_created"}
    latency = families_of(Metric("api.latency", "gauge", ("last", "avg"), unit="ms"), "5m")
    assert [f.name for f in latency.gauges.values()] == ["flux_api_latency_seconds", "flux_api_latency_avg_seconds"]
    assert latency.divisor == 1000.0 and latency.gauges["avg"].help.endswith("avg over the latest complete 5m bucket.")
    counter = families_of(Metric("api.requests", "counter", ("sum",)), "1m")
    assert counter.counter is not None and counter.exposed() == {"flux_api_requests_total", "flux_api_requests_created"}
    assert families_of(Metric("api.requests", "counter", ("rate",)), "1m").counter is None
    users = families_of(Metric("dau", "set", ("count",)), "1m")
    assert [f.name for f in users.gauges.values()] == ["flux_dau_cardinality"] and users.exposed() == {
        "flux_dau_cardinality"}


def test_samples_from_the_latest_complete_bucket() -> None:
    current = START + 180  # buckets START, +60, +120 are complete; +180 is open
    base = (("account", "acme"),)
    gauge = Metric("g", "gauge", ("last", "max"))
    answer = FreshAnswer(current + 5, current, {(): {START: {"last": 1.0, "max": 4.0}, START + 60: {"max": 5.0},
                                                     current: {"last": 9.0}}})
    samples = metric_samples(gauge, families_of(gauge, "1m"), answer, base, {}, 0.0, MINUTE)
    # A gauge holds its value: `last` from the newest complete bucket that has it; the open bucket never counts.
    assert [(s.family.name, s.value, s.timestamp) for s in samples] == [
        ("flux_g", 1.0, START), ("flux_g_max", 5.0, START + 60)]

    users = Metric("u", "set", ("count",))
    empty = FreshAnswer(current, current, {(("plan", "pro"),): {START: {"count": 3.0}}})
    (cardinality,) = metric_samples(users, families_of(users, "1m"), empty, base, {}, 0.0, MINUTE)
    assert (cardinality.value, cardinality.timestamp, cardinality.labels) == (0.0, START + 120, (
        ("account", "acme"), ("plan", "pro")))  # nothing in the latest complete bucket: no distinct value

    timing = Metric("t", "distribution", ("p50", "count", "sum", "min"))
    fams = families_of(timing, "1m")
    answer = FreshAnswer(current, current, {(): {START + 120: {"p50": 2.0, "count": 4.0, "sum": 8.0, "min": 1.0}}})
    observed = ledger_series({timing.key: answer}, {timing.key: fams})
    assert observed == {("flux_t#count",): {START + 120: 4.0}, ("flux_t#sum",): {START + 120: 8.0}}
    totals = {("flux_t#count",): 40.0, ("flux_t#sum",): 80.0, ("flux_t#count", "k", "v"): 2.0}
    samples = metric_samples(timing, fams, answer, base, totals, 123.0, MINUTE)
    assert [(s.family.name, s.labels, s.value) for s in samples] == [
        ("flux_t_min", base, 1.0), ("flux_t", base, SummaryValue(((0.5, 2.0),), 40.0, 80.0)),
        # A group the ledger still counts keeps its _count/_sum after it left the answer.
        ("flux_t", (*base, ("k", "v")), SummaryValue((), 2.0, 0.0))]
    assert metric_samples(timing, fams, None, base, {}, 0.0, MINUTE) == []


def test_latest_merge_and_own_samples() -> None:
    buckets = {START: {"last": 1.0}, START + 60: {"last": 2.0}, START + 120: {}}
    assert latest(buckets, "last", START + 120) == (START + 60, 2.0)
    assert latest(buckets, "last", START + 60) == (START, 1.0)
    assert latest(buckets, "max", START + 180) is None
    into: Result = {(): {START: {"p50": 1.0}}}
    merge(into, {(): {START: {"count": 3.0}, START + 60: {"p50": 2.0}}, (("k", "v"),): {START: {"p50": 5.0}}})
    assert into == {(): {START: {"p50": 1.0, "count": 3.0}, START + 60: {"p50": 2.0}},
                    (("k", "v"),): {START: {"p50": 5.0}}}
    base = (("account", "acme"),)
    assert [(s.family.name, s.labels, s.value) for s in own_samples(base, "opensource", 7, 6)] == [
        ("flux_api_info", (*base, ("dialect", "opensource")), 1.0), ("flux_queries_planned", base, 7.0),
        ("flux_queries_completed", base, 6.0)]
    assert [s.family.name for s in own_samples(base, None, 0, 0)] == ["flux_queries_planned", "flux_queries_completed"]
