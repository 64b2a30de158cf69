"""Live reload of a real child process: SIGHUP and POST /-/reload."""

from __future__ import annotations

import asyncio
import gc
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

from exporter.app import App, settle_heap
from exporter.app.settings import load_settings
from exporter.simulator import Simulator
from tests.conftest import ExporterProcess, free_port, k6_config
from tests.sources.test_bird import bird_config

OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0", "Accept-Encoding": "identity"}


@pytest.fixture
def live() -> Iterator[Simulator]:
    with Simulator("127.0.0.1:0", seed=3, freeze_time=time.time()) as sim:
        yield sim


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in openmetrics_families(httpx.get(f"{url}/metrics", headers=OPENMETRICS).text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def wait_for(url: str, predicate, timeout: float = 20.0) -> dict:  # type: ignore[no-untyped-def,type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metrics = scrape(url)
        if predicate(metrics):
            return metrics
        time.sleep(0.2)
    raise AssertionError("condition not reached")


def test_sighup_reload_keeps_unchanged_targets(live: Simulator, tmp_path: Path) -> None:
    port = free_port()
    server = f'[server]\nlisten = "127.0.0.1:{port}"\nenable_lifecycle = true\n'
    bird = bird_config(live, extra='interval = "1s"')
    config = tmp_path / "exporter.toml"
    config.write_text(server + bird + k6_config(live, [103054]))
    process = ExporterProcess(config, port)
    try:
        process.wait_ready()
        before = wait_for(process.url, lambda m: "bird_flow_runs_created" in m and "k6_vus" in m)
        assert scrape(process.url)["apimetrics_config_last_reload_successful"][()] == 1

        # Remove the k6 source, add another k6 run under a new name, keep Bird.
        config.write_text(server + bird + k6_config(live, [103055], name="k6-new"))
        process.proc.send_signal(signal.SIGHUP)
        after = wait_for(process.url, lambda m: "k6_vus" in m
                         and {dict(k)["test_run_id"] for k in m["k6_vus"]} == {"103055"})
        assert after["bird_flow_runs_created"] == before["bird_flow_runs_created"]  # same counters, no reset
        assert {dict(k)["target"] for k in after["apimetrics_target_up"]} == {"flow-a", "flow-b", "103055"}

        # An invalid file: the old config keeps running, the failure is visible.
        config.write_text(server + bird.replace('interval = "1s"', 'interval = "soon"'))
        response = httpx.post(f"{process.url}/-/reload")
        assert response.status_code == 500 and "sources[0].interval" in response.text
        metrics = scrape(process.url)
        assert metrics["apimetrics_config_last_reload_successful"][()] == 0
        assert "k6_vus" in metrics
    finally:
        output = process.stop()
    assert "config reload failed" in output


def test_reload_endpoint_is_off_unless_enabled(live: Simulator, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "exporter.toml"
    config.write_text(f'[server]\nlisten = "127.0.0.1:{port}"\n' + k6_config(live, [103054]))
    process = ExporterProcess(config, port)
    try:
        process.wait_ready()
        assert httpx.post(f"{process.url}/-/reload").status_code == 403
    finally:
        process.stop()


def test_configmap_symlink_swap_is_picked_up(live: Simulator, tmp_path: Path) -> None:
    """Kubernetes mounts a ConfigMap as exporter.toml -> ..data/exporter.toml,
    ..data -> ..<timestamp>/, and updates it by swapping the ..data symlink."""
    port = free_port()
    server = f'[server]\nlisten = "127.0.0.1:{port}"\nwatch_config = true\n'

    def publish(version: str, text: str) -> None:
        (tmp_path / version).mkdir()
        (tmp_path / version / "exporter.toml").write_text(text)
        (tmp_path / "..data_tmp").symlink_to(version)
        (tmp_path / "..data_tmp").rename(tmp_path / "..data")  # atomic, like kubelet

    publish("..v1", server + k6_config(live, [103054]))
    (tmp_path / "exporter.toml").symlink_to("..data/exporter.toml")
    process = ExporterProcess(tmp_path / "exporter.toml", port)
    try:
        process.wait_ready()
        wait_for(process.url, lambda m: "k6_vus" in m)
        publish("..v2", server + k6_config(live, [103055]))
        wait_for(process.url, lambda m: "k6_vus" in m
                 and {dict(k)["test_run_id"] for k in m["k6_vus"]} == {"103055"}, timeout=30)
    finally:
        process.stop()


def test_a_reload_after_the_heap_was_frozen_lets_dropped_sources_be_collected(
    live: Simulator, tmp_path: Path
) -> None:
    """The daemon freezes its start-up heap (gc.freeze). A source a reload
    drops leaves reference cycles (~30 objects: its HTTP client's), which only
    the cyclic collector frees: the reload must unfreeze, or they stay forever."""
    config = tmp_path / "exporter.toml"
    config.write_text(k6_config(live, [103054]) + k6_config(live, [103055], name="other"))
    app = App(load_settings(str(config)), config_path=str(config))
    loop = asyncio.new_event_loop()
    try:
        app.build()
        loop.run_until_complete(app.poll_all())
        settle_heap()
        config.write_text(k6_config(live, [103054]))
        assert loop.run_until_complete(app.reload()) is None
        assert gc.get_freeze_count() > 0  # frozen again after the reload
        gc.collect()  # what lies outside the frozen heap
        gc.unfreeze()
        assert gc.collect() == 0  # nothing the reload dropped was kept in it
    finally:
        gc.unfreeze()  # the rest of the test session is not a daemon
        for source in app.sources:
            loop.run_until_complete(source.aclose())
        loop.close()


def test_a_reload_is_all_or_nothing(live: Simulator, tmp_path: Path) -> None:
    """An empty file, a source that cannot be built, a credential that cannot
    be sent: each reload is refused whole, the running targets keep polling,
    the failure is visible (metric 0, 500, the error logged)."""
    port = free_port()
    server = f'[server]\nlisten = "127.0.0.1:{port}"\nenable_lifecycle = true\n'
    config = tmp_path / "exporter.toml"
    config.write_text(server + k6_config(live, [103054]))
    process = ExporterProcess(config, port)

    def targets(metrics: dict) -> set[str]:  # type: ignore[type-arg]
        return {dict(k)["target"] for k, v in metrics["apimetrics_target_up"].items()}

    try:
        process.wait_ready()
        wait_for(process.url, lambda m: m["apimetrics_config_last_reload_successful"][()] == 1 and "k6_vus" in m)

        # An empty file (SIGHUP) is refused like any invalid config, not read as "no targets".
        config.write_text("")
        process.proc.send_signal(signal.SIGHUP)
        metrics = wait_for(process.url, lambda m: m["apimetrics_config_last_reload_successful"][()] == 0)
        assert targets(metrics) == {"103054"}

        config.write_text(server + k6_config(live, [103054]) + k6_config(live, [103055], name="k6-new"))
        assert httpx.post(f"{process.url}/-/reload").status_code == 200
        wait_for(process.url, lambda m: targets(m) == {"103054", "103055"})

        # The new file removes `k6` and adds a source only the simulator could
        # serve; the simulator is not running ([simulator] waits for a restart).
        config.write_text(server + "[simulator]\nenabled = true\n" + k6_config(live, [103055], name="k6-new")
                          + '[[sources]]\ntype = "bird_flow_runs"\nname = "bird-demo"\nworkspace_id = "w"\n'
                            'flow_ids = ["f"]\n')
        response = httpx.post(f"{process.url}/-/reload")
        assert response.status_code == 500
        assert "bird-demo" in response.text and "not running" in response.text
        metrics = scrape(process.url)
        assert metrics["apimetrics_config_last_reload_successful"][()] == 0
        assert targets(metrics) == {"103054", "103055"}

        # A credential that could not be sent: refused at load, never shown.
        config.write_text(server + k6_config(live, [103054]).replace("simulator-token", "tökén-reload-secret"))
        response = httpx.post(f"{process.url}/-/reload")
        assert response.status_code == 500
        assert "sources[0].token: the secret contains a non-ASCII character" in response.text
        assert "reload-secret" not in response.text
        time.sleep(0.5)
        assert targets(scrape(process.url)) == {"103054", "103055"}
    finally:
        output = process.stop()
    assert "no sources: add at least one [[sources]] table" in output
    assert "source 'bird-demo' has neither a credential nor base_url" in output
    assert "reload-secret" not in output and "Traceback" not in output
