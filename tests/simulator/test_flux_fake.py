"""The Flux fake answers like seed 003 documents (or like the open-source server), over real sockets."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from exporter.simulator import SIMULATOR_TOKEN, Simulator
from exporter.simulator.flux import FluxFake


def fake(sim: Simulator) -> FluxFake:
    flux = sim.vendors["flux"]
    assert isinstance(flux, FluxFake)
    return flux


@pytest.fixture(scope="module", autouse=True)
def client() -> Any:
    """One connection pool for the test's own requests (a new client per call costs ~50 ms)."""
    global CLIENT
    with httpx.Client() as CLIENT:
        yield CLIENT


CLIENT: httpx.Client


def sim_get(sim: Simulator, path: str, params: dict[str, str] | None = None,
            headers: dict[str, str] | None = None) -> httpx.Response:
    return CLIENT.get(f"{sim.base_url('flux')}{path}", params=params,
                     headers={"Authorization": f"Bearer {SIMULATOR_TOKEN}"} if headers is None else headers)


@pytest.mark.parametrize(("metric", "valid"), [
    ("users.online", ["last", "avg", "min", "max"]),
    ("api.requests", ["sum", "rate"]),
    ("api.response_time", ["avg", "sum", "min", "max", "p50", "p90", "p95", "p99", "count"]),
    ("daily_active_users", ["count"]),
])
def test_simulator_aggregations_by_type(simulator: Simulator, metric: str, valid: list[str]) -> None:
    every = ["last", "avg", "sum", "min", "max", "p50", "p90", "p95", "p99", "count", "rate"]
    for aggregation in every:
        response = sim_get(simulator, f"/api/v1/metrics/{metric}/query",
                           {"aggregation": aggregation, "interval": "5m"})
        assert response.status_code == (200 if aggregation in valid else 400), aggregation
        if response.status_code == 400:
            assert "Invalid aggregation" in response.json()["error"]
    body = sim_get(simulator, f"/api/v1/metrics/{metric}/query",
                   {"aggregation": ",".join(valid), "interval": "1h"}).json()["data"]
    fields = {"timestamp", *valid} if len(valid) > 1 else {"timestamp", "value"}
    assert body["interval"] == "1h" and body["series"] and all(set(p) == fields for p in body["series"])


def test_simulator_errors(simulator: Simulator) -> None:
    assert sim_get(simulator, "/api/v1/metrics", headers={}).json() == {"error": "Missing API key"}
    response = sim_get(simulator, "/api/v1/metrics", headers={"X-API-Key": "nope"})
    assert response.status_code == 401 and response.json() == {"error": "Invalid API key"}
    assert sim_get(simulator, "/api/v1/metrics", headers={"X-API-Key": SIMULATOR_TOKEN}).status_code == 200
    assert sim_get(simulator, "/api/v1/metrics/nope").status_code == 404
    assert sim_get(simulator, "/api/v1/metrics/nope/query").status_code == 404
    assert sim_get(simulator, "/api/v1/metrics/users.online/query", {"interval": "2m"}).status_code == 400
    fake(simulator).dialect = "opensource"
    empty = sim_get(simulator, "/api/v1/metrics/nope/query", {"aggregation": "avg"})
    assert empty.status_code == 200 and empty.json()["data"] == []
    assert sim_get(simulator, "/api/v1/metrics/nope").status_code == 404
    assert sim_get(simulator, "/api/v1/metrics/users.online/query", {"aggregation": "last,max"}).status_code == 400
    assert set(sim_get(simulator, "/api/v1/metrics").json()) == {"metrics"}


def test_simulator_limiter_answers_429_with_retry_after(simulator: Simulator) -> None:
    fake(simulator).rate_limit = (3, 30.0)
    statuses = [sim_get(simulator, "/api/v1/metrics") for _ in range(4)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429]
    assert 1 <= int(statuses[-1].headers["Retry-After"]) <= 30
    other = sim_get(simulator, "/api/v1/metrics", headers={"X-API-Key": "second"})
    assert other.status_code == 401  # keys are limited separately, unknown keys refused first
    fake(simulator).api_keys.add("second")
    assert sim_get(simulator, "/api/v1/metrics", headers={"X-API-Key": "second"}).status_code == 200


def test_simulator_aggregations_agree_across_buckets_and_groups(simulator: Simulator) -> None:
    def total(params: dict[str, str]) -> float:
        data = sim_get(simulator, "/api/v1/metrics/api.requests/query",
                       {"aggregation": "sum", "from": "2026-05-28T18:00:00Z", "to": "2026-05-28T20:00:00Z",
                        **params}).json()["data"]
        if "groups" in data:
            return sum(p["value"] for points in data["groups"].values() for p in points)
        return sum(p["value"] for p in data["series"])

    minutes = total({"interval": "1m"})
    assert minutes > 0
    assert total({"interval": "1h"}) == minutes == total({"interval": "5m", "group_by": "tags.endpoint"})
    assert math.isclose(total({"interval": "1h", "tags[status]": "200"}) + total({"interval": "1h",
                                                                                  "tags[status]": "500"}), minutes)
