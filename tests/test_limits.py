"""Cardinality limits and sharding."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.app import App
from exporter.config import ConfigError
from exporter.config.limits import ShardingConfig, shard_of
from exporter.limits import TRUNCATION_MARKER
from exporter.simulator import Simulator
from tests.conftest import exposition, k6_config, poll_once, samples_of, settings_from

TARGETS = [("src-a", str(i)) for i in range(1500)] + [("src-b", f"flow-{i}") for i in range(1500)]


def test_every_target_has_exactly_one_shard() -> None:
    owners = {t: [i for i in range(3) if shard_of(*t, 3) == i] for t in TARGETS}
    assert all(len(o) == 1 for o in owners.values())
    counts = [sum(o == [i] for o in owners.values()) for i in range(3)]
    assert all(900 < c < 1100 for c in counts)  # evenly spread


def test_growing_from_3_to_4_shards_moves_about_a_quarter() -> None:
    moved = [t for t in TARGETS if shard_of(*t, 3) != shard_of(*t, 4)]
    assert 0.2 < len(moved) / len(TARGETS) < 0.3
    assert all(shard_of(*t, 4) == 3 for t in moved)  # only to the new shard


def test_shards_of_one_config_cover_every_target_once(tmp_path: Path, simulator: Simulator) -> None:
    runs = list(range(1, 61))
    owned: list[str] = []
    for index in range(3):
        text = f"[sharding]\ntotal = 3\nindex = {index}\n" + k6_config(simulator, runs)
        app = App(settings_from(tmp_path, text))
        app.build()
        owned += [t.id for _, t in app.targets]
        assert f'apimetrics_shard_info{{index="{index}",total="3"}} 1.0' in exposition(app)
    assert sorted(owned, key=int) == [str(r) for r in runs]


def test_index_from_hostname() -> None:
    config = ShardingConfig(total=4, index_from_hostname=True)
    assert config.resolved_index("api-metrics-exporter-2") == 2
    with pytest.raises(ValueError, match="does not end in -<number>"):
        config.resolved_index("exporter")
    with pytest.raises(ValueError, match="not below total 4"):
        config.resolved_index("api-metrics-exporter-7")


def test_bad_shard_index_is_a_config_error(tmp_path: Path, simulator: Simulator) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from(tmp_path, "[sharding]\ntotal = 2\nindex = 2\n" + k6_config(simulator, [1]))
    assert caught.value.lines() == ["sharding: index 2 must be below total 2"]


def k6_series(text: str) -> set[tuple[tuple[str, str], ...]]:
    return set(samples_of(text, "k6_http_req_duration_seconds"))


def test_per_target_cap_keeps_existing_series(simulator: Simulator, tmp_path: Path) -> None:
    settings = settings_from(tmp_path, k6_config(simulator, [103056], extra="max_series = 100"))
    app = App(settings)
    app.build()
    source, target = app.targets[0]
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(app.runner.poll(source, target))
        text = exposition(app)
        first = k6_series(text)
        key = (("source", "k6"), ("target", "103056"))
        assert samples_of(text, "apimetrics_target_series")[key] == 100
        dropped = samples_of(text, "apimetrics_series_dropped_total")[key]
        assert dropped > 0
        simulator.clock.frozen += 600  # new values, same series
        assert loop.run_until_complete(app.runner.poll(source, target))
        assert k6_series(exposition(app)) == first
        assert samples_of(exposition(app), "apimetrics_series_dropped_total")[key] == 2 * dropped
    finally:
        loop.run_until_complete(source.aclose())
        loop.close()


def test_global_cap(simulator: Simulator, tmp_path: Path) -> None:
    # Run 103054 exports 64 series, 103056 over 600: capped at 100 each, 120 together.
    text = "[limits]\nmax_series = 120\n" + k6_config(simulator, [103054, 103056], extra="max_series = 100")
    app, _ = poll_once(settings_from(tmp_path, text))
    series = samples_of(exposition(app), "apimetrics_target_series")
    assert sum(series.values()) == 120 and max(series.values()) <= 100


def test_long_label_values_are_truncated_and_counted(simulator: Simulator, tmp_path: Path) -> None:
    text = "[limits]\nmax_label_bytes = 24\n" + k6_config(simulator, [103054])
    app, ok = poll_once(settings_from(tmp_path, text))
    assert ok
    exposed = exposition(app)
    urls = {dict(k)["url"] for k in k6_series(exposed)}
    assert all(len(u.encode()) <= 24 for u in urls)
    assert any(u.endswith(TRUNCATION_MARKER) for u in urls)
    truncated = samples_of(exposed, "apimetrics_label_values_truncated_total")[(("source", "k6"), ("target", "103054"))]
    assert truncated > 0
