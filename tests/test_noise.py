"""A real exporter process says each thing once and only what matters (#18, finding 9):
SIGTERM with polls in flight is quiet, an overrun is one line, a replaced source's poll in
flight ends without an error, a k6 poll stopped by its deadline leaves no never-awaited
coroutine behind."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from exporter.simulator import Fault, Simulator
from tests.conftest import ExporterProcess, free_port, k6_config, samples_of, write_config


def start(tmp_path: Path, sources: str) -> tuple[ExporterProcess, Path]:
    port = free_port()
    config = write_config(tmp_path, f'[server]\nlisten = "127.0.0.1:{port}"\n' + sources)
    process = ExporterProcess(config, port)
    deadline = time.monotonic() + 30
    while True:  # /metrics answers (not /readyz: these polls are slow on purpose)
        assert process.proc.poll() is None, process.stop()
        try:
            if httpx.get(f"{process.url}/healthz", timeout=1).status_code == 200:
                return process, config
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the exporter did not start"
        time.sleep(0.1)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def k6(sim: Simulator, runs: list[int], interval: str, extra: str = "") -> str:
    return k6_config(sim, runs, extra=extra).replace('interval = "60s"', f'interval = "{interval}"')


def stop(process: ExporterProcess) -> tuple[str, int]:
    output = process.stop()
    return output, process.proc.returncode


def test_sigterm_with_polls_in_flight_is_quiet(simulator: Simulator, tmp_path: Path) -> None:
    simulator.inject(Fault(path="^/k6/", kind="latency", delay=5.0, times=1000))
    process, _ = start(tmp_path, k6(simulator, [103054, 103055, 103056], "2s"))
    wait_for(lambda: len(simulator.requests) >= 3, "three polls in flight")
    output, code = stop(process)
    assert code == 0, output
    assert "ERROR" not in output and "Traceback" not in output and "CancelledError" not in output, output
    assert "shutting down" in output


def test_an_overrun_is_logged_once(simulator: Simulator, tmp_path: Path) -> None:
    # Each poll waits 2.5 s for its first answer, with a deadline of 3 s and an interval of 1 s:
    # the ticks in between are overruns.
    simulator.inject(Fault(path="^/k6/", kind="latency", delay=2.5, times=1000))
    process, _ = start(tmp_path, k6(simulator, [103054], "1s", 'timeout = "3s"'))

    def overruns() -> float:
        text = httpx.get(f"{process.url}/metrics").text
        return samples_of(text, "apimetrics_poll_overruns_total").get((("source", "k6"), ("target", "103054")), 0)

    wait_for(lambda: overruns() >= 2, "two overruns")
    output, _ = stop(process)
    ours = output.count("skipped: the previous poll is still running")
    assert ours >= 2, output
    assert output.count("skipped") == ours, output  # nobody else logs it again
    assert "maximum number of running instances" not in output


def test_a_replaced_source_ends_its_poll_in_flight_quietly(simulator: Simulator, tmp_path: Path) -> None:
    # The first answer of every request comes after 2 s; the poll goes on with more requests
    # after it, on the client the reload closes meanwhile.
    simulator.inject(Fault(path="^/k6/", kind="latency", delay=2.0, times=1000))
    process, config = start(tmp_path, k6(simulator, [103056], "30s"))
    wait_for(lambda: len(simulator.requests) >= 1, "a poll in flight")
    config.write_text(config.read_text().replace("retries = 2", "retries = 1"))  # the source changes
    process.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len(simulator.requests) >= 2, "the new source's poll")
    time.sleep(3)  # the old poll would have gone on by now
    text = httpx.get(f"{process.url}/metrics").text
    output, _ = stop(process)
    assert "config reloaded" in output
    assert "client has been closed" not in output and "crashed" not in output, output
    assert "ERROR" not in output and "Traceback" not in output, output
    internal = samples_of(text, "apimetrics_poll_errors_total")[
        (("reason", "internal"), ("source", "k6"), ("target", "103056"))]
    assert internal == 0


def test_a_k6_poll_stopped_by_its_deadline_leaves_no_coroutine_unawaited(
    simulator: Simulator, tmp_path: Path
) -> None:
    # 150 metrics in batches of 5: dozens of series requests, 4 at a time, each answered after
    # 1.5 s; the 2 s deadline stops the poll while most wait their turn.
    simulator.inject(Fault(path="^/k6/loadtests/v2/series", kind="latency", delay=1.5, times=1000))
    process, _ = start(tmp_path, k6(simulator, [103056], "3s", 'timeout = "2s"\nseries_batch_size = 5'))

    def timeouts() -> float:
        text = httpx.get(f"{process.url}/metrics").text
        return samples_of(text, "apimetrics_poll_errors_total").get(
            (("reason", "timeout"), ("source", "k6"), ("target", "103056")), 0)

    wait_for(lambda: timeouts() >= 2, "two polls stopped by their deadline")
    output, _ = stop(process)
    assert "never awaited" not in output and "RuntimeWarning" not in output, output
    assert "Traceback" not in output, output
