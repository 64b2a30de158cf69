"""The simulator's hostile fixtures are opt-in: `simulate --hostile-fixtures` and
`[simulator] hostile_fixtures = true` turn them on, and nothing else does."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter.simulator import SIMULATOR_TOKEN
from exporter.simulator.k6_cloud import EMPTY_METRIC, HOSTILE_URL, UNICODE_URL
from tests.conftest import REPO, free_port, samples_of, write_config

FIXTURE_URLS = {HOSTILE_URL, UNICODE_URL}


def k6_metrics(base: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{base}/k6/loadtests/v2/metrics", params={"test_run_id": 103054, "page_size": 100},
                         headers={"Authorization": f"Token {SIMULATOR_TOKEN}"}, timeout=5)
    response.raise_for_status()
    metrics: list[dict[str, Any]] = response.json()["k6-metrics"]
    return metrics


@pytest.fixture(params=[False, True], ids=["default", "hostile"])
def simulate(request: pytest.FixtureRequest) -> Iterator[tuple[bool, str]]:
    """`api-metrics-exporter simulate` as a process, with or without the flag."""
    hostile: bool = request.param
    port = free_port()
    args = [sys.executable, "-m", "exporter", "simulate", "--listen", f"127.0.0.1:{port}"]
    proc = subprocess.Popen([*args, *(["--hostile-fixtures"] if hostile else [])], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                k6_metrics(base)
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline, "the simulator did not start"
                time.sleep(0.1)
        yield hostile, base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_simulate_serves_the_fixtures_only_when_asked(simulate: tuple[bool, str]) -> None:
    hostile, base = simulate
    metrics = k6_metrics(base)
    urls = {m["tags"].get("url") for m in metrics}
    tag_keys = {key for m in metrics for key in m["tags"]}
    if hostile:
        assert FIXTURE_URLS <= urls and {"my-tag.name", "stat"} <= tag_keys
        assert EMPTY_METRIC in {m["name"] for m in metrics}
    else:
        assert not FIXTURE_URLS & urls and not {"my-tag.name", "stat"} & tag_keys
        assert EMPTY_METRIC not in {m["name"] for m in metrics}
        assert all(url.isascii() and url.isprintable() and '"' not in url for url in urls if url)
    # The plausible data is there either way.
    assert {"https://test.k6.io/", "https://test.k6.io/login.php"} <= urls
    assert "http_req_failed" in {m["name"] for m in metrics}


@pytest.mark.parametrize("hostile", [False, True])
def test_the_config_key_turns_them_on(tmp_path: Path, hostile: bool) -> None:
    """`once` with the simulator serving a k6 source (no token, no base_url)."""
    config = write_config(tmp_path, f"""
        [simulator]
        enabled = true
        {"hostile_fixtures = true" if hostile else ""}

        [[sources]]
        type = "k6_cloud"
        name = "k6"
        test_run_ids = [103054]
    """)
    result = subprocess.run([sys.executable, "-m", "exporter", "once", "--config", str(config)],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    urls = {dict(labels)["url"] for labels in samples_of(result.stdout, "k6_http_req_duration_seconds")}
    assert "https://test.k6.io/news.php" in urls
    assert FIXTURE_URLS <= urls if hostile else not FIXTURE_URLS & urls
