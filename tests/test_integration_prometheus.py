"""End to end: the exporter as a process, scraped by a real Prometheus; promtool lints it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from exporter.simulator import SIMULATOR_TOKEN, Simulator
from exporter.simulator.k6_cloud import HOSTILE_URL, UNICODE_URL
from tests.conftest import ExporterProcess, free_port, k6_config, scrape_openmetrics, write_config
from tests.sources.test_bird import bird_config

pytestmark = pytest.mark.integration


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is not installed; `make test` installs the Debian prometheus package")
        pytest.skip(f"{tool} not installed (run `make test` as root to install it)")
    return path


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    # Frozen at the real present: per-period sources (Bird) compute their
    # windows from the exporter's real clock, so the fake must have data then.
    # The hostile fixtures: Prometheus must store their label values unchanged.
    with Simulator("127.0.0.1:0", seed=7, freeze_time=time.time(), hostile_fixtures=True) as sim:
        yield sim


@pytest.fixture
def exporter(simulator: Simulator, tmp_path: Path) -> Iterator[ExporterProcess]:
    port = free_port()
    config = write_config(tmp_path, f'[server]\nlisten = "127.0.0.1:{port}"\n'
                          + k6_config(simulator, [103054, 103055]).replace('interval = "60s"', 'interval = "2s"')
                          + bird_config(simulator, extra='interval = "2s"'))
    process = ExporterProcess(config, port)
    try:
        process.wait_ready()
        yield process
    finally:
        output = process.stop()
        assert SIMULATOR_TOKEN not in output.replace(f"Token {SIMULATOR_TOKEN}", "")


@pytest.fixture
def prometheus(exporter: ExporterProcess, tmp_path: Path) -> Iterator[str]:
    binary = require("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: apimetrics\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{exporter.port}']\n"
    )
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        if proc.stderr is not None:
            proc.stderr.close()


def query(prometheus: str, promql: str, timeout: float = 45.0) -> list[dict[str, Any]]:
    """Poll Prometheus' HTTP API until the query returns something."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # "Service Unavailable" (text) while Prometheus is still starting.
            body = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5).json()
            if body.get("status") == "success" and body["data"]["result"]:
                return body["data"]["result"]
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"Prometheus never returned data for {promql}")


def simulator_latest(sim: Simulator, run: int, name: str, stat: str, url: str | None = None) -> float:
    auth = {"Authorization": f"Token {SIMULATOR_TOKEN}"}
    base = f"{sim.base_url('k6')}/loadtests/v2"
    metrics = httpx.get(f"{base}/metrics", params={"test_run_id": run, "page_size": 100}, headers=auth).json()
    metric = next(m for m in metrics["k6-metrics"] if m["name"] == name and (url is None or m["tags"].get("url") == url))
    series = httpx.get(f"{base}/series", params={"test_run_id": run, "ids[]": metric["id"], "method": stat},
                       headers=auth).json()["k6-serie"][0]["values"]
    return float(max(series, key=lambda v: v["timestamp"])["value"])


def test_prometheus_scrapes_simulator_values(simulator: Simulator, exporter: ExporterProcess, prometheus: str) -> None:
    (vus,) = query(prometheus, 'k6_vus{test_run_id="103054",stat="value"}')
    assert float(vus["value"][1]) == simulator_latest(simulator, 103054, "vus", "value")

    durations = query(prometheus, 'k6_http_req_duration_seconds{test_run_id="103054",stat="max"}')
    by_url = {s["metric"]["url"]: float(s["value"][1]) for s in durations}
    assert set(by_url) >= {HOSTILE_URL, UNICODE_URL}
    expected = simulator_latest(simulator, 103054, "http_req_duration", "max", HOSTILE_URL) / 1000
    assert by_url[HOSTILE_URL] == pytest.approx(expected)

    (up,) = query(prometheus, 'up{job="apimetrics"}')
    assert up["value"][1] == "1"
    targets = httpx.get(f"{prometheus}/api/v1/targets").json()["data"]["activeTargets"]
    assert [t["lastError"] for t in targets] == [""]


def test_promtool_finds_nothing(exporter: ExporterProcess) -> None:
    promtool = require("promtool")
    # Wait for both targets to have been polled, so the lint sees vendor families.
    deadline = time.monotonic() + 30
    while not all(f"{name}{{" in (body := httpx.get(f"{exporter.url}/metrics").text)
                  for name in ("k6_cloud_run_checks", "bird_flow_runs_total")):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    # The text format carries no `_created` series (OpenMetrics only).
    assert "_created" not in body


def test_openmetrics_exposition_parses_strictly(exporter: ExporterProcess) -> None:
    # promtool lints only the text format; prometheus_client's OpenMetrics
    # parser is strict (EOF marker, counter suffixes, _created placement).
    deadline = time.monotonic() + 30
    while "k6_cloud_run_checks" not in httpx.get(f"{exporter.url}/metrics").text:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    body = httpx.get(f"{exporter.url}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0", "Accept-Encoding": "identity"}).text
    families = {f.name: f for f in openmetrics_families(body)}
    assert families["apimetrics_poll_errors"].type == "counter"
    assert families["k6_cloud_threshold_failed"].type == "gauge"
    # As Prometheus scrapes it (gzip members), with the text format's families
    # and the hostile label values intact.
    text = httpx.get(f"{exporter.url}/metrics", headers={"Accept-Encoding": "identity"}).text
    scraped = {f.name: f for f in openmetrics_families(scrape_openmetrics(exporter.url))}
    assert {name: f.type for name, f in scraped.items()} == {f.name: f.type for f in text_string_to_metric_families(text)}
    urls = {s.labels.get("url") for s in scraped["k6_http_req_duration_seconds"].samples}
    assert {HOSTILE_URL, UNICODE_URL} <= urls
