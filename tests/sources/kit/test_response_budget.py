"""Memory across targets is bounded: concurrent huge answers wait for the process-wide budget of
response bytes instead of piling up, and the memory goes back after the burst (#18, finding 5).

A real exporter process polls six Bird flows whose answers, in one round, are 32 MiB each and
all arrive together. Margins are generous (RSS is not a tight measure): the code before this
test held every body twice at once (chunks + their join), six of them, ~400 MB more."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from exporter.simulator import Fault, Simulator
from tests.conftest import ExporterProcess, free_port, proc_status, samples_of, write_config
from tests.ledger.test_state import live_simulator  # noqa: F401 - a fixture
from tests.sources.test_bird import FLOWS, bird_config

MIB = 2**20
BODY = 32 * MIB


def polls(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(v for k, v in samples_of(text, "apimetrics_poll_duration_seconds_count").items())


def six_flows(sim: Simulator) -> str:
    flows = [*FLOWS, "flow-c", "flow-d", "flow-e", "flow-f"]
    return bird_config(sim, extra='interval = "10s"').replace(repr(FLOWS).replace("'", '"'),
                                                                 repr(flows).replace("'", '"'))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_concurrent_huge_answers_stay_within_the_budget_and_memory_comes_back(
    live_simulator: Simulator, tmp_path: Path  # noqa: F811 - the fixture
) -> None:
    sim = live_simulator
    port = free_port()
    config = write_config(tmp_path, f'[server]\nlisten = "127.0.0.1:{port}"\n'
                                    f"[limits]\nmax_response_bytes_in_flight = {40 * MIB}\n" + six_flows(sim))
    process = ExporterProcess(config, port)
    try:
        process.wait_ready()  # the first round (small answers) is done
        time.sleep(1)
        before = proc_status(process.proc.pid, "VmRSS")
        done = polls(process.url)
        # The next round: every answer 32 MiB, each taking 2 s to arrive, so all six are read at once.
        sim.inject(Fault(path="^/bird/", kind="padding", size=BODY, delay=2.0, times=6))
        deadline = time.monotonic() + 40
        while polls(process.url) < done + 6:
            assert time.monotonic() < deadline, "the round of huge answers did not end"
            time.sleep(0.2)
        time.sleep(1)
        after = {field: proc_status(process.proc.pid, field) for field in ("VmRSS", "VmHWM")}  # VmHWM: peak RSS
        text = httpx.get(f"{process.url}/metrics").text
    finally:
        output = process.stop()
    up = samples_of(text, "apimetrics_target_up")
    assert len(up) == 6 and all(v == 1 for v in up.values()), output  # every huge answer was read
    peak_growth = after["VmHWM"] - before
    held = after["VmRSS"] - before
    # One 32 MiB body in flight at a time (budget 40 MiB): the buffer and its bytes copy.
    assert peak_growth < 4 * BODY + 32 * MIB, (peak_growth / MIB, output)
    assert held < 2 * BODY + 16 * MIB, (held / MIB, output)


def test_an_answer_larger_than_the_whole_budget_fails_as_too_large(
    live_simulator: Simulator, tmp_path: Path  # noqa: F811 - the fixture
) -> None:
    sim = live_simulator
    port = free_port()
    config = write_config(tmp_path, f'[server]\nlisten = "127.0.0.1:{port}"\n'
                                    f"[limits]\nmax_response_bytes_in_flight = {2 * MIB}\n"
                                    + bird_config(sim, extra='interval = "10s"'))
    sim.inject(Fault(path=f"^/bird/.*/{FLOWS[0]}/", kind="padding", size=3 * MIB, times=100))
    process = ExporterProcess(config, port)
    try:
        process.wait_ready()
        text = httpx.get(f"{process.url}/metrics").text
    finally:
        output = process.stop()
    errors = samples_of(text, "apimetrics_poll_errors_total")
    assert errors[(("reason", "response_too_large"), ("source", "bird"), ("target", FLOWS[0]))] == 1, output
    assert samples_of(text, "apimetrics_target_up")[(("source", "bird"), ("target", FLOWS[1]))] == 1
    assert "max_response_bytes_in_flight" in output
