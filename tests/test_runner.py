"""Faults: retries, Retry-After, invalid responses, staleness, isolation of targets."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from exporter.app import App
from exporter.model import Family, Kind, Sample, TargetKey
from exporter.simulator import Fault, Simulator
from exporter.sources.base import Target
from exporter.sources.k6_cloud import K6CloudSource
from tests.conftest import exposition, k6_config, samples_of, settings_from

UP = "apimetrics_target_up"


def errors(app: App, target: str, reason: str) -> float:
    return samples_of(exposition(app), "apimetrics_poll_errors_total")[
        (("reason", reason), ("source", "k6"), ("target", target))]


def up(app: App, target: str) -> float:
    return samples_of(exposition(app), UP)[(("source", "k6"), ("target", target))]


class Polls:
    """An app whose targets are polled on demand, with a clock the test moves."""

    def __init__(self, settings_text: str, tmp_path: Path) -> None:
        self.now = 1_000_000.0
        self.app = App(settings_from(tmp_path, settings_text), clock=lambda: self.now)
        self.loop = asyncio.new_event_loop()
        self.app.build()

    def poll(self, target: str) -> bool:
        source, tgt = next((s, t) for s, t in self.app.targets if t.id == target)
        return self.loop.run_until_complete(self.app.runner.poll(source, tgt))

    def close(self) -> None:
        for source in self.app.sources:
            self.loop.run_until_complete(source.aclose())
        self.loop.close()


@pytest.fixture
def polls(simulator: Simulator, tmp_path: Path):  # type: ignore[no-untyped-def]
    p = Polls(k6_config(simulator, [103054, 103055]), tmp_path)
    yield p
    p.close()


def test_5xx_then_success_is_retried(simulator: Simulator, polls: Polls) -> None:
    simulator.inject(Fault(path="/run-overviews", kind="status", status=503))
    assert polls.poll("103054")
    overview_requests = [r for r in simulator.requests if r.path.endswith("/run-overviews")]
    assert len(overview_requests) == 2
    retries = samples_of(exposition(polls.app), "apimetrics_http_retries_total")
    assert retries[(("reason", "http_5xx"), ("source", "k6"))] == 1
    assert errors(polls.app, "103054", "http_5xx") == 0


def test_persistent_5xx_fails_after_bounded_retries(simulator: Simulator, polls: Polls) -> None:
    simulator.inject(Fault(path="/run-overviews", kind="status", status=502, times=50))
    assert not polls.poll("103054")
    assert len([r for r in simulator.requests if r.path.endswith("/run-overviews")]) == 3  # 1 + retries=2
    assert errors(polls.app, "103054", "http_5xx") == 1


def test_429_waits_retry_after(simulator: Simulator, polls: Polls) -> None:
    simulator.inject(Fault(path="/metrics\\?", kind="rate_limit", retry_after=1))
    assert polls.poll("103054")
    first, second = [r for r in simulator.requests if r.path.endswith("/metrics")][:2]
    assert second.received_at - first.received_at >= 1.0
    retries = samples_of(exposition(polls.app), "apimetrics_http_retries_total")
    assert retries[(("reason", "rate_limited"), ("source", "k6"))] == 1


def test_retry_after_beyond_the_cap_fails_as_rate_limited(simulator: Simulator, polls: Polls) -> None:
    simulator.inject(Fault(path="/metrics\\?", kind="rate_limit", retry_after=3600))
    assert not polls.poll("103054")
    assert len([r for r in simulator.requests if r.path.endswith("/metrics")]) == 1
    assert errors(polls.app, "103054", "rate_limited") == 1


@pytest.mark.parametrize(("kind", "status", "reason"), [("rate_limit", 429, "rate_limited"),
                                                      ("status", 503, "http_5xx")])
def test_a_retry_wait_past_the_deadline_fails_the_poll_under_its_reason(
    simulator: Simulator, tmp_path: Path, kind: str, status: int, reason: str
) -> None:
    # Retry-After 1.5 s, a 2 s deadline: the first wait fits, the second would end after the
    # deadline, so the poll fails at once under the reason of the answer, not as a timeout.
    p = Polls(k6_config(simulator, [103054], extra='timeout = "2s"\nhttp = { retries = 5 }').replace(
        "http = { retries = 2, backoff = 0.01, max_backoff = 0.05 }", ""), tmp_path)
    try:
        simulator.inject(Fault(path="/metrics\\?", kind=kind, status=status, retry_after=1.5, times=50))
        assert not p.poll("103054")
        assert len([r for r in simulator.requests if r.path.endswith("/metrics")]) == 2
        assert errors(p.app, "103054", reason) == 1
        assert errors(p.app, "103054", "timeout") == 0
    finally:
        p.close()


def test_a_slow_body_ends_the_poll_at_its_deadline_counted_once_as_timeout(
    simulator: Simulator, tmp_path: Path
) -> None:
    # One answer of 2 MiB that would take 8 s to arrive, a 2 s deadline.
    p = Polls(k6_config(simulator, [103054], extra='timeout = "2s"'), tmp_path)
    try:
        simulator.inject(Fault(path="/run-overviews", kind="padding", size=2 * 2**20, delay=8.0))
        started = time.monotonic()
        assert not p.poll("103054")
        assert time.monotonic() - started < 6.0  # not the 8 s of the body
        counted = {dict(k)["reason"]: v for k, v in samples_of(exposition(p.app), "apimetrics_poll_errors_total").items()
                   if v}
        assert counted == {"timeout": 1}
    finally:
        p.close()


def test_4xx_is_not_retried(simulator: Simulator, polls: Polls) -> None:
    simulator.inject(Fault(path="/thresholds", kind="status", status=400))
    assert not polls.poll("103054")
    assert len([r for r in simulator.requests if r.path.endswith("/thresholds")]) == 1
    assert errors(polls.app, "103054", "http_4xx") == 1


def test_malformed_json_keeps_previous_snapshot(simulator: Simulator, polls: Polls) -> None:
    assert polls.poll("103054")
    before = samples_of(exposition(polls.app), "k6_vus")
    assert before
    simulator.inject(Fault(path="/thresholds", kind="malformed"))
    polls.now += 60
    assert not polls.poll("103054")
    assert errors(polls.app, "103054", "invalid_response") == 1
    assert up(polls.app, "103054") == 0
    assert samples_of(exposition(polls.app), "k6_vus") == before


def test_truncated_body_is_retried(simulator: Simulator, polls: Polls) -> None:
    simulator.inject(Fault(path="/series", kind="truncated"))
    assert polls.poll("103054")
    retries = samples_of(exposition(polls.app), "apimetrics_http_retries_total")
    assert retries[(("reason", "connection"), ("source", "k6"))] == 1


def test_stale_snapshot_is_dropped(simulator: Simulator, polls: Polls, caplog: pytest.LogCaptureFixture) -> None:
    assert polls.poll("103054")
    simulator.inject(Fault(path="test_run_id=103054", kind="status", status=500, times=1000))
    polls.now += 60
    assert not polls.poll("103054")
    assert samples_of(exposition(polls.app), "k6_vus")  # still within 3 × 60 s
    polls.now += 3 * 60
    text = exposition(polls.app)
    assert samples_of(text, "k6_vus") == {}
    assert samples_of(text, "apimetrics_snapshots_expired_total")[(("source", "k6"), ("target", "103054"))] == 1
    assert any("max_staleness" in r.getMessage() for r in caplog.records)


def test_one_broken_target_does_not_affect_another(simulator: Simulator, polls: Polls) -> None:
    simulator.inject(Fault(path="test_run_id=103055", kind="status", status=500, times=1000))
    ok = polls.loop.run_until_complete(polls.app.poll_all())
    assert not ok
    assert up(polls.app, "103054") == 1
    assert up(polls.app, "103055") == 0
    runs = {dict(labels)["test_run_id"] for labels in samples_of(exposition(polls.app), "k6_vus")}
    assert runs == {"103054"}


def test_slow_upstream_times_out(simulator: Simulator, tmp_path: Path) -> None:
    config = k6_config(simulator, [103054], extra='timeout = "0.5s"')
    p = Polls(config, tmp_path)
    try:
        simulator.inject(Fault(path="/metrics\\?", kind="latency", delay=2.0))
        assert not p.poll("103054")
        assert errors(p.app, "103054", "timeout") == 1
    finally:
        p.close()


def test_failure_logged_once_and_recovery_logged(
    simulator: Simulator, polls: Polls, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    simulator.inject(Fault(path="test_run_id=103054", kind="status", status=403, times=1000))
    for _ in range(3):
        assert not polls.poll("103054")
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "103054 failed" in r.getMessage()]
    assert len(warnings) == 1
    simulator.clear_faults()
    assert polls.poll("103054")
    assert any("recovered after 3 failed poll(s)" in r.getMessage() for r in caplog.records)


class _Unrenderable(K6CloudSource):
    """A source whose sample cannot be written as UTF-8 (half a UTF-16 pair):
    what a bug past the edge's cleaning would hand the runner."""

    async def poll(self, target: Target) -> list[Sample]:
        return [Sample(Family("broken", Kind.GAUGE, "Broken."), (("v", "\ud800"),), 1.0)]


def test_a_poll_that_cannot_be_rendered_fails_as_internal_and_keeps_the_snapshot(
    simulator: Simulator, polls: Polls
) -> None:
    assert polls.poll("103054")
    source, target = next((s, t) for s, t in polls.app.targets if t.id == "103054")
    broken = _Unrenderable(source.config, source.context)
    assert polls.loop.run_until_complete(polls.app.runner.poll(broken, target)) is False  # never raises
    assert up(polls.app, "103054") == 0
    assert errors(polls.app, "103054", "internal") == 1
    assert samples_of(exposition(polls.app), "k6_vus")  # the previous snapshot is still served


def test_an_overrun_shows_at_once_without_a_poll(polls: Polls) -> None:
    polls.app.runner.overrun(TargetKey("k6", "103054"))
    overruns = samples_of(exposition(polls.app), "apimetrics_poll_overruns_total")
    assert overruns[(("source", "k6"), ("target", "103054"))] == 1
    assert overruns[(("source", "k6"), ("target", "103055"))] == 0
