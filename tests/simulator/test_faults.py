"""The simulator's `set` fault, over its HTTP control endpoint and real requests."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from exporter.simulator import SIMULATOR_TOKEN, Simulator
from tests.conftest import FROZEN_NOW

K6_AUTH = {"Authorization": f"Token {SIMULATOR_TOKEN}"}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator("127.0.0.1:0", seed=7, freeze_time=FROZEN_NOW) as simulator:
        yield simulator


def thresholds(sim: Simulator, run: int) -> list[dict[str, object]]:
    url = f"{sim.base_url('k6')}/loadtests/v2/thresholds"
    answer = httpx.get(url, params={"test_run_id": run}, headers=K6_AUTH)
    assert answer.status_code == 200
    return answer.json()["k6-thresholds"]


def test_set_fault_rewrites_a_key_everywhere_for_its_times(sim: Simulator) -> None:
    assert [t["tainted"] for t in thresholds(sim, 103055)] == [False]
    fault = {"path": "/k6/loadtests/v2/thresholds", "kind": "set", "key": "tainted", "value": True, "times": 2}
    assert httpx.post(f"{sim.url}/_sim/faults", json=fault).status_code == 201
    first, second = thresholds(sim, 103055), thresholds(sim, 103054)
    assert [t["tainted"] for t in first] == [True]
    assert [t["tainted"] for t in second] == [True, True, True]
    # Only the key changed, and the fake's own data did not.
    assert {k: v for k, v in first[0].items() if k != "tainted"} == {
        k: v for k, v in thresholds(sim, 103055)[0].items() if k != "tainted"}
    assert [t["tainted"] for t in thresholds(sim, 103055)] == [False]
    assert [t["tainted"] for t in thresholds(sim, 103054)] == [False, True, False]


def test_set_fault_needs_a_key(sim: Simulator) -> None:
    answer = httpx.post(f"{sim.url}/_sim/faults", json={"kind": "set", "value": 1})
    assert answer.status_code == 400
    assert "key" in answer.json()["error"]
