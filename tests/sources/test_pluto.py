"""Pluto (mlop) source against the simulator over real sockets.

Expected values are computed here, independently of the source's code: every
point of a metric is read from the simulator in step windows small enough
never to be sampled, and the newest one (or those after a given step) is what
the exporter must show.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.config import ConfigError
from exporter.errors import InvalidResponse
from exporter.simulator import SIMULATOR_TOKEN, Fault, Simulator
from exporter.simulator.pluto import PROJECT, PlutoFake
from exporter.sources.base import Target
from exporter.sources.pluto import PlutoSource, _parse_point_checked, classify_error, parse_point
from tests.conftest import Collector, SimHarness, exposition, samples_of, settings_from

VALUE, STEP, TIME = "pluto_run_metric_value", "pluto_run_metric_step", "pluto_run_metric_timestamp_seconds"
NONFINITE = "pluto_run_metric_nonfinite_points_total"
BUDGET = "pluto_run_request_budget_exhausted_total"
WINDOW = 5000  # steps per verification request: at most 5001 rows, below the 10,000 limit
FLAGS = {"NaN": math.nan, "Inf": math.inf, "-Inf": -math.inf}


# --- independent reading of the simulator -------------------------------------------


# One client for the module: httpx.get() builds a TLS context per call (~40 ms).
CLIENT = httpx.Client()


@pytest.fixture(autouse=True, scope="module")
def _close_client() -> Iterator[None]:
    yield
    CLIENT.close()


def api(sim: Simulator, path: str, params: dict[str, Any], key: str | None = SIMULATOR_TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return CLIENT.get(f"{sim.base_url('pluto')}/api/runs/{path}", params=params, headers=headers)


def parse_time(text: str) -> float:
    return datetime.strptime(text.rstrip("Z").replace("T", " "), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()


def rows(sim: Simulator, run: int, log_name: str, **params: Any) -> list[dict[str, Any]]:
    query = {"runId": run, "projectName": PROJECT, "logName": log_name, **params}
    return api(sim, "metrics", query).json()["metrics"]


def newest_step(sim: Simulator, run: int, log_name: str) -> int:
    """Binary search on "is there any row at or above s": true whatever the sampler."""
    low, high = 0, 1 << 21
    assert rows(sim, run, log_name, stepMin=0, limit=1) and not rows(sim, run, log_name, stepMin=high, limit=1)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if rows(sim, run, log_name, stepMin=middle, limit=1) else (low, middle)
    return low


def all_points(
    sim: Simulator, run: int, log_name: str, low: int = 0, top: int | None = None
) -> list[tuple[int, float, float, str]]:
    """Every point (step, time, value, group) of one metric from step `low`, oldest first."""
    top = newest_step(sim, run, log_name) if top is None else top
    points = []
    for start in range(low, top + 1, WINDOW):
        for row in rows(sim, run, log_name, stepMin=start, stepMax=start + WINDOW - 1, limit=10_000):
            value = FLAGS[row["valueFlag"]] if row["valueFlag"] else float(row["value"])
            points.append((int(row["step"]), parse_time(row["time"]), value, row["logGroup"]))
    return points


def labels(run: int, name: str, group: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"project": PROJECT, "run_id": str(run), "log_group": group, "log_name": name}.items()))


def expected_newest(sim: Simulator, run: int, names: list[str]) -> dict[str, dict[Any, float]]:
    value, step, time = {}, {}, {}
    for name in names:
        top = newest_step(sim, run, name)
        _, top_time, top_value, group = all_points(sim, run, name, top, top)[-1]
        key = labels(run, name, group)
        value[key], step[key], time[key] = top_value, float(top), top_time
    return {VALUE: value, STEP: step, TIME: time}


def metric_names(sim: Simulator, run: int) -> list[str]:
    return api(sim, "metric-names", {"projectName": PROJECT, "runId": run}).json()["metricNames"]


def metric_requests(sim: Simulator) -> list[dict[str, str]]:
    return [{k: v[0] for k, v in r.query.items()} for r in sim.requests if r.path.endswith("/api/runs/metrics")]


def fake(sim: Simulator) -> PlutoFake:
    vendor = sim.vendors["pluto"]
    assert isinstance(vendor, PlutoFake)
    return vendor


def at_step(sim: Simulator, run: int, step: int) -> None:
    """Move the simulator clock to the instant run `run` logs `step`."""
    sim.clock.frozen = fake(sim).runs[run].step_time(step)


# --- harness -------------------------------------------------------------------------


def pluto_config(sim: Simulator, runs: list[int] | None, *extra: str, key: str = SIMULATOR_TOKEN) -> str:
    which = f"run_ids = {runs}" if runs is not None else "discover_runs = true"
    more = "\n    ".join(extra)
    return f"""
    [[sources]]
    type = "pluto"
    name = "pluto"
    base_url = "{sim.base_url('pluto')}"
    api_key = "{key}"
    project = "{PROJECT}"
    {which}
    http = {{ retries = 1, backoff = 0.01, max_backoff = 0.05 }}
    {more}
    """


class Harness(SimHarness):
    """The shared harness, polling one run at a time."""

    def __init__(self, sim: Simulator, tmp_path: Path, text: str) -> None:
        super().__init__(sim, tmp_path, text)
        self.source = self.app.sources[0]
        assert isinstance(self.source, PlutoSource)

    def poll(self, run: int) -> bool:  # type: ignore[override]
        return self.poll_target(str(run))

    def discover(self) -> bool:
        return self.loop.run_until_complete(self.app.discover(self.source))

    def target_ids(self) -> set[str]:
        return {t.id for _, t in self.app.targets}


@pytest.fixture
def harness(simulator: Simulator, tmp_path: Path) -> Iterator[Any]:
    made: list[Harness] = []

    def make(*args: Any, **kwargs: Any) -> Harness:
        made.append(Harness(simulator, tmp_path, pluto_config(simulator, *args, **kwargs)))
        return made[-1]

    yield make
    for h in made:
        h.close()


def history_points(h: Harness, run: int, name: str) -> list[tuple[float, float]]:
    """(time, value) of every new point the last poll handed over for one metric."""
    target = Target(h.source.name, str(run))
    return [(s.timestamp or 0.0, float(s.value)) for s in h.source.last_new_points(target)  # type: ignore[arg-type]
            if dict(s.labels)["log_name"] == name]


def assert_newest(text: str, expected: dict[str, dict[Any, float]], run: int) -> None:
    for family, series in expected.items():
        got = {k: v for k, v in samples_of(text, family).items() if dict(k)["run_id"] == str(run)}
        assert got == pytest.approx(series, nan_ok=True), family


# --- the newest point ----------------------------------------------------------------


@pytest.mark.parametrize("sampling", ["stride", "reservoir"])
def test_newest_step_of_a_50000_point_run_with_limit_100(simulator: Simulator, harness: Any, sampling: str) -> None:
    fake(simulator).sampling = sampling
    h = harness([4105], "limit = 100")
    assert h.poll(4105)
    requests = metric_requests(simulator)
    names = metric_names(simulator, 4105)
    expected = expected_newest(simulator, 4105, names)
    assert min(expected[STEP].values()) > 50_000
    assert_newest(h.text(), expected, 4105)
    assert all(r["limit"] == "100" for r in requests)
    if sampling == "stride":
        # One request for the run, then one per metric confirms nothing lies beyond.
        assert len(requests) == 1 + len(names)
    assert samples_of(h.text(), BUDGET)[(("project", PROJECT), ("run_id", "4105"))] == 0


def test_values_match_the_simulator(simulator: Simulator, harness: Any) -> None:
    h = harness([4101, 4103, 4104])
    for run in (4101, 4103, 4104):
        assert h.poll(run)
    text = h.text()
    for run in (4101, 4103, 4104):
        assert_newest(text, expected_newest(simulator, run, metric_names(simulator, run)), run)
    groups = {dict(k)["log_name"]: dict(k)["log_group"] for k in samples_of(text, VALUE) if dict(k)["run_id"] == "4101"}
    assert groups == {"train/loss": "train", "train/accuracy": "train", "train/lr": "train", "train/grad_norm": "train",
                      "val/loss": "val", "val/acc@top5": "val", "epoch": ""}
    # 4104 diverged: its final loss is NaN, sent as 0 with valueFlag.
    assert math.isnan(samples_of(text, VALUE)[labels(4104, "train/loss", "train")])


def test_first_poll_hands_over_only_the_newest_point(simulator: Simulator, harness: Any) -> None:
    h = harness([4101])
    assert h.poll(4101)
    _, newest_time, newest_value, _ = all_points(simulator, 4101, "train/loss", 14_000)[-1]
    assert history_points(h, 4101, "train/loss") == [(newest_time, pytest.approx(newest_value))]


# --- incremental polls -------------------------------------------------------------------


def test_incremental_polls_ask_only_for_new_steps(simulator: Simulator, harness: Any) -> None:
    h = harness([4105], "limit = 100")
    assert h.poll(4105)
    first = samples_of(h.text(), STEP)
    exported = int(first[labels(4105, "train/loss", "train")])
    simulator.clear_requests()
    simulator.clock.frozen = simulator.now() + 60  # 3 new steps at 0.05 steps/s
    assert h.poll(4105)
    (request,) = metric_requests(simulator)
    assert request["stepMin"] == str(exported) and "logName" not in request
    expected = expected_newest(simulator, 4105, metric_names(simulator, 4105))
    assert expected[STEP][labels(4105, "train/loss", "train")] == exported + 3
    assert_newest(h.text(), expected, 4105)
    # The boundary point is re-read but not handed over twice.
    news = [p for p in all_points(simulator, 4105, "train/loss", exported) if p[0] > exported]
    assert history_points(h, 4105, "train/loss") == [(t, pytest.approx(v)) for _, t, v, _ in news]


def test_nothing_new_keeps_the_series_and_hands_over_nothing(simulator: Simulator, harness: Any) -> None:
    h = harness([4103])
    assert h.poll(4103)  # finished 20 minutes ago: nothing more will come
    before = samples_of(h.text(), VALUE)
    simulator.clear_requests()
    assert h.poll(4103)
    assert samples_of(h.text(), VALUE) == before
    assert h.source.last_new_points(Target("pluto", "4103")) == ()
    assert len(metric_requests(simulator)) == 1


@pytest.mark.parametrize("sampling", ["stride", "reservoir"])
def test_every_new_point_is_fetched_despite_sampling(simulator: Simulator, harness: Any, sampling: str) -> None:
    fake(simulator).sampling = sampling
    h = harness([4101], "limit = 100", "max_requests_per_poll = 2000")
    assert h.poll(4101)
    exported = {dict(k)["log_name"]: int(v) for k, v in samples_of(h.text(), STEP).items()}
    simulator.clear_requests()
    simulator.clock.frozen = simulator.now() + 300  # 600 new steps per metric, limit 100
    assert h.poll(4101)
    requests = metric_requests(simulator)
    for name in metric_names(simulator, 4101):
        news = [(t, pytest.approx(v, nan_ok=True)) for s, t, v, _ in all_points(simulator, 4101, name, exported[name])
                if s > exported[name]]
        assert len(news) == (600 if not name.startswith("val/") else 6)
        assert history_points(h, 4101, name) == news, name
    # No request reached below what was already exported.
    lowest = min(exported.values())
    assert all(int(r["stepMin"]) >= lowest for r in requests)
    assert samples_of(h.text(), BUDGET)[(("project", PROJECT), ("run_id", "4101"))] == 0


def test_the_request_budget_bounds_the_walk_and_is_counted(
    simulator: Simulator, harness: Any, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness([4101], "limit = 100", "max_requests_per_poll = 5")
    budget = (("project", PROJECT), ("run_id", "4101"))
    assert h.poll(4101)  # a truncated walk is not a failed poll
    assert len(metric_requests(simulator)) == 5
    assert samples_of(h.text(), BUDGET)[budget] == 1  # the first walk, 1 + 7 requests, is bounded too
    simulator.clear_requests()
    simulator.clock.frozen = simulator.now() + 300
    assert h.poll(4101)
    assert len(metric_requests(simulator)) == 5
    text = h.text()
    assert samples_of(text, BUDGET)[budget] == 2
    # The newest side is walked first: every gauge still shows the newest step.
    assert_newest(text, expected_newest(simulator, 4101, metric_names(simulator, 4101)), 4101)
    assert len(history_points(h, 4101, "train/loss")) < 600
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "max_requests_per_poll=5" in r.getMessage()]
    assert len(warnings) == 1  # once per run; the counter tells the rest


def test_a_failed_poll_loses_no_point(simulator: Simulator, harness: Any) -> None:
    h = harness([4101], "limit = 100", "max_requests_per_poll = 2000")
    assert h.poll(4101)
    exported = int(samples_of(h.text(), STEP)[labels(4101, "train/loss", "train")])
    simulator.clock.frozen = simulator.now() + 120
    simulator.inject(Fault(path="stepMax=", kind="status", status=500, times=10))  # fails mid-walk
    assert not h.poll(4101)
    simulator.clear_faults()
    simulator.clock.frozen = simulator.now() + 60
    assert h.poll(4101)
    news = [(t, pytest.approx(v)) for s, t, v, _ in all_points(simulator, 4101, "train/loss", exported) if s > exported]
    assert len(news) == 360
    assert history_points(h, 4101, "train/loss") == news


# --- non-finite values ---------------------------------------------------------------------


def grad_norm_line(text: str) -> str:
    (line,) = [line for line in text.splitlines()
               if line.startswith(VALUE + "{") and 'log_name="train/grad_norm"' in line]
    return line


def test_nan_and_inf_are_exported_and_counted(simulator: Simulator, harness: Any) -> None:
    h = harness([4101], "log_names = [\"train/grad_norm\"]")
    key = labels(4101, "train/grad_norm", "train")
    counted = 0
    previous = None
    for step, rendered in [(14500, "NaN"), (14750, "+Inf"), (14999, "-Inf"), (15600, None)]:
        at_step(simulator, 4101, step)
        assert h.poll(4101)
        text = h.text()
        # The first poll hands over the newest point only; later ones every point after it.
        fresh = all_points(simulator, 4101, "train/grad_norm", step if previous is None else previous + 1)
        counted += sum(not math.isfinite(p[2]) for p in fresh)
        value = samples_of(text, VALUE)[key]
        if rendered is None:
            assert math.isfinite(value)
        else:
            assert grad_norm_line(text).endswith(" " + rendered)
        assert samples_of(text, STEP)[key] == step
        assert samples_of(text, NONFINITE)[key] == counted
        previous = step
    assert counted == 4  # NaN at 14500, +Inf at 14750, -Inf at 14999, NaN at 15500: each once
    assert samples_of(h.text(), NONFINITE)[labels(4101, "train/grad_norm", "train")] == 4


def test_openmetrics_renders_non_finite_values(simulator: Simulator, harness: Any) -> None:
    h = harness([4101], "log_names = [\"train/grad_norm\"]")
    at_step(simulator, 4101, 14750)
    assert h.poll(4101)
    text = h.app.exposition("application/openmetrics-text; version=1.0.0").decode()
    assert re.search(r'^pluto_run_metric_value\{[^}]*train/grad_norm[^}]*\} \+Inf$', text, re.M)


# --- filters --------------------------------------------------------------------------------


def test_log_group_filter(simulator: Simulator, harness: Any) -> None:
    h = harness([4101], 'log_group = "val"')
    assert h.poll(4101)
    names = {dict(k)["log_name"] for k in samples_of(h.text(), VALUE)}
    assert names == {"val/loss", "val/acc@top5"}
    assert all(r["logGroup"] == "val" for r in metric_requests(simulator))
    assert_newest(h.text(), expected_newest(simulator, 4101, ["val/loss", "val/acc@top5"]), 4101)


def test_log_names_filter(simulator: Simulator, harness: Any) -> None:
    h = harness([4101], 'log_names = ["train/loss", "epoch"]')
    assert h.poll(4101)
    assert {dict(k)["log_name"] for k in samples_of(h.text(), VALUE)} == {"train/loss", "epoch"}
    asked = {r["logName"] for r in metric_requests(simulator)}
    assert asked == {"train/loss", "epoch"}
    assert_newest(h.text(), expected_newest(simulator, 4101, ["train/loss", "epoch"]), 4101)


# --- errors ---------------------------------------------------------------------------------


def errors(h: Harness, run: str) -> dict[str, float]:
    found = samples_of(h.text(), "apimetrics_poll_errors_total")
    return {dict(k)["reason"]: v for k, v in found.items() if dict(k)["target"] == run and v}


def test_wrong_api_key_is_auth(simulator: Simulator, harness: Any) -> None:
    h = harness([4101], key="not-the-key")
    assert not h.poll(4101)
    assert errors(h, "4101") == {"auth": 1}
    status = h.app.runner.status[("pluto", "4101")]
    assert "Invalid API key" in status.message and "not-the-key" not in status.message


def test_missing_bearer_is_refused_by_the_fake(simulator: Simulator) -> None:
    response = api(simulator, "metrics", {"runId": 4101, "projectName": PROJECT}, key=None)
    assert response.status_code == 401 and response.json() == {"error": "Unauthorized"}
    error = classify_error(401, response.content, "/api/runs/metrics")
    assert error is not None and error.reason == "auth"


def test_refused_parameters_are_http_4xx_with_the_servers_reason(simulator: Simulator, harness: Any) -> None:
    h = harness([4101])
    # The config refuses limit 0; force it past validation to see the server's answer.
    h.source.config = h.source.config.model_copy(update={"limit": 0})
    assert not h.poll(4101)
    assert errors(h, "4101") == {"http_4xx": 1}
    assert "limit: Number must be greater than or equal to 1" in h.app.runner.status[("pluto", "4101")].message


def test_unknown_run_has_no_series_and_is_not_an_error(simulator: Simulator, harness: Any) -> None:
    h = harness([999_999])
    assert h.poll(999_999)
    text = h.text()
    assert not [k for k in samples_of(text, VALUE) if dict(k)["run_id"] == "999999"]
    assert samples_of(text, BUDGET)[(("project", PROJECT), ("run_id", "999999"))] == 0
    assert errors(h, "999999") == {}


def test_malformed_body_is_invalid_response(simulator: Simulator, harness: Any) -> None:
    simulator.inject(Fault(path="/api/runs/metrics", kind="malformed"))
    h = harness([4101])
    assert not h.poll(4101)
    assert errors(h, "4101") == {"invalid_response": 1}


# --- discovery --------------------------------------------------------------------------------


def test_discovery_follows_running_and_recent_runs_without_restart(simulator: Simulator, harness: Any) -> None:
    h = harness(None)
    assert h.target_ids() == set()
    assert h.discover()
    # RUNNING: 4101, 4102, 4105 (on the second page); finished within 1h: 4103, 4107.
    assert h.target_ids() == {"4101", "4102", "4103", "4105", "4107"}
    pages = [r for r in simulator.requests if r.path.endswith("/api/runs/list")]
    assert [(r.param("limit"), r.param("offset")) for r in pages] == [("200", "0"), ("200", "200")]
    assert h.poll(4102)
    assert h.poll(4101)
    assert "4102" in h.source._states

    simulator.clock.frozen = fake(simulator).anchor + 2 * 3600
    assert h.discover()
    # 4106 started 30 min after the anchor; 4102 completed 1h40 ago, 4103, 4107 earlier.
    assert h.target_ids() == {"4101", "4105", "4106"}
    assert "4102" not in h.source._states and ("pluto", "4102") not in h.app.runner.status
    assert h.poll(4106)
    runs = {dict(k)["run_id"] for k in samples_of(h.text(), VALUE)}
    assert runs == {"4106"}  # 4101's snapshot went stale in the 2 h the clock jumped
    gauge = samples_of(h.text(), "apimetrics_discovered_targets")
    assert gauge[(("source", "pluto"),)] == 3


def test_discovered_runs_export_their_status_and_name(simulator: Simulator, harness: Any) -> None:
    # pluto_run_info is what the "stalled while RUNNING" alert joins on.
    h = harness(None)
    assert h.discover()
    assert h.poll(4101) and h.poll(4102) and h.poll(4103)
    info = samples_of(h.text(), "pluto_run_info")
    assert info == {
        (("project", PROJECT), ("run_id", "4101"), ("run_name", "resnet50-baseline"), ("status", "RUNNING")): 1,
        (("project", PROJECT), ("run_id", "4102"), ("run_name", "resnet50-lr-sweep"), ("status", "RUNNING")): 1,
        (("project", PROJECT), ("run_id", "4103"), ("run_name", "vit-small"), ("status", "COMPLETED")): 1,
    }
    # 4102 completes 20 min after the anchor: the next discovery and poll say so.
    simulator.clock.frozen = fake(simulator).anchor + 25 * 60
    assert h.discover()
    assert h.poll(4102)
    info = samples_of(h.text(), "pluto_run_info")
    assert info[(("project", PROJECT), ("run_id", "4102"), ("run_name", "resnet50-lr-sweep"), ("status", "COMPLETED"))] == 1
    assert not [k for k in info if dict(k)["run_id"] == "4102" and dict(k)["status"] == "RUNNING"]


def test_named_runs_have_no_status(simulator: Simulator, harness: Any) -> None:
    h = harness([4101])
    assert h.poll(4101)
    assert samples_of(h.text(), "pluto_run_info") == {}
    assert not [r for r in simulator.requests if r.path.endswith("/api/runs/list")]


def test_discovery_failure_keeps_the_known_targets(simulator: Simulator, harness: Any) -> None:
    h = harness(None)
    assert h.discover()
    known = h.target_ids()
    simulator.inject(Fault(path="/api/runs/list", kind="status", status=401, times=5))
    assert not h.discover()
    assert h.target_ids() == known
    failed = samples_of(h.text(), "apimetrics_discovery_errors_total")
    assert failed[(("reason", "auth"), ("source", "pluto"))] == 1


def test_discovered_run_window_is_configurable(simulator: Simulator, harness: Any) -> None:
    h = harness(None, 'discover_finished_within = "30h"')
    assert h.discover()
    assert h.target_ids() == {"4101", "4102", "4103", "4105", "4107", "4108"}


# --- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "message"), [
    ("run_ids = [1]\ndiscover_runs = true", "not both"),
    ("", "give run_ids"),
    ("run_ids = [1]\nlimit = 0", "greater than or equal to 1"),
    ("run_ids = [1]\nlimit = 10001", "less than or equal to 10000"),
    ("run_ids = []", "at least 1"),
])
def test_config_is_validated(tmp_path: Path, body: str, message: str) -> None:
    text = '[[sources]]\ntype = "pluto"\nname = "p"\napi_key = "k"\nproject = "x"\n' + body + "\n"
    with pytest.raises(ConfigError) as info:
        settings_from(tmp_path, text)
    assert message in str(info.value)


def test_api_key_file_is_sent_as_bearer(simulator: Simulator, tmp_path: Path) -> None:
    secret = tmp_path / "pluto-key"
    secret.write_text(SIMULATOR_TOKEN + "\n")
    text = pluto_config(simulator, [4103]).replace(f'api_key = "{SIMULATOR_TOKEN}"', f'api_key_file = "{secret}"')
    h = Harness(simulator, tmp_path, text)
    try:
        assert h.poll(4103)
        assert {r.headers["authorization"] for r in simulator.requests} == {f"Bearer {SIMULATOR_TOKEN}"}
    finally:
        h.close()


def test_demo_config_polls_the_simulator(tmp_path: Path) -> None:
    """The shipped exporter.toml's Pluto entry works with no credentials."""
    from exporter.app.settings import load_settings
    from tests.conftest import REPO, poll_once

    settings = load_settings(REPO / "exporter.toml", environ={})
    demo = next(s for s in settings.sources if s.type == "pluto")
    app, _ = poll_once(settings)
    text = exposition(app)
    up = samples_of(text, "apimetrics_target_up")
    assert {run: up[(("source", demo.name), ("target", run))] for run in demo.target_ids()} == {
        run: 1 for run in demo.target_ids()}
    assert {dict(k)["run_id"] for k in samples_of(text, VALUE)} == set(demo.target_ids())


def test_logging_never_shows_the_key(simulator: Simulator, harness: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    h = harness([4101], key="secret-pluto-key")
    assert not h.poll(4101)
    assert all("secret-pluto-key" not in r.getMessage() for r in caplog.records)


def test_push_sinks_receive_every_new_point_as_history(simulator: Simulator, harness: Any) -> None:
    h = harness([4105], "limit = 100")
    snapshots: list[Any] = []
    h.app.runner.sinks.append(Collector(snapshots))
    assert h.poll(4105)
    simulator.clock.frozen = simulator.now() + 60  # 3 new steps
    assert h.poll(4105)
    news = history_points(h, 4105, "train/loss")
    assert len(news) == 3
    (value,) = [s for s in snapshots[-1].samples
                if s.family.name == VALUE and dict(s.labels)["log_name"] == "train/loss"]
    assert value.history == tuple(news[:-1])
    assert (value.timestamp, value.value) == news[-1]


# --- the row parser's fast path ------------------------------------------------------

_ROW_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "7", "007", "-1", "1.5", "1e3", "²", "NaN", "x", "2026-05-28 18:26:00.000",
                     "2026-05-28T18:26:00Z", "nan", "inf"]),
)
# Mostly well-formed rows with one field odd, so every fast-path check is hit.
_ROWS = st.fixed_dictionaries(
    {"logName": st.one_of(st.just("loss"), st.just(""), _ROW_VALUES),
     "time": st.one_of(st.just("2026-05-28 18:26:00.000"), _ROW_VALUES),
     "step": st.one_of(st.integers(-2, 5), st.sampled_from(["4", "-4", "4.0", " 4"]), _ROW_VALUES),
     "value": st.one_of(st.floats(), st.integers(-5, 5), _ROW_VALUES)},
    optional={"logGroup": st.one_of(st.sampled_from(["train", ""]), _ROW_VALUES),
              "valueFlag": st.one_of(st.sampled_from(["", "NaN", "Inf", "-Inf", " inf "]), _ROW_VALUES)},
)


def _parsed(parse: Any, row: Any) -> Any:
    try:
        point = parse(row)
    except InvalidResponse as exc:
        return ("refused", str(exc))
    return (point.log_name, point.log_group, point.step, point.time, repr(point.value))


@settings(max_examples=2000, deadline=None)
@given(_ROWS)
def test_the_row_fast_path_reads_every_row_as_the_checked_path_does(row: dict[str, Any]) -> None:
    assert _parsed(parse_point, row) == _parsed(_parse_point_checked, row)
