"""The Pluto fake behaves like the open-source server (API_NOTES.md), over real sockets."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from exporter.simulator import SIMULATOR_TOKEN, Simulator
from exporter.simulator.pluto import PROJECT, PlutoFake


@pytest.fixture
def get(simulator: Simulator) -> Iterator[Any]:
    with httpx.Client(base_url=simulator.base_url("pluto"), headers={"Authorization": f"Bearer {SIMULATOR_TOKEN}"}) as c:
        def call(path: str, **params: Any) -> httpx.Response:
            return c.get(f"/api/runs/{path}", params=params)
        yield call


def metrics(get: Any, **params: Any) -> list[dict[str, Any]]:
    response = get("metrics", projectName=PROJECT, **params)
    assert response.status_code == 200, response.text
    return response.json()["metrics"]


def sql_stride(total: int, limit: int) -> list[int]:
    """Row numbers (from 1) the server's query keeps:
    `total_rows <= limit OR rn % ceiling(total_rows / limit) = 1 OR rn = total_rows`."""
    return [rn for rn in range(1, total + 1)
            if total <= limit or rn % math.ceil(total / limit) == 1 or rn == total]


@pytest.mark.parametrize("limit", [1, 7, 100, 2000, 10_000])
def test_stride_sampling_is_the_servers(get: Any, limit: int) -> None:
    newest = 51_842  # run 4105 logs every step at 0.05/s for 12 days and 40 s at the frozen instant
    rows = metrics(get, runId=4105, logName="train/loss", limit=limit)
    assert [int(r["step"]) for r in rows] == [rn - 1 for rn in sql_stride(newest + 1, limit)]
    assert len(rows) <= limit + 1


def test_limit_applies_per_log_name_and_rows_are_ordered(get: Any) -> None:
    rows = metrics(get, runId=4101, limit=10)
    names = [r["logName"] for r in rows]
    assert names == sorted(names)
    for name in set(names):
        steps = [int(r["step"]) for r in rows if r["logName"] == name]
        assert steps == sorted(steps) and len(steps) <= 11
    assert len(set(names)) == 7


def test_filters(get: Any) -> None:
    window = metrics(get, runId=4101, logName="train/loss", stepMin=100, stepMax=199)
    assert [int(r["step"]) for r in window] == list(range(100, 200))
    val = metrics(get, runId=4101, logGroup="val", stepMin=1000, stepMax=1300)
    assert {(r["logName"], int(r["step"])) for r in val} == {
        (name, step) for name in ("val/loss", "val/acc@top5") for step in (1000, 1100, 1200, 1300)}


def test_quirks_of_the_rows(get: Any) -> None:
    rows = metrics(get, runId=4101, logName="train/grad_norm", stepMin=495, stepMax=505)
    assert {type(r["step"]) for r in rows} == {int, str}
    assert rows[0]["time"].count(" ") == 1 and "T" not in rows[0]["time"]
    flagged = {int(r["step"]): (r["value"], r["valueFlag"]) for r in rows if r["valueFlag"]}
    assert flagged == {500: (0, "NaN")}
    assert "T" in metrics(get, runId=4103, logName="train/loss", stepMax=0)[0]["time"]


@pytest.mark.parametrize(("params", "path"), [
    ({"runId": 4101, "limit": 0}, "limit"),
    ({"runId": 4101, "limit": 10_001}, "limit"),
    ({"runId": 4101, "limit": "many"}, "limit"),
    ({"runId": 4101, "stepMin": -1}, "stepMin"),
    ({"runId": 4101, "stepMax": 1.5}, "stepMax"),
    ({}, "runId"),
])
def test_invalid_parameters_are_zod_400s(get: Any, params: dict[str, Any], path: str) -> None:
    response = get("metrics", projectName=PROJECT, **params)
    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False and body["error"]["name"] == "ZodError"
    assert [issue["path"] for issue in body["error"]["issues"]] == [[path]]


def test_auth(simulator: Simulator) -> None:
    url = f"{simulator.base_url('pluto')}/api/runs/metrics"
    missing = httpx.get(url, params={"runId": 4101, "projectName": PROJECT})
    assert (missing.status_code, missing.json()) == (401, {"error": "Unauthorized"})
    wrong = httpx.get(url, params={"runId": 4101, "projectName": PROJECT}, headers={"Authorization": "Bearer nope"})
    assert (wrong.status_code, wrong.json()) == (401, {"error": "Unauthorized", "message": "Invalid API key"})


def test_unknown_or_future_run_is_empty(get: Any, simulator: Simulator) -> None:
    assert metrics(get, runId=999) == []
    assert get("metrics", projectName="nope", runId=4101).json() == {"metrics": []}
    assert metrics(get, runId=4106) == []  # starts 30 minutes after the anchor
    fake = simulator.vendors["pluto"]
    assert isinstance(fake, PlutoFake)
    simulator.clock.frozen = fake.anchor + 1800 + 10
    assert [int(r["step"]) for r in metrics(get, runId=4106, logName="train/loss")] == list(range(21))


def test_reservoir_mode_returns_exactly_limit_rows(get: Any, simulator: Simulator) -> None:
    fake = simulator.vendors["pluto"]
    assert isinstance(fake, PlutoFake)
    fake.sampling = "reservoir"
    rows = metrics(get, runId=4105, logName="train/loss", limit=100)
    assert len(rows) == 100 and int(rows[-1]["step"]) != 51_842


def test_run_list_pages(get: Any) -> None:
    first = get("list", projectName=PROJECT, limit=200).json()
    second = get("list", projectName=PROJECT, limit=200, offset=200).json()
    assert first["total"] == second["total"] == 257  # 4106 has not started yet
    runs = first["runs"] + second["runs"]
    assert len(runs) == 257 and len({r["id"] for r in runs}) == 257
    created = [r["createdAt"] for r in runs]
    assert created == sorted(created, reverse=True)
    assert {r["status"] for r in runs} == {"RUNNING", "COMPLETED", "FAILED", "TERMINATED", "CANCELLED"}
    assert next(r for r in second["runs"] if r["id"] == 4105)["status"] == "RUNNING"
    assert get("list", projectName=PROJECT, limit=201).status_code == 400
    assert get("list", projectName="nope").json() == {"runs": [], "total": 0}
