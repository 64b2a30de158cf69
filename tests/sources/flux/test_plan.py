"""The query plan (plan.py): name collisions skipped, the requests a cycle needs, the budget warning."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from exporter.simulator import Simulator
from exporter.simulator.flux import FakeMetric, FluxFake
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
