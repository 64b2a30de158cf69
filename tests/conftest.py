"""Shared fixtures: a real simulator on loopback, config files, exporter processes."""

from __future__ import annotations

import asyncio
import gzip
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import App
from exporter.app.settings import Settings, load_settings
from exporter.cli import simulator_for
from exporter.logs import REDACTOR
from exporter.model import Change, Snapshot
from exporter.simulator import SIMULATOR_TOKEN, Simulator

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
# A fixed instant, so the simulator's time-varying data is reproducible.
FROZEN_NOW = 1_780_000_000.0
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    """The redactor is process-wide: each test starts with the secrets of its own apps
    only, or a token of one test (`whatsapp-…`) would mask text in the next."""
    yield
    REDACTOR.reset()


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    # With the hostile fixtures: the tests check escaping, sanitising and
    # label collisions on them (the demo never shows them).
    with Simulator("127.0.0.1:0", seed=7, freeze_time=FROZEN_NOW, hostile_fixtures=True) as sim:
        yield sim


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_status(pid: int, field: str) -> int:
    """A `kB` field of /proc/<pid>/status (`VmRSS`, `VmHWM`…), in bytes."""
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    assert found is not None, f"no {field} in /proc/{pid}/status"
    return int(found.group(1)) * 1024


def write_config(tmp_path: Path, text: str, name: str = "exporter.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def settings_from(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Settings:
    return load_settings(write_config(tmp_path, text), environ=environ or {})


def k6_config(sim: Simulator, runs: list[int], name: str = "k6", extra: str = "") -> str:
    return f"""
    [[sources]]
    type = "k6_cloud"
    name = "{name}"
    interval = "60s"
    base_url = "{sim.base_url('k6')}"
    token = "{SIMULATOR_TOKEN}"
    test_run_ids = {runs}
    http = {{ retries = 2, backoff = 0.01, max_backoff = 0.05 }}
    {extra}
    """


class Collector:
    """A sink that keeps every snapshot of a successful poll, for assertions."""

    def __init__(self, into: list[Snapshot]) -> None:
        self.into = into

    def publish(self, snapshot: Snapshot) -> None:
        if snapshot.change is Change.POLLED:
            self.into.append(snapshot)


def poll_once(settings: Settings) -> tuple[App, bool]:
    """Build an app, poll every target once over real sockets, return it.
    With `[simulator] enabled`, the simulator runs for the poll, as `once` does."""

    async def go(app: App) -> bool:
        app.build()
        try:
            return await app.poll_all()
        finally:
            for source in app.sources:
                await source.aclose()

    with simulator_for(settings) as simulator_url:
        app = App(settings, simulator_url=simulator_url)
        return app, asyncio.run(go(app))


class SimHarness:
    """An app on the simulator's clock whose targets are polled on demand."""

    def __init__(self, sim: Simulator, tmp_path: Path, text: str) -> None:
        self.sim = sim
        self.app = App(settings_from(tmp_path, text), clock=sim.now)
        self.loop = asyncio.new_event_loop()
        self.app.build()

    def poll(self) -> bool:
        """Discover, then poll every target once."""
        return self.loop.run_until_complete(self.app.poll_all())

    def poll_target(self, target_id: str) -> bool:
        source, target = next((s, t) for s, t in self.app.targets if t.id == target_id)
        return self.loop.run_until_complete(self.app.runner.poll(source, target))

    def text(self) -> str:
        return exposition(self.app)

    def close(self) -> None:
        for source in self.app.sources:
            self.loop.run_until_complete(source.aclose())
        self.loop.close()


def exposition(app: App) -> str:
    return app.exposition().decode()


def samples_of(text: str, family: str) -> dict[tuple[tuple[str, str], ...], float]:
    """{sorted labels: value} of one family's samples (by sample name)."""
    found = {}
    for metric in text_string_to_metric_families(text):
        for sample in metric.samples:
            if sample.name == family:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


class ExporterProcess:
    """`python -m exporter run` as a real child process.

    `env` adds variables (`APIMETRICS_*` overrides); with `log`, its output
    goes to that file, which a test can read while the process runs."""

    def __init__(self, config: Path, port: int, *args: str, env: dict[str, str] | None = None,
                 log: Path | None = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        output = subprocess.PIPE if log is None else log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "run", "--config", str(config), *args],
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        if log is not None:
            output.close()  # the child has its own copy

    def output(self) -> str:
        """What the process logged so far (with `log`)."""
        assert self.log is not None, "only with log="
        return self.log.read_text()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                early = self.output() if self.log is not None else self.proc.stdout.read()  # type: ignore[union-attr]
                raise AssertionError(f"exporter exited early:\n{early}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("exporter did not become ready")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.log is not None:
            return self.output()
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            with self.proc.stdout:
                self._output = self.proc.stdout.read()
        return getattr(self, "_output", "")


_ALERTING_STACKS: list[object] = []


@pytest.fixture(scope="session")
def alerting_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Simulator, exporter, OTLP receiver and a Prometheus with the shipped rules
    (tests/alerting_stack.py), shared by the alerting and dashboard tests."""
    from tests.alerting_stack import AlertingStack

    with AlertingStack(tmp_path_factory.mktemp("alerting")) as stack:
        _ALERTING_STACKS.append(stack)
        yield stack


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the alerting stack after the last test that uses it, not at the end of
    the session: its processes would load the 2-core machine for nothing."""
    if not _ALERTING_STACKS or "alerting_stack" not in getattr(item, "fixturenames", ()):
        return
    items = item.session.items
    later = items[items.index(item) + 1:]
    if not any("alerting_stack" in getattr(other, "fixturenames", ()) for other in later):
        _ALERTING_STACKS.pop().close()  # type: ignore[attr-defined]


def scrape_openmetrics(url: str) -> str:
    """/metrics as Prometheus asks for it: OpenMetrics and gzip. The body is
    gzip members one after the other, which gzip.decompress reads whole
    (httpx's decoder would stop after the first)."""
    headers = {"Accept": OPENMETRICS, "Accept-Encoding": "gzip"}
    with httpx.stream("GET", f"{url}/metrics", headers=headers) as response:
        assert response.headers["content-encoding"] == "gzip"
        assert response.headers["content-type"].startswith(OPENMETRICS)
        return gzip.decompress(b"".join(response.iter_raw())).decode()
