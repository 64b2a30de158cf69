"""The two wire dialects (dialects.py): what is sent, how the server's dialect is found, and read."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from exporter.simulator import Simulator
from exporter.simulator.flux import FluxFake
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
