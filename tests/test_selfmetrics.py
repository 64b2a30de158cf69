"""A target's own series (exporter/selfmetrics.py): their labels are made once
per target, so the Prometheus sink's kept signatures (sinks/prometheus/blocks.py)
hold one copy, not one per poll."""

from __future__ import annotations

from dataclasses import replace

from exporter.model import TargetKey
from exporter.selfmetrics import TargetStats, target_samples


def test_a_targets_own_series_share_their_labels_from_poll_to_poll() -> None:
    key = TargetKey("bird", "flow-1")
    stats = TargetStats.starting(("validation",))
    first = target_samples(key, stats)
    stats.count_error("timeout")
    second = target_samples(key, replace(stats, up=True))  # as the runner replaces its stats
    labels = {(s.family.name, s.labels): s.labels for s in first}
    shared = [s for s in second if (s.family.name, s.labels) in labels]
    assert len(shared) == len(first)
    assert all(s.labels is labels[(s.family.name, s.labels)] for s in shared)


def test_stats_moved_to_another_target_get_that_targets_labels() -> None:
    stats = TargetStats.starting(())
    target_samples(TargetKey("bird", "flow-1"), stats)
    moved = target_samples(TargetKey("bird", "flow-2"), stats)
    assert all(dict(s.labels[:2]) == {"source": "bird", "target": "flow-2"} for s in moved)
