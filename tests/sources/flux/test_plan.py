"""The query plan (plan.py): name collisions skipped, the requests a cycle needs, the budget warning.

First through the exporter against the simulator, then the module's functions alone.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from exporter.errors import PollError
from exporter.simulator import Simulator
from exporter.simulator.flux import FakeMetric, FluxFake
from exporter.sources.flux.config import FluxConfig, FluxMetricConfig
from exporter.sources.flux.dialects import ServerDialect
from exporter.sources.flux.families import Metric
from exporter.sources.flux.notes import Notes
from exporter.sources.flux.plan import (
    Cycle,
    configured_metrics,
    discovered_metrics,
    duration,
    initial_requests,
    queue_order,
    window_start,
    without_collisions,
)
from exporter.sources.kit.periods import MINUTE
from tests.conftest import samples_of
from tests.sources.flux.support import exporter_requests, key, max_in_window, queries


def test_discovered_collisions_are_skipped_with_one_error(simulator: Simulator, flux: FluxFake, harness: Any,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    flux.add(FakeMetric("api-response_time", "distribution", {}, "", "", 50.0))
    flux.add(FakeMetric("jobs", "counter"))
    flux.add(FakeMetric("jobs.total", "gauge"))  # flux_jobs_total, the counter's exposed name
    flux.add(FakeMetric("queries.planned", "gauge"))  # one of the exporter's own names
    h = harness()
    assert h.poll()
    assert h.poll()
    text = h.text()
    for family in ("flux_api_response_time", "flux_api_response_time_count", "flux_jobs_total",
                   "flux_queries_planned"):
        assert all(dict(k).get("account") == "acme" for k in samples_of(text, family))
    assert samples_of(text, "flux_api_response_time") == {}
    assert samples_of(text, "flux_jobs_total") == {}
    assert samples_of(text, "flux_queries_planned") == {key(): 6.0}  # list + 5 queries
    assert samples_of(text, "flux_users_online")  # the others are fine
    asked = {r.path.split("/")[-2] for r in queries(simulator)}
    assert not asked & {"api.response_time", "api-response_time", "jobs", "jobs.total", "queries.planned"}
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len([r for r in errors if "'api-response_time', 'api.response_time'" in r.getMessage()]) == 1
    assert len([r for r in errors if "'jobs', 'jobs.total'" in r.getMessage()]) == 1
    assert len([r for r in errors if "'queries.planned'" in r.getMessage()]) == 1


def test_a_configured_metric_of_a_type_the_docs_do_not_list_is_skipped_not_a_failed_poll(
        simulator: Simulator, flux: FluxFake, harness: Any, caplog: pytest.LogCaptureFixture) -> None:
    flux.add(FakeMetric("queue.latency", "histogram"))
    h = harness('metrics = ["queue.latency", "users.online"]')
    assert h.poll()  # was a failed poll (`internal`: a KeyError on the type) until 2026-12-07
    assert h.poll()
    text = h.text()
    assert samples_of(text, "flux_users_online")  # the other metric is asked and exported
    assert samples_of(text, "flux_queue_latency") == {}
    assert not any(r.path.split("/")[-2] == "queue.latency" for r in queries(simulator))
    warnings = [r.getMessage() for r in caplog.records if "queue.latency" in r.getMessage()]
    assert warnings == ["flux: metric 'queue.latency' has unknown type 'histogram'; skipped (set its "
                        "`type` in the config to ask it as one of gauge, counter, distribution, set)"]


def test_budget_holds_with_200_metrics(simulator: Simulator, flux: FluxFake, harness: Any,
                                       caplog: pytest.LogCaptureFixture) -> None:
    limit, window = 50, 1.0
    flux.rate_limit = (limit, window)
    names = flux.add_bulk(200)
    h = harness(f'interval = "2s"\nrate_limit = {{ queries = {limit}, per = "{window}s" }}')
    caplog.set_level(logging.WARNING)
    assert h.poll()
    sent = exporter_requests(simulator)
    assert len(sent) == 207  # the list, 206 queries
    assert max_in_window([r.received_at for r in sent], window) <= limit
    assert sent[-1].received_at - sent[0].received_at >= 4 * window  # five windows' worth
    text = h.text()
    assert samples_of(text, "apimetrics_http_retries_total") == {}  # no 429 was ever answered
    assert len(samples_of(text, "flux_bulk_metric_0199")) == 1 and len(names) == 200
    assert samples_of(text, "flux_queries_planned") == samples_of(text, "flux_queries_completed") == {key(): 207.0}
    # Said at discovery, and the deadline follows the plan (interval + 2 × 4 windows).
    warning = next(r.getMessage() for r in caplog.records if "requests a cycle" in r.getMessage())
    assert "207 requests" in warning and "at least 4s" in warning
    config = h.app.sources[0]  # the source derives both from its plan
    assert config.poll_timeout == pytest.approx(2 + 2 * 4.0)
    assert config.staleness_limit == pytest.approx(3 * (2 + 4.0))


def test_a_plan_longer_than_the_interval_is_announced_at_start(simulator: Simulator, harness: Any,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    h = harness('interval = "30s"\nrate_limit = { queries = 2, per = "60s" }\n'
                'metrics = [{ name = "users.online", type = "gauge" }, { name = "api.requests", type = "counter" },'
                ' { name = "queue.depth", type = "gauge", aggregations = ["last", "max"] }]')
    # Worst case before the dialect is known: 1 + 1 + 2 requests, a second window of 60 s.
    (warning,) = [r.getMessage() for r in caplog.records if "requests a cycle" in r.getMessage()]
    assert "need up to 4 requests" in warning and "at least 1m" in warning and "interval to 1m" in warning
    config = h.app.sources[0]  # the source derives both from its plan
    assert config.poll_timeout == 30 + 2 * 60 and config.staleness_limit == 3 * (30 + 60)


# --- the functions of plan.py ---------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (45, "45s"), (59.2, "1m"), (200, "3m20s"), (3600, "1h"), (3900, "1h5m"), (3601, "1h1s"),
])
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def metrics(*specs: tuple[str, int]) -> list[Metric]:
    return [Metric(name, "gauge", ("last", "avg", "min", "max")[:count]) for name, count in specs]


def test_queue_order_resumes_and_probes_with_one_aggregation() -> None:
    a, b, c = metrics(("a", 3), ("b", 1), ("c", 2))
    assert list(queue_order([a, b, c], None, probing=False)) == [a, b, c]
    assert list(queue_order([a, b, c], "c", probing=False)) == [c, a, b]
    assert list(queue_order([a, b, c], "gone", probing=False)) == [a, b, c]
    assert list(queue_order([a, b, c], "c", probing=True)) == [b, c, a]
    assert list(queue_order([a, c], "c", probing=True)) == [c, a]  # no single-aggregation metric: no change


def test_window_start_reaches_back_to_the_last_success() -> None:
    minute = 29_666_666 * 60.0
    now = minute + 30
    assert window_start(MINUTE, 5, now, None, 180) == minute - 300
    assert window_start(MINUTE, 5, now, now - 100, 180) == minute - 120 - 300
    assert window_start(MINUTE, 5, now, now - 1000, 180) == minute - 180 - 300  # at most the staleness limit
    assert window_start(MINUTE, 5, now, now + 50, 180) == minute - 300  # a clock that went back


def test_initial_requests_count_the_costlier_dialect() -> None:
    def config(metrics: list[Any] | None) -> FluxConfig:
        return FluxConfig.model_validate({"type": "flux", "name": "flux", "metrics": metrics})

    assert initial_requests(config(None)) is None
    # The list (one metric has no type), 8 for an untyped one (a distribution's aggregations, `count` free),
    # 1 for the gauge, 2 for the counter asked min and max… of a gauge.
    assert initial_requests(config(["a", {"name": "b", "type": "gauge"},
                                    {"name": "c", "type": "gauge", "aggregations": ["min", "max"]}])) == 1 + 8 + 1 + 2
    assert initial_requests(config([{"name": "b", "type": "counter"}])) == 1


def test_collisions_are_skipped_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    notes = Notes("flux")
    candidates = [Metric("api.response_time", "distribution", ("p50", "count")),
                  Metric("api-response_time", "distribution", ("p50",)),
                  Metric("queries.planned", "gauge", ("last",)),
                  Metric("users.online", "gauge", ("last", "max")),
                  Metric("users.online.max", "gauge", ("last",))]
    for _ in range(2):
        assert without_collisions(candidates, "1m", notes) == []
    assert [r.getMessage() for r in caplog.records] == [
        ("flux: Flux metric(s) 'api-response_time', 'api.response_time' would be exported as "
         "flux_api_response_time, flux_api_response_time_count, flux_api_response_time_created, "
         "flux_api_response_time_sum; skipped, never merged"),
        ("flux: Flux metric(s) 'queries.planned' would be exported as flux_queries_planned "
         "(the exporter's own name); skipped, never merged"),
        ("flux: Flux metric(s) 'users.online', 'users.online.max' would be exported as flux_users_online_max; "
         "skipped, never merged")]
    assert all(r.levelno == logging.ERROR for r in caplog.records)
    fine = Metric("users.online", "gauge", ("last",))
    assert without_collisions([fine, Metric("queue.depth", "gauge", ("last",))], "1m", notes)[0] == fine


def test_discovered_and_configured_candidates(caplog: pytest.LogCaptureFixture) -> None:
    notes = Notes("flux")
    listed = [("a", "gauge"), ("b", "histogram"), ("a", "counter"), ("c", "set")]
    assert discovered_metrics(listed, notes) == [Metric("a", "gauge", ("last",)), Metric("c", "set", ("count",))]
    entries = [FluxMetricConfig(name="x", aggregations=["p95", "max"], group_by=["tags.k"], tags={"b": "2", "a": "1"},
                                unit="ms"),
               FluxMetricConfig(name="y", aggregations=["p95"]), FluxMetricConfig(name="z")]
    types = {"x": "gauge", "y": "gauge"}  # z's lookup failed
    assert configured_metrics(entries, types, notes) == [
        Metric("x", "gauge", ("max",), ("k",), (("a", "1"), ("b", "2")), "ms")]
    assert [r.getMessage() for r in caplog.records] == [
        "flux: metric 'b' has unknown type 'histogram'; skipped",
        ("flux: metric 'x' is a gauge on the server; aggregation(s) p95 are not valid for it and are not asked "
         "(valid: last, avg, min, max)"),
        ("flux: metric 'y' is a gauge on the server; aggregation(s) p95 are not valid for it and are not asked "
         "(valid: last, avg, min, max); nothing is left to ask, so the metric is skipped")]


def test_a_cycle_stops_on_auth_and_replans_in_the_known_dialect() -> None:
    cycle = Cycle(window=0.0, deadline=0.0, completed=3)
    assert not cycle.fail(PollError("not_found", "gone")) and cycle.abort is None
    denied = PollError("auth", "denied")
    assert cycle.fail(denied) and cycle.abort is denied
    assert [e.reason for e in cycle.errors] == ["not_found"]
    dialect = ServerDialect(Notes("flux"), "http://flux.test/", grouped=False)
    cycle.pending.extend([Metric("d", "distribution", ("p50", "p99", "count")), Metric("g", "gauge", ("last",))])
    dialect.settle({"data": []}, cycle.pending[0])
    cycle.replan(2, dialect)
    assert cycle.planned == 3 + 2 + 2 + 1
