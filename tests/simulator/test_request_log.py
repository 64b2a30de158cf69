"""The simulator keeps only its newest requests (#18: the demo grew by every request it served)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from exporter.simulator import SIMULATOR_TOKEN, Simulator
from tests.conftest import REPO, free_port

K6 = {"Authorization": f"Token {SIMULATOR_TOKEN}"}


def test_the_embedded_simulator_keeps_the_newest_requests_only() -> None:
    with Simulator("127.0.0.1:0", request_log=50) as sim, httpx.Client(headers=K6) as client:
        for page in range(1, 121):
            client.get(f"{sim.base_url('k6')}/loadtests/v2/metrics", params={"test_run_id": 103054, "page": page})
        kept = sim.requests
        assert len(kept) == 50
        assert [r.query["page"] for r in kept] == [[str(page)] for page in range(71, 121)]  # the newest, in order
        listed = client.get(f"{sim.url}/_sim/requests").json()["requests"]
        assert len(listed) == 50


def test_the_standalone_simulator_keeps_a_bounded_log() -> None:
    """`simulate` as a process: after more requests than its log holds, the
    log holds exactly its bound (the default, REQUEST_LOG)."""
    from exporter.simulator.server import REQUEST_LOG

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "simulate", "--listen", f"127.0.0.1:{port}"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        with httpx.Client(headers=K6, timeout=10) as client:
            while True:
                try:
                    client.get(f"{base}/_sim/requests")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the simulator did not start"
                    time.sleep(0.1)
            for _ in range(REQUEST_LOG + 300):
                client.get(f"{base}/k6/loadtests/v2/run-overviews", params={"test_run_id": 103054})
            assert len(client.get(f"{base}/_sim/requests").json()["requests"]) == REQUEST_LOG
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
