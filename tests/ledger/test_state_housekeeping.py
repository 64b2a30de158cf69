"""State dir housekeeping, on a real exporter process: failing saves are counted per source and
logged once per change of state; temporary files an interrupted save left are removed at start."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from exporter.ledger.state import LedgerStateStore
from exporter.simulator import Simulator
from tests.conftest import ExporterProcess, free_port, samples_of, write_config
from tests.ledger.test_state import live_simulator  # noqa: F401 - a fixture
from tests.sources.test_bird import FLOWS, bird_config


def failures(url: str) -> float:
    found = samples_of(httpx.get(f"{url}/metrics").text, "apimetrics_state_save_failures_total")
    return found.get((("source", "bird"),), -1.0)


def wait_for(condition: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_failing_saves_are_counted_and_logged_once_per_change(
    live_simulator: Simulator, tmp_path: Path  # noqa: F811 - the fixture
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    # A directory where the first flow's state file goes: every save of it fails (as root, a
    # read-only mode would not stop us), the other flow's saves work.
    blocker = LedgerStateStore(state).path_for("bird", FLOWS[0])
    blocker.mkdir()
    port = free_port()
    config = write_config(tmp_path, f'[server]\nlisten = "127.0.0.1:{port}"\n' + bird_config(
        live_simulator, extra='interval = "1s"', state=f'[state]\ndir = "{state}"'))
    process = ExporterProcess(config, port)
    try:
        process.wait_ready()
        wait_for(lambda: failures(process.url) >= 3, "three failed saves counted")
        blocker.rmdir()  # the disk is writable again
        wait_for(blocker.is_file, "the state file saved after the failures")
        count = failures(process.url)
        time.sleep(2.5)  # more successful polls: nothing more is counted
        assert failures(process.url) == count
    finally:
        output = process.stop()
    assert output.count("cannot save counter state") == 1, output
    assert output.count("is saved again") == 1, output
    assert "Traceback" not in output


def test_temporary_files_of_an_interrupted_save_are_removed_at_start(
    live_simulator: Simulator, tmp_path: Path  # noqa: F811 - the fixture
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    ours = state / f".{LedgerStateStore(state).path_for('bird', FLOWS[0]).name}.k3x_9a2f.tmp"
    ours.write_text('{"format": "api-metrics-')  # what a SIGKILL mid-write leaves
    foreign = [state / "notes.tmp", state / ".something-else.tmp", state / "keep.ledger.json.tmp"]
    for path in foreign:
        path.write_text("not ours")
    port = free_port()
    config = write_config(tmp_path, f'[server]\nlisten = "127.0.0.1:{port}"\n' + bird_config(
        live_simulator, extra='interval = "1s"', state=f'[state]\ndir = "{state}"'))
    process = ExporterProcess(config, port)
    try:
        process.wait_ready()
        assert not ours.exists()
        assert all(path.exists() for path in foreign)
        assert failures(process.url) == 0  # the series exists from the start
    finally:
        output = process.stop()
    assert "removed 1 temporary file(s)" in output
