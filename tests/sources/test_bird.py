"""Bird flow-run source against the simulator over real sockets.

Expected counters are computed here from the simulator's raw answers: replay
the windows the exporter asked for, keep the newest value of every period,
add them up. That is the ledger's promise, stated independently.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter.simulator import SIMULATOR_TOKEN, Simulator
from exporter.sources.kit.timeparse import parse_timestamp
from tests.conftest import SimHarness, exposition, samples_of

FLOWS = ["flow-a", "flow-b"]


def bird_config(sim: Simulator, extra: str = "", state: str = "") -> str:
    return f"""
    {state}
    [[sources]]
    type = "bird_flow_runs"
    name = "bird"
    base_url = "{sim.base_url('bird')}"
    access_key = "{SIMULATOR_TOKEN}"
    workspace_id = "ws-1"
    flow_ids = {json.dumps(FLOWS)}
    http = {{ retries = 1, backoff = 0.01 }}
    {extra}
    """


Harness = SimHarness


@pytest.fixture
def harness(simulator: Simulator, tmp_path: Path):  # type: ignore[no-untyped-def]
    h = Harness(simulator, tmp_path, bird_config(simulator))
    yield h
    h.close()


def replay(sim: Simulator, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{sim.url}{path}", json=body,
                          headers={"Authorization": f"AccessKey {SIMULATOR_TOKEN}"})
    response.raise_for_status()
    return response.json()


def fold(latest: dict[tuple[str, str, float], float], sim: Simulator, requests: list[Any]) -> None:
    """Record the newest value of every (flow, status, period) the requests returned."""
    for request in requests:
        flow = request.path.split("/")[-2]
        payload = replay(sim, request.path, request.json())
        column = payload["dataColumns"].index("status") if payload["dataColumns"] else None
        for row in payload["results"]:
            status = row["data"][column] if column is not None else ""
            latest[(flow, status, parse_timestamp(row["periodTime"]))] = row["count"]


def expected_totals(latest: dict[tuple[str, str, float], float]) -> dict[tuple[tuple[str, str], ...], float]:
    totals: dict[tuple[tuple[str, str], ...], float] = {}
    for (flow, status, _), count in latest.items():
        key = tuple(sorted({"workspace_id": "ws-1", "flow_id": flow, "status": status}.items()))
        totals[key] = totals.get(key, 0.0) + count
    return totals


def test_counters_equal_what_the_simulator_served(simulator: Simulator, harness: Harness) -> None:
    assert harness.poll()
    latest: dict[tuple[str, str, float], float] = {}
    fold(latest, simulator, simulator.requests)
    assert samples_of(exposition(harness.app), "bird_flow_runs_total") == expected_totals(latest)

    # An hour later: the window moved on, old periods settled, recent ones were revised.
    simulator.clear_requests()
    simulator.clock.frozen += 3600
    assert harness.poll()
    fold(latest, simulator, simulator.requests)
    assert samples_of(exposition(harness.app), "bird_flow_runs_total") == expected_totals(latest)


def test_request_body_and_headers(simulator: Simulator, harness: Harness) -> None:
    assert harness.poll()
    request = simulator.requests[0]
    assert request.method == "POST"
    assert request.path in {f"/bird/workspaces/ws-1/reporting/flowruns/flow/{f}/metrics" for f in FLOWS}
    assert request.headers["authorization"] == f"AccessKey {SIMULATOR_TOKEN}"
    body = request.json()
    assert set(body) == {"periodStart", "periodEnd", "periodGroup", "groupBy"}
    assert body["periodGroup"] == "hour" and body["groupBy"] == ["status"]
    start, end = parse_timestamp(body["periodStart"]), parse_timestamp(body["periodEnd"])
    assert start % 3600 == 0 and end - start >= 3 * 3600  # 3 complete hours + the open one


def test_last_complete_period_gauge(simulator: Simulator, harness: Harness) -> None:
    assert harness.poll()
    text = exposition(harness.app)
    last_hour = simulator.now() - simulator.now() % 3600 - 3600
    for request in simulator.requests:
        flow = request.path.split("/")[-2]
        payload = replay(simulator, request.path, request.json())
        for row in payload["results"]:
            if parse_timestamp(row["periodTime"]) == last_hour:
                key = tuple(sorted({"workspace_id": "ws-1", "flow_id": flow, "status": row["data"][0],
                                    "period_group": "hour"}.items()))
                assert samples_of(text, "bird_flow_runs_last_period")[key] == row["count"]


def test_column_order_is_read_by_name(simulator: Simulator, tmp_path: Path) -> None:
    results = []
    for columns in (["status", "channel"], ["channel", "status"]):
        simulator.vendors["bird"].columns = columns  # type: ignore[attr-defined]
        h = Harness(simulator, tmp_path, bird_config(simulator))
        try:
            assert h.poll()
            results.append(samples_of(exposition(h.app), "bird_flow_runs_total"))
        finally:
            h.close()
    assert results[0] == results[1]
    assert {dict(k)["status"] for k in results[0]} >= {"completed_success", "failed"}


def test_ungrouped_counts(simulator: Simulator, tmp_path: Path) -> None:
    h = Harness(simulator, tmp_path, bird_config(simulator, extra="group_by_status = false"))
    try:
        assert h.poll()
        assert simulator.requests[0].json()["groupBy"] is None
        latest: dict[tuple[str, str, float], float] = {}
        fold(latest, simulator, simulator.requests)
        totals = {tuple((k, v) for k, v in key if k != "status"): value
                  for key, value in expected_totals(latest).items()}
        assert samples_of(exposition(h.app), "bird_flow_runs_total") == totals
    finally:
        h.close()


@pytest.mark.parametrize("group", ["minute", "day", "month"])
def test_every_period_group(simulator: Simulator, tmp_path: Path, group: str) -> None:
    h = Harness(simulator, tmp_path, bird_config(simulator, extra=f'period_group = "{group}"'))
    try:
        assert h.poll()
        latest: dict[tuple[str, str, float], float] = {}
        fold(latest, simulator, simulator.requests)
        assert samples_of(exposition(h.app), "bird_flow_runs_total") == expected_totals(latest)
    finally:
        h.close()


def test_422_is_validation_and_not_retried(
    simulator: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 2,000 minutes exceeds the window the server accepts for minute periods.
    h = Harness(simulator, tmp_path, bird_config(simulator, extra='period_group = "minute"\nlookback = 2000'))
    try:
        assert not h.poll()
        assert len([r for r in simulator.requests if "flow-a" in r.path]) == 1
        errors = samples_of(exposition(h.app), "apimetrics_poll_errors_total")
        assert errors[(("reason", "validation"), ("source", "bird"), ("target", "flow-a"))] == 1
        lines = [r.getMessage() for r in caplog.records if "flow-a failed (validation)" in r.getMessage()]
        assert len(lines) == 1
        assert "InvalidPayload" in lines[0] and ".periodStart: window longer than 1440 minute periods" in lines[0]
    finally:
        h.close()


@pytest.mark.parametrize(
    ("body", "details"),
    [
        ({"periodStart": "2026-01-01T00:00:00Z", "periodEnd": "2026-01-01T05:00:00Z"},
         {".periodGroup": ["property is required"]}),
        ({"periodStart": "2026-01-01T00:00:00Z", "periodEnd": "2026-01-01T05:00:00Z", "periodGroup": "week"},
         {".periodGroup": ["must be one of minute, hour, day, month"]}),
        ({"periodStart": "2026-01-01T00:00:00Z", "periodEnd": "2026-01-01T05:00:00Z", "periodGroup": "hour",
          "extra": 1}, {".extra": ['property "extra" is unsupported']}),
        ({"periodStart": "2026-01-01", "periodEnd": "2026-01-01T05:00:00Z", "periodGroup": "hour"},
         {".periodStart": ["must be a date-time (RFC 3339)"]}),
        ({"periodStart": "2026-01-01T00:00:00Z", "periodEnd": "2026-01-01T05:00:00Z", "periodGroup": "hour",
          "groupBy": ["channel"]}, {".groupBy": ['items must be one of "status"']}),
    ],
)
def test_simulator_validates_like_the_schema(simulator: Simulator, body: dict[str, Any], details: dict[str, Any]) -> None:
    response = httpx.post(f"{simulator.base_url('bird')}/workspaces/ws/reporting/flowruns/flow/f/metrics",
                          json=body, headers={"Authorization": f"AccessKey {SIMULATOR_TOKEN}"})
    assert response.status_code == 422
    assert response.json() == {"code": "InvalidPayload", "message": "One or more fields are invalid", "details": details}


def test_simulator_rejects_missing_key(simulator: Simulator) -> None:
    response = httpx.post(f"{simulator.base_url('bird')}/workspaces/ws/reporting/flowruns/flow/f/metrics", json={})
    assert response.status_code == 401


def test_corrupt_state_file_is_set_aside(simulator: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    text = bird_config(simulator, state=f'[state]\ndir = "{state}"')
    first = Harness(simulator, tmp_path, text)
    try:
        assert first.poll()
    finally:
        first.close()
    files = sorted(state.glob("*.ledger.json"))
    assert len(files) == 2
    files[0].write_bytes(b"\x00garbage{")
    caplog.set_level(logging.INFO)
    second = Harness(simulator, tmp_path, text)
    try:
        assert second.poll()
    finally:
        second.close()
    assert len(list(state.glob("*.corrupt-*"))) == 1
    assert any(r.levelname == "ERROR" and files[0].name in r.getMessage() for r in caplog.records)
    assert len(sorted(state.glob("*.ledger.json"))) == 2  # a fresh ledger was saved in its place
