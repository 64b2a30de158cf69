"""SIGTERM with OTLP points still queued: the exporter as a real child process flushes, then exits 0."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from exporter.simulator import Simulator
from tests.conftest import ExporterProcess, free_port, k6_config, write_config
from tests.otlp_receiver import OtlpReceiver


def start_exporter(simulator: Simulator, tmp_path: Path, receiver: OtlpReceiver, grace: str) -> ExporterProcess:
    port = free_port()
    config = write_config(tmp_path, f'[server]\nlisten = "127.0.0.1:{port}"\n'
                          + k6_config(simulator, [103054, 103055]).replace('interval = "60s"', 'interval = "5s"')
                          + f"""
    [otlp]
    enabled = true
    protocol = "{receiver.protocol}"
    endpoint = "{receiver.endpoint}"
    timeout = "1s"
    backoff = "200ms"
    max_backoff = "500ms"
    shutdown_grace = "{grace}"
    """)
    process = ExporterProcess(config, port)
    process.wait_ready()
    return process


def self_metric(process: ExporterProcess, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{process.url}/metrics").text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    raise AssertionError(f"{name} not exposed")


def wait_until_retrying(process: ExporterProcess) -> float:
    """Points are queued and the first attempt failed; returns the queue size."""
    deadline = time.monotonic() + 20
    while self_metric(process, "apimetrics_otlp_exported_points_total", result="retryable") == 0:
        assert time.monotonic() < deadline, "no failed export attempt"
        time.sleep(0.1)
    return self_metric(process, "apimetrics_otlp_queue_points")


def test_sigterm_flushes_the_queue_then_exits_0(simulator: Simulator, tmp_path: Path) -> None:
    receiver = OtlpReceiver("grpc").start()
    receiver.stop()  # the port is known; the collector is down for now
    process = start_exporter(simulator, tmp_path, receiver, grace="10s")
    try:
        queued = wait_until_retrying(process)
        assert queued > 0
        process.proc.terminate()  # SIGTERM
        time.sleep(0.5)
        receiver.start()  # the collector comes back during the grace
        started = time.monotonic()
        process.proc.wait(timeout=15)
        assert time.monotonic() - started < 10
    finally:
        output = process.stop()
        receiver.stop()
    assert process.proc.returncode == 0, output
    points = receiver.points()
    assert len(points) >= queued
    assert len({(p.metric, p.attributes, p.time_ns) for p in points}) == len(points)  # once each
    assert "not delivered within the shutdown grace" not in output
    assert "Traceback" not in output


def test_sigterm_with_the_collector_still_down_exits_0_after_the_grace(simulator: Simulator, tmp_path: Path) -> None:
    receiver = OtlpReceiver("http/protobuf").start()
    receiver.stop()
    process = start_exporter(simulator, tmp_path, receiver, grace="2s")
    try:
        wait_until_retrying(process)
        process.proc.terminate()
        started = time.monotonic()
        process.proc.wait(timeout=15)
        elapsed = time.monotonic() - started
    finally:
        output = process.stop()
    assert process.proc.returncode == 0, output
    assert 1.5 <= elapsed < 5, elapsed
    assert "not delivered within the shutdown grace (2s); dropped" in output
    assert "Traceback" not in output
