"""Hundreds of targets on one process (#19): a burst of polls never has more requests in flight
than the bounds (per source, per upstream host), and every target is polled once per interval.
The figures (CPU, lag, RSS at 1,000-10,000 targets) are in `benchmarks/bench.py scale`."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import httpx

from exporter.simulator import SIMULATOR_TOKEN, Fault, Simulator
from tests.conftest import ExporterProcess, free_port, samples_of, write_config
from tests.ledger.test_state import live_simulator  # noqa: F401 - a fixture

INTERVAL = 5.0
PER_SOURCE, PER_HOST = 8, 12


def bird(sim: Simulator, name: str, workspace: str, flows: int) -> str:
    ids = [f"flow-{i:03d}" for i in range(flows)]
    return f"""
    [[sources]]
    type = "bird_flow_runs"
    name = "{name}"
    interval = "{INTERVAL:g}s"
    base_url = "{sim.base_url('bird')}"
    access_key = "{SIMULATOR_TOKEN}"
    workspace_id = "{workspace}"
    flow_ids = {json.dumps(ids)}
    http = {{ retries = 0, max_in_flight = {PER_SOURCE} }}
    """


def test_a_burst_stays_within_the_bounds_and_every_target_is_polled_once_per_interval(
    live_simulator: Simulator, tmp_path: Path  # noqa: F811 - the fixture
) -> None:
    sim = live_simulator
    # Every answer takes 50 ms: 300 polls due within 1.5 s queue up behind the bounds.
    sim.inject(Fault(path="^/bird/", kind="latency", delay=0.05, times=1_000_000))
    port = free_port()
    config = write_config(tmp_path, f'[server]\nlisten = "127.0.0.1:{port}"\n'
                                    f"[limits]\nmax_in_flight_per_host = {PER_HOST}\n"
                                    + bird(sim, "big", "ws-big", 200) + bird(sim, "small", "ws-small", 100))
    process = ExporterProcess(config, port)
    try:
        process.wait_ready()
        time.sleep(3 * INTERVAL + 1)
        text = httpx.get(f"{process.url}/metrics", timeout=10).text
        requests = sim.requests
    finally:
        output = process.stop()
    assert sim.peak_in_flight("/bird/workspaces/ws-big") <= PER_SOURCE
    assert sim.peak_in_flight("/bird/workspaces/ws-small") <= PER_SOURCE
    assert sim.peak_in_flight() <= PER_HOST
    assert sim.peak_in_flight() == PER_HOST  # the burst did fill the host's bound
    polls = samples_of(text, "apimetrics_poll_duration_seconds_count")
    assert len(polls) == 300
    # Ready after everyone's first poll, then three intervals and a second: 4 or 5 polls each.
    assert set(polls.values()) <= {4.0, 5.0}, Counter(polls.values())
    assert not any(samples_of(text, "apimetrics_poll_overruns_total").values())
    assert not any(v for k, v in samples_of(text, "apimetrics_poll_errors_total").items()), output
    # One request per poll: nothing was retried or lost.
    asked = Counter(r.path.split("/")[7] + "/" + r.path.split("/")[3] for r in requests)
    assert asked == Counter({f"{dict(k)['target']}/ws-{dict(k)['source']}": v for k, v in polls.items()})
