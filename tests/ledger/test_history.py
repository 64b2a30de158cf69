"""A backfill's counters: 0 at --since, each complete period's count added at its end."""

from __future__ import annotations

import math

from exporter.ledger.history import counter_history, history_samples, running_totals
from exporter.model import Family, Kind


def end_of(start: float) -> float:
    return start + 60


def test_running_totals_start_at_zero_and_skip_open_and_invalid_periods() -> None:
    periods = {0.0: 5.0, 60.0: 2.0, 120.0: -1.0, 180.0: math.nan, 240.0: 3.0, 300.0: 7.0}
    # since 0 (on the grid); until 300: the period starting at 300 is still open.
    assert running_totals(periods, end_of, 0.0, 300.0) == [(0.0, 0.0), (60.0, 5.0), (120.0, 7.0), (300.0, 10.0)]


def test_an_unaligned_since_gets_a_zero_at_the_first_period_start() -> None:
    # The period starting at 0 began before --since: it is not counted.
    assert running_totals({0.0: 5.0, 60.0: 2.0}, end_of, 30.0, 120.0) == [(30.0, 0.0), (60.0, 0.0), (120.0, 2.0)]


def test_history_samples_keep_the_live_families_and_labels() -> None:
    family = Family("bird_flow_runs", Kind.COUNTER, "runs")
    history = counter_history({("bird_flow_runs", "status", "ok"): {0.0: 1.0, 60.0: 2.0}}, end_of, 0.0, 120.0)
    (sample,) = history_samples(history, {family.name: family}, (("flow_id", "f"),), 0.0)
    assert sample.labels == (("flow_id", "f"), ("status", "ok"))
    assert (sample.timestamp, sample.value, sample.created) == (120.0, 3.0, 0.0)
    assert sample.history == ((0.0, 0.0), (60.0, 1.0))
