"""Counters survive a restart with `[state] dir`: process-level, run → stop → run."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

from exporter.simulator import Simulator
from tests.conftest import ExporterProcess, free_port, write_config
from tests.sources.test_bird import bird_config, expected_totals, fold

OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0", "Accept-Encoding": "identity"}


def scrape_counters(url: str) -> tuple[dict[tuple[tuple[str, str], ...], float], dict[tuple[tuple[str, str], ...], float], float]:
    """(bird_flow_runs_total by labels, _created by labels, corrections total) from OpenMetrics."""
    totals, created, corrections = {}, {}, 0.0
    for family in openmetrics_families(httpx.get(f"{url}/metrics", headers=OPENMETRICS).text):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            if sample.name == "bird_flow_runs_total":
                totals[key] = sample.value
            elif sample.name == "bird_flow_runs_created":
                created[key] = sample.value
            elif sample.name == "apimetrics_ledger_corrections_total":
                corrections += sample.value
    return totals, created, corrections


def run_until_polled(tmp_path: Path, text: str, sim: Simulator) -> tuple[dict, dict, float]:  # type: ignore[type-arg]
    """Start the exporter, wait for a poll at the simulator's current time, stop it."""
    sim.clear_requests()
    port = free_port()
    config = write_config(tmp_path, f'[server]\nlisten = "127.0.0.1:{port}"\n' + text)
    process = ExporterProcess(config, port)
    try:
        process.wait_ready()
        deadline = time.monotonic() + 20
        while len({r.path for r in sim.requests}) < 2 or not scrape_counters(process.url)[0]:
            assert time.monotonic() < deadline, "no poll reached the simulator"
            time.sleep(0.1)
        return scrape_counters(process.url)
    finally:
        process.stop()


@pytest.fixture
def live_simulator() -> Simulator:
    # Frozen at the real present: the exporter computes its windows from the
    # real clock, and the fake must have data for them.
    with Simulator("127.0.0.1:0", seed=11, freeze_time=time.time()) as sim:
        yield sim  # type: ignore[misc]


def test_restart_with_state_dir_continues_the_counters(live_simulator: Simulator, tmp_path: Path) -> None:
    sim = live_simulator
    state = tmp_path / "state"
    config = bird_config(sim, extra='interval = "1s"', state=f'[state]\ndir = "{state}"')
    latest: dict[tuple[str, str, float], float] = {}

    first, created, _ = run_until_polled(tmp_path, config, sim)
    fold(latest, sim, sim.requests)
    assert first == expected_totals(latest)
    assert len(list(state.glob("*.ledger.json"))) == 2

    sim.clock.frozen += 1200  # twenty minutes on: more runs, late ones arrived
    second, created_again, _ = run_until_polled(tmp_path, config, sim)
    fold(latest, sim, sim.requests)
    assert second == expected_totals(latest)
    assert created_again == created  # the same counters, not new ones
    assert all(second[k] >= first[k] for k in first)

    windows = {r.json()["periodStart"] for r in sim.requests}
    sim.clock.frozen -= 1200  # the vendor now reports less: a downward revision
    third, _, corrections = run_until_polled(tmp_path, config, sim)
    assert corrections >= 1
    if windows == {r.json()["periodStart"] for r in sim.requests}:
        assert third == second  # held back, never decreasing
    else:  # the real clock crossed an hour boundary meanwhile: a new period may add runs
        assert all(third[k] >= second[k] for k in second)


def test_restart_without_state_dir_is_a_documented_reset(live_simulator: Simulator, tmp_path: Path) -> None:
    sim = live_simulator
    config = bird_config(sim, extra='interval = "1s"')
    _, created, _ = run_until_polled(tmp_path, config, sim)
    time.sleep(0.05)
    _, created_again, _ = run_until_polled(tmp_path, config, sim)
    assert created and all(created_again[k] > created[k] for k in created)
