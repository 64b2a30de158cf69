"""FluxSource's poll (source.py): the shared budget and 429s, the deadline, failing metrics and keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter.simulator import Fault, Simulator
from exporter.simulator.flux import FluxFake
from tests.conftest import samples_of
from tests.sources.flux.support import (
    Harness,
    bulk_exported,
    exporter_requests,
    flux_config,
    key,
    max_in_window,
    queries,
)


def test_sources_with_one_key_share_the_budget(simulator: Simulator, flux: FluxFake, tmp_path: Path) -> None:
    limit, window = 10, 0.5
    flux.rate_limit = (limit, window)
    flux.add_bulk(20)
    budget = f'rate_limit = {{ queries = {limit}, per = "{window}s" }}'
    text = flux_config(simulator, budget, name="flux-a") + flux_config(simulator, budget, name="flux-b").replace(
        'account = "acme"', 'account = "acme-b"')
    h = Harness(simulator, tmp_path, text)
    try:
        assert h.poll()
        sent = exporter_requests(simulator)
        assert len(sent) == 2 * 27
        assert max_in_window([r.received_at for r in sent], window) <= limit
        assert samples_of(h.text(), "apimetrics_http_retries_total") == {}
    finally:
        h.close()


def test_429_is_honoured_for_every_holder_of_the_key(simulator: Simulator, flux: FluxFake, harness: Any) -> None:
    simulator.inject(Fault(path="users.online/query", kind="rate_limit", retry_after=1, times=1))
    h = harness('metrics = ["users.online", "queue.depth", "api.requests"]')
    assert h.poll()
    sent = exporter_requests(simulator)
    limited = next(i for i, r in enumerate(sent) if "users.online" in r.path)
    assert sent[limited + 1].received_at - sent[limited].received_at >= 1.0  # nobody sent before Retry-After
    text = h.text()
    assert samples_of(text, "apimetrics_http_retries_total") == {(("reason", "rate_limited"), ("source", "flux")): 1}
    assert samples_of(text, "flux_users_online") and samples_of(text, "flux_queue_depth")


def test_429_given_up_counts_rate_limited_for_that_metric_only(simulator: Simulator, harness: Any) -> None:
    simulator.inject(Fault(path="users.online/query", kind="rate_limit", retry_after=2, times=5))
    h = harness('metrics = ["users.online", "queue.depth", "api.requests"]',
                http="retries = 2, backoff = 0.01, max_retry_after = 0.5")
    assert h.poll()
    text = h.text()
    errors = samples_of(text, "apimetrics_poll_errors_total")
    assert errors[(("reason", "rate_limited"), ("source", "flux"), ("target", "acme"))] == 1
    assert samples_of(text, "flux_users_online") == {}
    assert samples_of(text, "flux_queue_depth") and samples_of(text, "flux_api_requests_total")
    sent = exporter_requests(simulator)
    limited = next(i for i, r in enumerate(sent) if "users.online" in r.path)
    assert sent[limited + 1].received_at - sent[limited].received_at >= 2.0


def test_the_real_limiter_is_survived_when_the_config_is_too_generous(simulator: Simulator, flux: FluxFake,
                                                                      harness: Any) -> None:
    flux.rate_limit = (4, 1.0)
    h = harness('rate_limit = { queries = 100, per = "1s" }', http="retries = 5, backoff = 0.01")
    assert h.poll()
    text = h.text()
    assert samples_of(text, "apimetrics_http_retries_total")[(("reason", "rate_limited"), ("source", "flux"))] >= 1
    assert samples_of(text, "flux_queries_completed") == {key(): 7.0}
    assert samples_of(text, "flux_users_online") and samples_of(text, "flux_api_response_time_count")


def test_a_poll_stops_before_its_deadline_and_keeps_what_it_has(simulator: Simulator, flux: FluxFake,
                                                                harness: Any) -> None:
    flux.add_bulk(60)
    h = harness('timeout = "2s"\nrate_limit = { queries = 10, per = "1s" }')
    assert h.poll()
    text = h.text()
    planned = samples_of(text, "flux_queries_planned")[key()]
    completed = samples_of(text, "flux_queries_completed")[key()]
    assert planned == 67 and 10 <= completed < 40
    errors = samples_of(text, "apimetrics_poll_errors_total")
    assert errors[(("reason", "timeout"), ("source", "flux"), ("target", "acme"))] == 1
    assert h.app.sources[0].poll_timeout == 2.0  # an explicit timeout is kept
    first = bulk_exported(text)
    assert first

    # The next poll starts where this one stopped; what it does not reach keeps its value.
    asked_before = len(queries(simulator))
    assert h.poll()
    second = bulk_exported(h.text())
    assert first < second
    resumed = queries(simulator)[asked_before].path.split("/")[-2]
    assert f"flux_{resumed.replace('.', '_')}" not in first


def test_one_metric_failing_does_not_fail_the_others(simulator: Simulator, harness: Any) -> None:
    h = harness("""
    metrics = ["users.online", "no.such.metric",
               { name = "api.response_time", type = "gauge" },
               { name = "ghost", type = "counter" }]
    """)
    assert h.poll()
    assert h.poll()
    text = h.text()
    errors = samples_of(text, "apimetrics_poll_errors_total")
    target = (("source", "flux"), ("target", "acme"))
    assert errors[(("reason", "not_found"),) + target] == 4  # no.such.metric's lookup and ghost's query, twice
    assert errors[(("reason", "http_4xx"),) + target] == 2  # `last` is not an aggregation of a distribution
    assert samples_of(text, "apimetrics_target_up") == {target: 1.0}
    assert samples_of(text, "flux_users_online")
    lookups = [r for r in exporter_requests(simulator) if r.path == "/flux/api/v1/metrics/no.such.metric"]
    assert len(lookups) == 2


def test_a_bad_key_fails_the_poll_as_auth(simulator: Simulator, tmp_path: Path) -> None:
    h = Harness(simulator, tmp_path, flux_config(simulator, key="sk_wrong"))
    try:
        assert not h.poll()
        status = h.app.statuses()[0]
        assert status.reason == "auth" and "Invalid API key" in status.message
        assert "sk_wrong" not in status.message
    finally:
        h.close()


def test_all_metrics_failing_fails_the_poll(simulator: Simulator, harness: Any) -> None:
    h = harness('metrics = [{ name = "ghost", type = "gauge" }, { name = "ghoul", type = "gauge" }]')
    assert not h.poll()
    errors = samples_of(h.text(), "apimetrics_poll_errors_total")
    assert errors[(("reason", "not_found"), ("source", "flux"), ("target", "acme"))] == 2
