"""The two wire dialects (dialects.py): what is sent, how the server's dialect is found, and read.

First through the exporter against the simulator, then the module's functions
alone on answers written in the test (shapes the simulator never sends).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from exporter.errors import InvalidResponse, UpstreamHTTPError
from exporter.simulator import Simulator
from exporter.simulator.flux import FluxFake
from exporter.sources.flux.dialects import (
    DOCUMENTED,
    OPENSOURCE,
    ServerDialect,
    classify_error,
    definition_type,
    documented_params,
    group_labels,
    list_items,
    listed_metrics,
    opensource_params,
    parse_documented,
    parse_opensource,
    parse_points,
    query_shape,
)
from exporter.sources.flux.families import Metric
from exporter.sources.flux.notes import Notes
from exporter.sources.kit.timeparse import parse_timestamp
from tests.conftest import samples_of
from tests.sources.flux.support import exporter_requests, floor, key, points_of, queries


def test_requests_carry_the_key_in_the_header_only(simulator: Simulator, harness: Any) -> None:
    assert harness().poll()
    for request in exporter_requests(simulator):
        assert "api_key" not in request.query and "x-api-key" not in request.headers
        assert request.method == "GET"
    query = queries(simulator, "api.requests")[0]
    assert set(query.query) == {"from", "to", "interval", "aggregation"}
    assert query.query["interval"] == ["1m"] and query.query["aggregation"] == ["sum"]


def test_opensource_dialect_detected_from_discovery(simulator: Simulator, flux: FluxFake, harness: Any,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    flux.dialect = "opensource"
    caplog.set_level(logging.INFO)
    h = harness()
    now = simulator.now()
    window = floor(now) - 5 * 60
    assert h.poll()
    assert h.poll()
    text = h.text()
    assert samples_of(text, "flux_api_info") == {key(dialect="opensource"): 1.0}
    assert len([r for r in caplog.records if "speaks the opensource dialect" in r.getMessage()]) == 1
    for request in queries(simulator):
        assert set(request.query) == {"since", "bucket", "aggregation"}  # never from/to/interval
        assert "," not in request.query["aggregation"][0] and request.query["bucket"] == ["1 minute"]
    latency = queries(simulator, "api.response_time")
    # Eight aggregations a poll, `count` riding on every point.
    assert sorted(r.query["aggregation"][0] for r in latency[:8]) == sorted(
        ["p50", "p90", "p95", "p99", "sum", "min", "max", "avg"])
    current = floor(now)
    merged: dict[str, dict[float, float]] = {}
    for request in latency[8:]:
        for p in points_of(simulator, request)[()]:
            merged.setdefault(request.query["aggregation"][0], {})[p["t"]] = p[request.query["aggregation"][0]]
            merged.setdefault("count", {})[p["t"]] = p["_count"]
    assert samples_of(text, "flux_api_response_time")[key(quantile="0.95")] == merged["p95"][current - 60]
    assert samples_of(text, "flux_api_response_time_min") == {key(): merged["min"][current - 60]}
    # The first bucket the server returns may be cut by `since`: only buckets from the window count.
    assert samples_of(text, "flux_api_response_time_count") == {
        key(): sum(v for t, v in merged["count"].items() if t >= window)}
    (counter, _) = queries(simulator, "api.requests")
    assert samples_of(text, "flux_api_requests_total") == {
        key(): sum(p["sum"] for p in points_of(simulator, counter)[()] if p["t"] >= window)}


def test_probe_falls_back_to_the_opensource_form(simulator: Simulator, flux: FluxFake, harness: Any,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    flux.dialect = "opensource"
    h = harness("""
    [[sources.metrics]]
    name = "api.requests"
    type = "counter"
    group_by = ["endpoint"]
    [[sources.metrics]]
    name = "users.online"
    type = "gauge"
    """)
    assert h.poll()
    first, second, *rest = queries(simulator)
    assert "from" in first.query and "interval" in first.query  # the documented probe…
    assert first.path == second.path and second.query["since"] == ["7m"]  # …asked again the open-source way
    assert all("since" in r.query and "group_by" not in r.query for r in rest)
    text = h.text()
    assert samples_of(text, "flux_api_info") == {key(dialect="opensource"): 1.0}
    assert set(samples_of(text, "flux_api_requests_total")) == {key()}  # group_by ignored by the server
    assert "ignores group_by" in caplog.text
    assert samples_of(text, "flux_queries_planned") == samples_of(text, "flux_queries_completed") == {key(): 3.0}


# --- the functions of dialects.py, on answers written here -----------------------------------------

TS = "2026-05-28T18:00:00Z"


def distribution(group_by: tuple[str, ...] = ()) -> Metric:
    return Metric("api.response_time", "distribution", ("p50", "p95", "count"), group_by=group_by)


def test_the_first_query_answer_decides_the_dialect(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    dialect = ServerDialect(Notes("flux"), "http://flux.test/", grouped=True)
    metric = distribution()
    assert dialect.assumed == DOCUMENTED and dialect.requests(metric) == 1
    dialect.list_answered(OPENSOURCE)  # an open-source list: guess, not know
    assert dialect.known is None and dialect.assumed == OPENSOURCE
    assert dialect.requests(metric) == 2  # p50 and p95; `count` rides on every point

    assert dialect.settle({"data": [{"time": TS, "value": 1.0}]}, metric) == OPENSOURCE
    assert dialect.settle({"data": []}, metric) == OPENSOURCE
    assert dialect.known == OPENSOURCE
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["flux: the Flux server at http://flux.test/ speaks the opensource dialect",
                        ("flux: the open-source Flux server ignores group_by; "
                         "those metrics are exported without their group labels")]
    assert all(getattr(r, "source", None) == "flux" and r.name == "exporter.sources.flux" for r in caplog.records)
    with pytest.raises(InvalidResponse, match="answered in the documented shape, but this server speaks the "
                                              "opensource dialect"):
        dialect.settle({"data": {"series": []}}, metric)
    with pytest.raises(InvalidResponse, match="neither data.series/data.groups"):
        dialect.settle({"data": None}, metric)


def test_a_known_dialect_is_not_changed_by_a_list() -> None:
    dialect = ServerDialect(Notes("flux"), "http://flux.test/", grouped=False)
    assert dialect.settle({"data": {"groups": {}}}, distribution()) == DOCUMENTED
    dialect.list_answered(OPENSOURCE)
    assert dialect.assumed == DOCUMENTED and dialect.requests(distribution()) == 1


@pytest.mark.parametrize(("payload", "shape"), [
    ({"data": {"series": []}}, DOCUMENTED),
    ({"data": {"groups": {}}}, DOCUMENTED),
    ({"data": []}, OPENSOURCE),
    ({"data": {"series": None}}, None),
    ({"data": {}}, None),
    ({"metrics": []}, None),
    ([], None),
    (None, None),
])
def test_query_shape(payload: Any, shape: str | None) -> None:
    assert query_shape(payload) == shape


def test_points_of_documented_answers() -> None:
    start = parse_timestamp(TS)
    # One aggregation may come as `value`; several come one field each, `value` then ignored.
    assert parse_points([{"timestamp": TS, "value": "2.5"}], ("p50",), "q") == {start: {"p50": 2.5}}
    assert parse_points([{"timestamp": TS, "p50": 1, "value": 9.0}], ("p50", "p95"), "q") == {start: {"p50": 1.0}}
    assert parse_points([{"time": TS, "p50": None}], ("p50",), "q") == {start: {}}
    for points, problem in (({}, "the points are not a list"), ([1], "a point is not an object"),
                            ([{"value": 1}], "a point without timestamp"),
                            ([{"timestamp": TS, "value": True}], "value True is not a number"),
                            ([{"timestamp": TS, "value": "many"}], "value 'many' is not a number"),
                            ([{"timestamp": TS, "value": "nan"}], "value 'nan' is not finite"),
                            ([{"timestamp": TS, "value": float("inf")}], "value inf is not finite")):
        with pytest.raises(InvalidResponse, match=f"^q: {problem}"):
            parse_points(points, ("p50",), "q")


def test_documented_groups_and_opensource_points() -> None:
    start = parse_timestamp(TS)
    grouped = distribution(group_by=("endpoint", "account"))
    answer = {"data": {"groups": {"/users,a1": [{"timestamp": TS, "p50": 1.0, "p95": 2.0}]}}}
    assert parse_documented(answer, grouped, ("p50", "p95"), Notes("flux")) == {
        (("endpoint", "/users"), ("tag_account", "a1")): {start: {"p50": 1.0, "p95": 2.0}}}
    with pytest.raises(InvalidResponse, match="does not split into the 2 values of group_by endpoint, account"):
        parse_documented({"data": {"groups": {"/users": []}}}, grouped, ("p50",), Notes("flux"))
    with pytest.raises(InvalidResponse, match="data.groups in the answer to a query without group_by"):
        parse_documented(answer, distribution(), ("p50",), Notes("flux"))
    # A single key keeps commas in its value.
    assert group_labels(Metric("m", "counter", ("sum",), group_by=("path",)), "a,b") == (("path", "a,b"),)
    # Open source: one aggregation per answer, a distribution's count on every point.
    answer = {"data": [{"time": TS, "value": 3.0, "count": 7}]}
    assert parse_opensource(answer, grouped, "p95") == {(): {start: {"p95": 3.0, "count": 7.0}}}
    assert parse_opensource(answer, Metric("g", "gauge", ("max",)), "max") == {(): {start: {"max": 3.0}}}


def test_list_definition_and_error_answers() -> None:
    assert list_items({"data": [{"name": "a"}]}) == ([{"name": "a"}], DOCUMENTED)
    assert list_items({"metrics": []}) == ([], OPENSOURCE)
    with pytest.raises(InvalidResponse, match="neither a `data` nor a `metrics` list"):
        list_items({"data": {}})
    assert listed_metrics([{"name": "a", "type": "gauge"}, {"name": "b"}]) == [("a", "gauge"), ("b", "None")]
    with pytest.raises(InvalidResponse, match="a metric without a name"):
        listed_metrics([{"name": ""}])
    for payload in ({"data": {"type": "set"}}, {"metric": {"type": "set"}}, {"type": "set"}):
        assert definition_type(payload, "m") == "set"
    with pytest.raises(InvalidResponse, match="GET /api/v1/metrics/m: no known type"):
        definition_type({"data": {"type": "histogram"}}, "m")

    error = classify_error(401, b'{"error": "Invalid API key"}', "/api/v1/metrics")
    assert isinstance(error, UpstreamHTTPError)
    assert (error.reason, error.message, error.status) == ("auth", "GET /api/v1/metrics: HTTP 401: Invalid API key", 401)
    nested = classify_error(400, b'{"error": {"message": "Invalid aggregation"}}', "/q")
    assert nested is not None and (nested.reason, nested.message) == ("http_4xx", "GET /q: HTTP 400: Invalid aggregation")
    assert classify_error(502, b"<html>bad gateway</html>", "/q") is None


def test_parameters_of_each_dialect() -> None:
    metric = Metric("m", "distribution", ("p50", "count"), group_by=("endpoint", "status"), tags=(("method", "GET"),))
    window, now = parse_timestamp(TS), parse_timestamp(TS) + 330
    assert documented_params(metric, ("p50", "count"), "5m", window, now) == [
        ("from", TS), ("to", "2026-05-28T18:05:30Z"), ("interval", "5m"), ("aggregation", "p50,count"),
        ("group_by", "tags.endpoint,tags.status"), ("tags[method]", "GET")]
    # `since` covers the window and one minute more; no group_by (the server ignores it).
    assert opensource_params(metric, "p50", "5m", window, now) == [
        ("since", "7m"), ("bucket", "5 minutes"), ("aggregation", "p50"), ("tags[method]", "GET")]
