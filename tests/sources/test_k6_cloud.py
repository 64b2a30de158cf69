"""k6 Cloud source against the simulator over real sockets.

Expected values are computed here, independently of the source's code, from
what the simulator serves through its public API.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.simulator import SIMULATOR_TOKEN, Fault, Simulator
from exporter.simulator.k6_cloud import EMPTY_METRIC, HOSTILE_URL, UNICODE_URL
from exporter.sources.k6_cloud import _newest
from exporter.sources.kit.timeparse import parse_timestamp
from tests.conftest import exposition, k6_config, poll_once, samples_of, settings_from

STATS = {"trend": ["avg", "0.95", "0.99", "max"], "counter": ["count", "rps"], "rate": ["rate"], "gauge": ["value"]}


def api(sim: Simulator, path: str, params: list[tuple[str, Any]]) -> Any:
    response = httpx.get(f"{sim.base_url('k6')}/loadtests/v2/{path}", params=params,
                         headers={"Authorization": f"Token {SIMULATOR_TOKEN}"})
    response.raise_for_status()
    return response.json()


def expected_series(sim: Simulator, run: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{family: {labels: value}} computed from the raw API."""
    metrics: list[dict[str, Any]] = []
    page = 1
    while True:
        body = api(sim, "metrics", [("test_run_id", run), ("page", page), ("page_size", 7)])
        metrics += body["k6-metrics"]
        if len(metrics) >= body["meta"]["count"]:
            break
        page += 1
    expected: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for metric in metrics:
        for stat in STATS[metric["type"]]:
            (serie,) = api(sim, "series", [("test_run_id", run), ("ids[]", metric["id"]), ("method", stat)])["k6-serie"]
            if not serie["values"]:
                continue
            newest = max(serie["values"], key=lambda v: v["timestamp"])
            value = float(newest["value"])
            family = "k6_" + re.sub(r"[^a-zA-Z0-9_]", "_", metric["name"])
            if metric["contains"] == "time":
                family, value = family + "_seconds", value / 1000
            elif metric["contains"] == "data":
                family += "_bytes"
            labels = {"test_run_id": str(run), "stat": stat}
            for key, tag in metric["tags"].items():
                name = re.sub(r"[^a-zA-Z0-9_]", "_", key)
                labels["tag_" + name if name in ("stat", "test_run_id") else name] = tag
            expected.setdefault(family, {})[tuple(sorted(labels.items()))] = value
    return expected


def test_series_values_match_the_simulator(simulator: Simulator, tmp_path: Path) -> None:
    app, ok = poll_once(settings_from(tmp_path, k6_config(simulator, [103054, 103055])))
    assert ok
    text = exposition(app)
    expected = {**expected_series(simulator, 103054)}
    for family, series in expected_series(simulator, 103055).items():
        expected.setdefault(family, {}).update(series)
    assert set(expected) >= {"k6_http_req_duration_seconds", "k6_http_reqs", "k6_data_received_bytes", "k6_vus"}
    for family, series in expected.items():
        assert samples_of(text, family) == pytest.approx(series), family


def test_time_metrics_are_converted_from_milliseconds(simulator: Simulator, tmp_path: Path) -> None:
    app, _ = poll_once(settings_from(tmp_path, k6_config(simulator, [103054])))
    seconds = samples_of(exposition(app), "k6_http_req_duration_seconds")
    body = api(simulator, "metrics", [("test_run_id", 103054), ("page_size", 100)])
    home = next(m for m in body["k6-metrics"] if m["name"] == "http_req_duration" and m["tags"]["url"] == "https://test.k6.io/")
    (serie,) = api(simulator, "series", [("test_run_id", 103054), ("ids[]", home["id"]), ("method", "max")])["k6-serie"]
    milliseconds = float(serie["values"][-1]["value"])
    key = tuple(sorted({"test_run_id": "103054", "stat": "max", **home["tags"]}.items()))
    assert seconds[key] == pytest.approx(milliseconds / 1000)
    assert milliseconds > 10  # the simulator serves milliseconds, so the division matters


def test_hostile_tag_values_survive_escaping(simulator: Simulator, tmp_path: Path) -> None:
    app, ok = poll_once(settings_from(tmp_path, k6_config(simulator, [103054])))
    assert ok
    text = exposition(app)
    series = samples_of(text, "k6_http_req_duration_seconds")
    urls = {dict(labels)["url"] for labels in series}
    assert {HOSTILE_URL, UNICODE_URL} <= urls
    odd = next(dict(labels) for labels in series if dict(labels)["url"] == UNICODE_URL)
    assert odd["my_tag_name"] == 'va"l\\ue'
    assert odd["tag_stat"] == "collides"  # a tag may not overwrite our own `stat` label
    # A metric whose series has no values makes no series, and fails nothing.
    assert any(m["name"] == EMPTY_METRIC for m in api(simulator, "metrics", [("test_run_id", 103054), ("page_size", 100)])["k6-metrics"])
    assert f"k6_{EMPTY_METRIC}" not in text


def test_thresholds_and_overview(simulator: Simulator, tmp_path: Path) -> None:
    app, _ = poll_once(settings_from(tmp_path, k6_config(simulator, [103054])))
    text = exposition(app)
    raw = api(simulator, "thresholds", [("test_run_id", 103054)])
    metric_names = {m["id"]: (m["name"], m["contains"]) for m in raw["k6-metrics"]}
    values, limits, failed = {}, {}, {}
    for t in raw["k6-thresholds"]:
        name, contains = metric_names[t["metric_id"]]
        scale = 0.001 if contains == "time" else 1.0
        key = tuple(sorted({"test_run_id": "103054", "threshold": t["name"], "stat": t["stat"], "metric": name}.items()))
        values[key] = t["calculated_value"] * scale
        limits[key] = t["value"] * scale
        failed[key] = 1.0 if t["tainted"] else 0.0
    assert samples_of(text, "k6_cloud_threshold_value") == pytest.approx(values)
    assert samples_of(text, "k6_cloud_threshold_limit") == pytest.approx(limits)
    assert samples_of(text, "k6_cloud_threshold_failed") == failed
    assert 1.0 in failed.values() and 0.0 in failed.values()

    (overview,) = api(simulator, "run-overviews", [("test_run_id", 103054)])["k6-run-overviews"]
    run = (("test_run_id", "103054"),)
    for family, prefix in [("k6_cloud_run_checks", "checks"), ("k6_cloud_run_check_hits", "checks_hits"),
                           ("k6_cloud_run_thresholds", "thresholds"), ("k6_cloud_run_urls", "urls"),
                           ("k6_cloud_run_url_hits", "urls_hits")]:
        assert samples_of(text, family) == {
            (("state", "succeeded"), *run): overview[f"{prefix}_successes"],
            (("state", "total"), *run): overview[f"{prefix}_total"],
        }
    assert samples_of(text, "k6_cloud_run_http_req_duration_avg_seconds") == {
        run: pytest.approx(overview["http_req_duration_avg"] / 1000)
    }
    assert samples_of(text, "k6_cloud_run_http_reqs_avg") == {run: pytest.approx(overview["http_reqs_avg"])}


def test_pagination_and_batch_splitting(simulator: Simulator, tmp_path: Path) -> None:
    # 150 metrics over pages of 40; batches of 120 ids exceed the API's 50 and get split.
    config = k6_config(simulator, [103056], extra="page_size = 40\nseries_batch_size = 120")
    app, ok = poll_once(settings_from(tmp_path, config))
    assert ok
    series = samples_of(exposition(app), "k6_http_req_duration_seconds")
    assert len(series) == 150 * 4
    pages = [r for r in simulator.requests if r.path.endswith("/metrics")]
    assert [r.param("page") for r in pages] == ["1", "2", "3", "4"]
    batches = [r for r in simulator.requests if r.path.endswith("/series")]
    refused = [r for r in batches if len(r.query["ids[]"]) > 50]
    assert refused, "the oversized batch should have been tried first"
    sizes = sorted(len(r.query["ids[]"]) for r in batches if len(r.query["ids[]"]) <= 50)
    assert sum(sizes) == 150 * 4


def test_requests_carry_token_and_user_agent(simulator: Simulator, tmp_path: Path) -> None:
    poll_once(settings_from(tmp_path, k6_config(simulator, [103054])))
    for request in simulator.requests:
        assert request.headers["authorization"] == f"Token {SIMULATOR_TOKEN}"
        assert request.headers["user-agent"].startswith("api-metrics-exporter/")
        assert SIMULATOR_TOKEN not in str(request.query)


def test_unknown_run_is_not_found(simulator: Simulator, tmp_path: Path) -> None:
    app, ok = poll_once(settings_from(tmp_path, k6_config(simulator, [999])))
    assert not ok
    assert samples_of(exposition(app), "apimetrics_poll_errors_total")[
        (("reason", "not_found"), ("source", "k6"), ("target", "999"))] == 1


def test_wrong_token_is_auth(simulator: Simulator, tmp_path: Path) -> None:
    config = k6_config(simulator, [103054]).replace(SIMULATOR_TOKEN, "wrong-token")
    app, ok = poll_once(settings_from(tmp_path, config))
    assert not ok
    assert samples_of(exposition(app), "apimetrics_poll_errors_total")[
        (("reason", "auth"), ("source", "k6"), ("target", "103054"))] == 1


@pytest.mark.parametrize("status", [404, 410])
def test_retired_endpoint_is_reported_as_such(
    simulator: Simulator, tmp_path: Path, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    simulator.inject(Fault(path="/metrics\\?", kind="status", status=status))
    app, ok = poll_once(settings_from(tmp_path, k6_config(simulator, [103054])))
    assert not ok
    assert samples_of(exposition(app), "apimetrics_poll_errors_total")[
        (("reason", "retired"), ("source", "k6"), ("target", "103054"))] == 1
    lines = [r.getMessage() for r in caplog.records if "retired" in r.getMessage()]
    assert len(lines) == 1 and "deprecated" in lines[0]


_STAMPS = st.sampled_from(["2026-05-28T20:24:15Z", "2026-05-28T20:24:30Z", "2026-05-28 20:24:30+00:00",
                           "2026-05-28T20:24:00.123456789Z", "garbage", 1_779_999_000, 1_779_999_000_000.0])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_STAMPS, max_size=5), max_size=6))
def test_the_newest_point_is_the_last_of_the_latest_whatever_the_order(series: list[list[Any]]) -> None:
    def reference(points: list[dict[str, Any]]) -> dict[str, Any] | None:
        best, best_time = None, -math.inf
        for point in points:
            try:
                moment = parse_timestamp(point["timestamp"])
            except ValueError:
                moment = -math.inf
            if best is None or moment >= best_time:
                best, best_time = point, moment
        return best

    grids: dict[tuple[Any, ...], int] = {}  # shared, as within one poll
    for stamps in series:
        points = [{"timestamp": stamp, "value": float(i)} for i, stamp in enumerate(stamps)]
        assert _newest(points, grids) is reference(points)  # type: ignore[arg-type]


@pytest.mark.parametrize(("path", "key", "label"), [
    ("/metrics\\?", "url", "url"),            # a tag (json.loads path)
    ("/series\\?", "method", "stat"),         # a series (pydantic-core path)
    ("/thresholds\\?", "name", "threshold"),
])
def test_lone_surrogates_upstream_become_replacement_characters(
    simulator: Simulator, tmp_path: Path, path: str, key: str, label: str,
) -> None:
    """Half a UTF-16 pair (`"\\ud800"`) cannot be written as UTF-8: it becomes
    U+FFFD, the poll succeeds and /metrics stays valid UTF-8."""
    simulator.inject(Fault(path=path, kind="lone_surrogate", key=key, times=100))
    app, ok = poll_once(settings_from(tmp_path, k6_config(simulator, [103054])))
    assert ok
    text = exposition(app)  # decoding checks it is valid UTF-8
    assert re.search(f'{label}="[^"]*\ufffd"', text)
