"""`backfill` end to end with real tools: simulator → OpenMetrics file → promtool blocks → a real Prometheus.

The simulator is frozen at the present (Prometheus keeps blocks within its
retention of now). What Prometheus answers is compared with what the
simulator serves, read from its API directly: counters' `increase()` per
period equals the vendor's per-period counts, k6 and Pluto curves and Flux
buckets point for point. Then `--otlp` (the receiver gets the file's points),
the vendors' limits, a target failing, and SIGINT (exit 130, no file).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exporter.cli.backfill import backfill
from exporter.simulator import SIMULATOR_TOKEN, Simulator
from exporter.simulator.common import Fault
from exporter.sources.kit.periods import rfc3339
from exporter.sources.kit.timeparse import parse_timestamp
from tests.conftest import REPO, free_port, k6_config, settings_from, write_config
from tests.otlp_receiver import OtlpReceiver
from tests.test_integration_prometheus import require

pytestmark = pytest.mark.integration

UNTIL = float(int(time.time()))
SINCE = UNTIL - 6 * 3600
FLOW = "1234567890123456"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator("127.0.0.1:0", seed=7, freeze_time=UNTIL) as simulator:
        yield simulator


def config(sim: Simulator, extra: str = "") -> str:
    return k6_config(sim, [103054, 103055]) + f"""
    [[sources]]
    type = "bird_flow_runs"
    name = "bird"
    base_url = "{sim.base_url('bird')}"
    access_key = "{SIMULATOR_TOKEN}"
    workspace_id = "ws-1"
    flow_ids = ["welcome-flow", "order-updates"]
    http = {{ retries = 0 }}

    [[sources]]
    type = "whatsapp_flows"
    name = "wa"
    base_url = "{sim.base_url('whatsapp')}"
    access_token = "{SIMULATOR_TOKEN}"
    flow_ids = ["{FLOW}"]

    [[sources]]
    type = "pluto"
    name = "pluto"
    base_url = "{sim.base_url('pluto')}"
    api_key = "{SIMULATOR_TOKEN}"
    project = "research"
    run_ids = [4102]
    limit = 100

    [[sources]]
    type = "flux"
    name = "flux"
    base_url = "{sim.base_url('flux')}"
    api_key = "{SIMULATOR_TOKEN}"
    bucket = "5m"
    metrics = [{{ name = "queue.depth", type = "gauge" }}, {{ name = "api.requests", type = "counter" }}]
    """ + extra


def run_backfill(settings_text: str, tmp_path: Path, *options: str) -> int:
    parser = argparse.ArgumentParser()
    from exporter.cli.backfill import add_arguments

    add_arguments(parser)
    args = parser.parse_args(["--since", rfc3339(SINCE), "--until", rfc3339(UNTIL), *options])
    return asyncio.run(backfill(settings_from(tmp_path, settings_text), args))


@pytest.fixture(scope="module")
def backfilled(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The file of every source, its blocks, and a Prometheus serving them."""
    tmp = tmp_path_factory.mktemp("backfill")
    output = tmp / "history.om"
    assert run_backfill(config(sim), tmp, "--output", str(output)) == 0
    assert output.read_text().endswith("# EOF\n")
    blocks = tmp / "data"
    subprocess.run([require("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(output), str(blocks)],
                   check=True, capture_output=True)
    return output, str(blocks)


@pytest.fixture(scope="module")
def prometheus(backfilled: tuple[Path, str]) -> Iterator[str]:
    port = free_port()
    data = Path(backfilled[1])
    config = data.parent / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1m\n")
    proc = subprocess.Popen([require("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={data}",
                             "--storage.tsdb.retention.time=100y", f"--web.listen-address=127.0.0.1:{port}",
                             "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "Prometheus did not become ready"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def raw(prometheus: str, selector: str) -> dict[tuple[tuple[str, str], ...], list[tuple[float, float]]]:
    """Every stored sample of the selected series within [SINCE, UNTIL]: {labels: [(time, value)]}."""
    body = httpx.get(f"{prometheus}/api/v1/query", params={
        "query": f"{selector}[{int(UNTIL - SINCE) + 1}s]", "time": UNTIL}, timeout=30).json()
    assert body["status"] == "success", body
    return {tuple(sorted((k, v) for k, v in r["metric"].items() if k != "__name__")):
            [(float(t), float(v)) for t, v in r["values"]] for r in body["data"]["result"]}


def test_k6_curves_point_for_point(sim: Simulator, prometheus: str) -> None:
    base, auth = f"{sim.base_url('k6')}/loadtests/v2", {"Authorization": f"Token {SIMULATOR_TOKEN}"}
    metrics = httpx.get(f"{base}/metrics", params={"test_run_id": 103055}, headers=auth).json()["k6-metrics"]
    vus = next(m for m in metrics if m["name"] == "vus")
    serie = httpx.get(f"{base}/series", params={"test_run_id": 103055, "ids[]": vus["id"], "method": "value"},
                      headers=auth).json()["k6-serie"][0]["values"]
    expected = [(parse_timestamp(p["timestamp"]), float(p["value"])) for p in serie]
    (stored,) = raw(prometheus, 'k6_vus{test_run_id="103055"}').values()
    assert len(expected) > 200 and stored == expected


def test_pluto_curve_is_complete_where_the_server_samples(sim: Simulator, prometheus: str) -> None:
    answer = httpx.get(f"{sim.base_url('pluto')}/api/runs/metrics", params={
        "runId": 4102, "projectName": "research", "limit": 10_000, "logName": "train/loss"},
        headers={"Authorization": f"Bearer {SIMULATOR_TOKEN}"}).json()["metrics"]
    expected = sorted((parse_timestamp(row["time"]), float(row["value"])) for row in answer)
    (stored,) = raw(prometheus, 'pluto_run_metric_value{run_id="4102",log_name="train/loss"}').values()
    assert len(expected) > 100 * 2 and stored == expected  # far more than one answer's limit of 100


def test_counters_increase_by_each_period_count(sim: Simulator, prometheus: str) -> None:
    start = math.ceil(SINCE / 3600) * 3600
    answer = httpx.post(f"{sim.base_url('bird')}/workspaces/ws-1/reporting/flowruns/flow/welcome-flow/metrics",
                        json={"periodStart": rfc3339(start), "periodEnd": rfc3339(UNTIL), "periodGroup": "hour",
                              "groupBy": ["status"]},
                        headers={"Authorization": f"AccessKey {SIMULATOR_TOKEN}"}).json()
    column = answer["dataColumns"].index("status")
    counts: dict[tuple[str, float], float] = {}
    for row in answer["results"]:
        begin = parse_timestamp(row["periodTime"])
        if begin + 3600 <= UNTIL:
            counts[(row["data"][column], begin)] = counts.get((row["data"][column], begin), 0) + row.get("count", 0)
    stored = raw(prometheus, 'bird_flow_runs_total{flow_id="welcome-flow"}')
    assert counts and {dict(k)["status"] for k in stored} == {status for status, _ in counts}
    for labels, points in stored.items():
        status = dict(labels)["status"]
        assert points[0] == (SINCE, 0.0)  # from 0 at --since
        for end in range(int(start) + 3600, int(UNTIL) + 1, 3600):
            body = httpx.get(f"{prometheus}/api/v1/query", params={
                "query": f'increase(bird_flow_runs_total{{flow_id="welcome-flow",status="{status}"}}[1h])',
                "time": end}).json()["data"]["result"]
            got = float(body[0]["value"][1]) if body else 0.0
            assert got == pytest.approx(counts.get((status, end - 3600.0), 0.0), abs=1e-9), (status, end)


def test_whatsapp_requests_and_flux_buckets(sim: Simulator, prometheus: str) -> None:
    requests = raw(prometheus, f'whatsapp_flow_endpoint_requests_total{{flow_id="{FLOW}"}}')
    ((_, points),) = requests.items()
    assert points[0] == (SINCE, 0.0) and len(points) > 3
    assert all(b[1] >= a[1] for a, b in itertools_pairs(points))
    assert raw(prometheus, f'whatsapp_flow_endpoint_request_duration_seconds_bucket{{flow_id="{FLOW}",le="+Inf"}}')
    answer = httpx.get(f"{sim.base_url('flux')}/api/v1/metrics/queue.depth/query", params={
        "from": rfc3339(SINCE), "to": rfc3339(UNTIL), "interval": "5m", "aggregation": "last"},
        headers={"Authorization": f"Bearer {SIMULATOR_TOKEN}"}).json()["data"]["series"]
    expected = [(parse_timestamp(p["timestamp"]), float(p["value"])) for p in answer
                if SINCE <= parse_timestamp(p["timestamp"]) and parse_timestamp(p["timestamp"]) + 300 <= UNTIL]
    (stored,) = raw(prometheus, "flux_queue_depth").values()
    assert len(expected) > 50 and stored == expected


def itertools_pairs(points: list[tuple[float, float]]) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    return list(zip(points, points[1:], strict=False))


LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def file_points(path: Path) -> set[tuple[str, tuple[tuple[str, str], ...], float, float]]:
    """(family, labels, time, value) of the file's gauge and counter lines.
    (prometheus_client's parser refuses timestamped histogram points, so the
    lines are read here: `name{labels} value timestamp`.)"""
    kinds: dict[str, str] = {}
    found = set()
    for line in path.read_text().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            kinds[name] = kind
        elif not line.startswith("#"):
            head, value, stamp = line.rsplit(" ", 2)
            name, _, labels = head.partition("{")
            family = name.removesuffix("_total")
            if kinds.get(family) in ("gauge", "counter"):
                pairs = tuple(sorted((k, json.loads(f'"{v}"')) for k, v in LABEL.findall(labels)))
                found.add((family, pairs, float(stamp), float(value)))
    return found


def test_otlp_backfill_sends_the_points_the_file_holds(sim: Simulator, backfilled: tuple[Path, str],
                                                       tmp_path: Path) -> None:
    with OtlpReceiver("grpc") as receiver:
        text = config(sim, f'\n[otlp]\nenabled = true\nprotocol = "grpc"\nendpoint = "{receiver.endpoint}"\n'
                           "max_queue_points = 5000\n")
        assert run_backfill(text, tmp_path, "--otlp") == 0
        points = receiver.points()
    got = {(p.metric, tuple(sorted((k, str(v)) for k, v in p.attributes)), p.time_ns / 1e9, float(p.value))
           for p in points if p.type in ("gauge", "sum")}
    # OTLP names drop the unit suffix (the Collector adds it back, see docs/otlp.md).
    expected = {(re.sub(r"_(seconds|bytes|ratio)$", "", n), labels, t, v)
                for n, labels, t, v in file_points(backfilled[0])}
    assert len(expected) > 5_000 and got == expected


def test_a_failing_target_is_reported_and_the_rest_is_written(sim: Simulator, tmp_path: Path) -> None:
    sim.inject(Fault(path="order-updates", kind="status", status=500, times=50))
    try:
        output = tmp_path / "out.om"
        status = run_backfill(config(sim), tmp_path, "--output", str(output), "--source", "bird", "--source", "k6")
    finally:
        sim.clear_faults()
    text = output.read_text()
    assert status == 1 and 'flow_id="welcome-flow"' in text and 'flow_id="order-updates"' not in text
    assert 'test_run_id="103055"' in text


def cli(config_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "exporter", "backfill", "--config", str(config_path), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_a_range_past_the_vendors_limit_is_refused_naming_it(sim: Simulator, tmp_path: Path) -> None:
    path = write_config(tmp_path, config(sim))
    proc = cli(path, "--since", "40d", "--source", "wa", "--output", str(tmp_path / "x.om"))
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, output
    assert "older than the 30 days the API serves with granularity HOUR" in output
    assert not list(tmp_path.glob("*.om*")) and not list(tmp_path.glob(".x.om*"))


def test_sigint_mid_way_leaves_no_file(sim: Simulator, tmp_path: Path) -> None:
    # One Flux query a minute: the backfill is still fetching when interrupted.
    path = write_config(tmp_path, config(sim, '\nrate_limit = { queries = 1, per = "60s" }\n'))
    output = tmp_path / "out.om"
    proc = cli(path, "--since", "2h", "--source", "k6", "--source", "flux", "--output", str(output))
    deadline = time.monotonic() + 60
    while not any(tmp_path.glob(".out.om.*.spool")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, text
    assert "interrupted: no file written" in text and "Traceback" not in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exporter.toml"]


def test_bad_arguments_exit_2(tmp_path: Path, sim: Simulator) -> None:
    path = write_config(tmp_path, config(sim))
    proc = cli(path, "--since", "yesterday", "--output", str(tmp_path / "x.om"))
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--since: 'yesterday' is neither a duration" in output
    proc = cli(path, "--since", "1h", "--source", "nope", "--output", str(tmp_path / "x.om"))
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--source nope: no such source" in output


