"""Tests for exporter.ledger: the period ledger and its state store."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.ledger.period import LedgerKey, LedgerStateError, PeriodLedger
from exporter.ledger.state import LEDGER_FILE_FORMAT, LEDGER_FILE_VERSION, LedgerStateStore

STEP = 60  # period grid in seconds
T0 = 1_700_000_040  # a minute boundary

KEY_A: LedgerKey = ("bird_flow_runs", "status", "completed_success")
KEY_B: LedgerKey = ("bird_flow_runs", "status", "failed")
KEYS: list[LedgerKey] = [KEY_A, KEY_B, ("flux_events",)]

PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def at(index: int) -> float:
    return float(T0 + index * STEP)


# ---------------------------------------------------------------------------
# History generation shared by the property tests.
#
# A poll covers periods [start, start + length) on the grid. Windows never move
# backwards and each overlaps the previous one. Per poll and series, every
# period of the window is independently reported or omitted; a poll may also
# carry "stale extras": values for periods before its window start, which the
# ledger must ignore.
# ---------------------------------------------------------------------------


def draw_windows(data: st.DataObject) -> list[tuple[int, int]]:
    n_polls = data.draw(st.integers(1, 10), label="polls")
    windows: list[tuple[int, int]] = []
    start, length = 0, data.draw(st.integers(1, 5))
    windows.append((start, length))
    for _ in range(n_polls - 1):
        start += data.draw(st.integers(0, length - 1))  # keep overlapping
        length = data.draw(st.integers(1, 5))
        windows.append((start, length))
    return windows


def period_value(data: st.DataObject, index: int) -> float:
    # Vendors send ints or floats for the same thing; both must land on the
    # same period.
    return data.draw(st.sampled_from([at(index), int(at(index))]))


def apply_model(
    model: dict[tuple[LedgerKey, float], float],
    watermark: float | None,
    window_start: float,
    values: dict[LedgerKey, dict[float, float]],
) -> float:
    """Reference semantics: latest observed value per period, stale ones ignored."""
    watermark = window_start if watermark is None else max(watermark, window_start)
    for key, periods in values.items():
        for period, value in periods.items():
            if float(period) >= watermark:
                model[(key, float(period))] = float(value)
    return watermark


def raw_of(model: dict[tuple[LedgerKey, float], float], key: LedgerKey) -> float:
    return sum(v for (k, _), v in model.items() if k == key)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_upward_revisions_total_is_sum_of_latest_values(data: st.DataObject) -> None:
    keys = data.draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True))
    ledger = PeriodLedger(created=1.0)
    truth: dict[tuple[LedgerKey, int], int] = {}
    model: dict[tuple[LedgerKey, float], float] = {}
    watermark: float | None = None
    previous = {key: 0.0 for key in keys}

    for start, length in draw_windows(data):
        values: dict[LedgerKey, dict[float, float]] = {}
        for key in keys:
            periods: dict[float, float] = {}
            for index in range(start, start + length):
                # The true count only grows: late events, the open period filling up.
                truth[(key, index)] = truth.get((key, index), 0) + data.draw(st.integers(0, 5))
                if data.draw(st.booleans()):
                    periods[period_value(data, index)] = truth[(key, index)]
            if start > 0 and data.draw(st.booleans()):
                # A vendor answering with a period before the window: already
                # settled, must not count (whatever its value).
                stale = data.draw(st.integers(max(0, start - 3), start - 1))
                periods[at(stale)] = data.draw(st.integers(0, 50))
            values[key] = periods

        corrections = ledger.observe(at(start), values)
        watermark = apply_model(model, watermark, at(start), values)

        assert corrections == 0
        for key in keys:
            expected = raw_of(model, key)
            assert ledger.total(key) == expected
            assert ledger.raw_total(key) == expected
            assert ledger.total(key) >= previous[key]
            previous[key] = ledger.total(key)
    assert ledger.corrections_total == 0
    assert ledger.rejected_values_total == 0
    assert ledger.watermark == watermark


@PROPERTY_SETTINGS
@given(data=st.data())
def test_downward_revisions_never_decrease_and_are_counted(data: st.DataObject) -> None:
    keys = data.draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True))
    ledger = PeriodLedger(created=1.0)
    model: dict[tuple[LedgerKey, float], float] = {}
    watermark: float | None = None
    max_raw = {key: 0.0 for key in keys}
    expected_corrections = 0

    for start, length in draw_windows(data):
        values: dict[LedgerKey, dict[float, float]] = {}
        for key in keys:
            values[key] = {
                at(index): data.draw(st.integers(0, 20))
                for index in range(start, start + length)
                if data.draw(st.booleans())
            }
        raw_before = {key: raw_of(model, key) for key in keys}
        totals_before = ledger.totals()

        corrections = ledger.observe(at(start), values)
        watermark = apply_model(model, watermark, at(start), values)

        in_this_poll = 0
        for key in keys:
            raw = raw_of(model, key)
            if raw < raw_before[key]:
                in_this_poll += 1
            max_raw[key] = max(max_raw[key], raw)
            assert ledger.raw_total(key) == raw
            assert ledger.total(key) == max_raw[key]
            assert ledger.total(key) >= totals_before.get(key, 0.0)
        assert corrections == in_this_poll
        expected_corrections += in_this_poll
        assert ledger.corrections_total == expected_corrections


# ---------------------------------------------------------------------------
# Specific behaviours
# ---------------------------------------------------------------------------


def test_overlapping_polls_do_not_double_count() -> None:
    ledger = PeriodLedger(created=1.0)
    ledger.observe(at(0), {KEY_A: {at(0): 3, at(1): 1}})
    ledger.observe(at(0), {KEY_A: {at(0): 3, at(1): 4}})  # open period grew
    ledger.observe(at(1), {KEY_A: {at(1): 5, at(2): 2}})  # period 0 settles
    assert ledger.total(KEY_A) == 3 + 5 + 2
    ledger.observe(at(2), {KEY_A: {at(2): 2}})
    assert ledger.total(KEY_A) == 10


def test_window_moving_backwards_does_not_double_count(caplog: pytest.LogCaptureFixture) -> None:
    ledger = PeriodLedger(created=1.0)
    ledger.observe(at(0), {KEY_A: {at(0): 1, at(1): 2}})
    ledger.observe(at(1), {KEY_A: {at(1): 2, at(2): 3}})
    assert ledger.total(KEY_A) == 6
    assert ledger.watermark == at(1)

    with caplog.at_level(logging.INFO, logger="exporter.ledger"):
        # Clock skew: the window starts before the watermark again and the
        # vendor even revises the already-settled period 0.
        ledger.observe(at(0), {KEY_A: {at(0): 100, at(1): 2, at(2): 3}})
    assert ledger.total(KEY_A) == 6
    assert ledger.watermark == at(1)
    assert ledger.stale_values_total == 1
    assert any("before the watermark" in r.getMessage() for r in caplog.records)

    # Periods still in the window keep being revisable after the skew.
    ledger.observe(at(0), {KEY_A: {at(2): 4}})
    assert ledger.total(KEY_A) == 7
    ledger.observe(at(2), {KEY_A: {at(2): 4, at(3): 1}})
    assert ledger.total(KEY_A) == 8


def test_absent_period_keeps_its_value() -> None:
    ledger = PeriodLedger(created=1.0)
    ledger.observe(at(0), {KEY_A: {at(0): 5, at(1): 7}, KEY_B: {at(0): 1}})
    # The vendor omits empty buckets; period 0 of KEY_A and all of KEY_B are
    # simply not in this response.
    ledger.observe(at(0), {KEY_A: {at(1): 8}})
    assert ledger.total(KEY_A) == 13
    assert ledger.total(KEY_B) == 1
    assert ledger.corrections_total == 0
    # ...and still counts once it settles.
    ledger.observe(at(2), {})
    assert ledger.total(KEY_A) == 13
    assert ledger.raw_total(KEY_A) == 13


def test_unknown_series_is_zero() -> None:
    ledger = PeriodLedger(created=1.0)
    assert ledger.total(("nope",)) == 0.0
    assert ledger.totals() == {}


def test_downward_revision_is_held_back_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = PeriodLedger(created=1.0)
    ledger.observe(at(0), {KEY_A: {at(0): 10, at(1): 10}, KEY_B: {at(0): 1}})
    with caplog.at_level(logging.WARNING, logger="exporter.ledger"):
        assert ledger.observe(at(0), {KEY_A: {at(0): 4}, KEY_B: {at(0): 2}}) == 1
    assert ledger.total(KEY_A) == 20
    assert ledger.raw_total(KEY_A) == 14
    assert ledger.total(KEY_B) == 2
    assert ledger.corrections_total == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert str(KEY_A) in message
    assert "holding back 6.0" in message

    # An unchanged held-back total is not another correction.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="exporter.ledger"):
        assert ledger.observe(at(0), {KEY_A: {at(0): 4}}) == 0
    assert not caplog.records
    # Growth fills the held-back gap first...
    ledger.observe(at(0), {KEY_A: {at(1): 13}})  # raw 17
    assert ledger.total(KEY_A) == 20
    ledger.observe(at(0), {KEY_A: {at(1): 19}})  # raw 23
    assert ledger.total(KEY_A) == 23
    # ...and a second drop is a second correction.
    assert ledger.observe(at(0), {KEY_A: {at(1): 0}}) == 1
    assert ledger.total(KEY_A) == 23
    assert ledger.corrections_total == 2


def test_revision_down_and_up_in_one_poll_is_net() -> None:
    ledger = PeriodLedger(created=1.0)
    ledger.observe(at(0), {KEY_A: {at(0): 10, at(1): 10}})
    assert ledger.observe(at(0), {KEY_A: {at(0): 8, at(1): 15}}) == 0
    assert ledger.total(KEY_A) == 23


def test_invalid_values_are_skipped_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    ledger = PeriodLedger(created=1.0)
    with caplog.at_level(logging.WARNING, logger="exporter.ledger"):
        ledger.observe(
            at(0),
            {
                KEY_A: {
                    at(0): 5,
                    at(1): -1,
                    at(2): math.nan,
                    at(3): math.inf,
                    at(4): "7",  # type: ignore[dict-item]
                    at(5): True,  # type: ignore[dict-item]
                },
                KEY_B: {math.nan: 3, at(0): -math.inf},
            },
        )
    assert ledger.rejected_values_total == 7
    assert ledger.total(KEY_A) == 5
    assert ledger.total(KEY_B) == 0.0
    assert KEY_B not in ledger.totals()  # nothing valid was ever seen for it
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "7 invalid" in warnings[0].getMessage()

    # A rejected value is not a revision: the previous value stays.
    ledger.observe(at(0), {KEY_A: {at(0): math.nan}})
    assert ledger.total(KEY_A) == 5
    assert ledger.rejected_values_total == 8
    json.dumps(ledger.to_dict(), allow_nan=False)


def test_caller_bugs_raise_without_changing_state() -> None:
    ledger = PeriodLedger(created=1.0)
    ledger.observe(at(0), {KEY_A: {at(0): 1}})
    before = ledger.to_dict()
    with pytest.raises(ValueError):
        ledger.observe(math.nan, {KEY_A: {at(0): 2}})
    with pytest.raises(TypeError):
        ledger.observe(at(1), {KEY_A: {at(1): 2}, ["not", "a", "tuple"]: {at(1): 1}})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        ledger.observe(at(1), {("ok", 3): {at(1): 1}})  # type: ignore[dict-item]
    assert ledger.to_dict() == before
    with pytest.raises(ValueError):
        PeriodLedger(created=math.inf)


# ---------------------------------------------------------------------------
# Serialisation
# ---------------------------------------------------------------------------


@st.composite
def ledgers(draw: st.DrawFn) -> PeriodLedger:
    ledger = PeriodLedger(created=draw(st.floats(0, 2e9, allow_nan=False)))
    key_parts = st.text(max_size=8)
    keys = draw(st.lists(st.lists(key_parts, max_size=3).map(tuple), min_size=1, max_size=4, unique=True))
    start = 0
    for _ in range(draw(st.integers(0, 6))):
        start += draw(st.integers(-1, 3))  # sometimes backwards
        values = {
            key: {
                at(start + offset): draw(
                    st.one_of(
                        st.integers(0, 10**6),
                        st.floats(0, 1e9, allow_nan=False),
                        st.sampled_from([-1.0, math.nan]),
                    )
                )
                for offset in draw(st.sets(st.integers(-1, 3), max_size=4))
            }
            for key in keys
        }
        ledger.observe(at(start), values)
    return ledger


@settings(max_examples=150, deadline=None)
@given(ledger=ledgers())
def test_to_dict_from_dict_round_trip(ledger: PeriodLedger) -> None:
    text = json.dumps(ledger.to_dict(), allow_nan=False)
    restored = PeriodLedger.from_dict(json.loads(text))
    assert restored == ledger
    assert restored.totals() == ledger.totals()
    assert restored.to_dict() == ledger.to_dict()
    # Both continue identically.
    poll = {key: {at(50): 1.5} for key in ledger.totals()}
    assert restored.observe(at(50), poll) == ledger.observe(at(50), poll)
    assert restored.totals() == ledger.totals()


def valid_state() -> dict[str, Any]:
    ledger = PeriodLedger(created=1234.5)
    ledger.observe(at(0), {KEY_A: {at(0): 3, at(1): 4}})
    ledger.observe(at(1), {KEY_A: {at(1): 4, at(2): 1}})
    ledger.observe(at(1), {KEY_A: {at(1): 2}})
    return json.loads(json.dumps(ledger.to_dict()))


def test_valid_state_fixture_is_accepted() -> None:
    state = valid_state()
    assert state["series"][0]["exported"] > 0
    ledger = PeriodLedger.from_dict(state)
    assert ledger.total(KEY_A) == 8
    assert ledger.corrections_total == 1


def _set(path: tuple[Any, ...], value: Any):  # noqa: ANN202 - tiny test helper
    def mutate(state: dict[str, Any]) -> None:
        target: Any = state
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return mutate


def _delete(*path: Any):  # noqa: ANN202
    def mutate(state: dict[str, Any]) -> None:
        target: Any = state
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return mutate


MALFORMED = {
    "missing created": (_delete("created"), "missing"),
    "unknown field": (_set(("extra",), 1), "unknown"),
    "created string": (_set(("created",), "yesterday"), "created"),
    "created nan": (_set(("created",), math.nan), "created"),
    "watermark bool": (_set(("watermark",), True), "watermark"),
    "corrections negative": (_set(("corrections_total",), -1), "corrections_total"),
    "corrections float": (_set(("corrections_total",), 1.5), "corrections_total"),
    "rejected string": (_set(("rejected_values_total",), "0"), "rejected_values_total"),
    "series not list": (_set(("series",), {}), "series"),
    "series item not object": (_set(("series", 0), 3), "series[0]"),
    "series missing field": (_delete("series", 0, "settled"), "series[0]"),
    "key not list": (_set(("series", 0, "key"), "a"), "series[0].key"),
    "key has int": (_set(("series", 0, "key"), ["a", 1]), "series[0].key"),
    "settled negative": (_set(("series", 0, "settled"), -3), "series[0].settled"),
    "exported inf": (_set(("series", 0, "exported"), math.inf), "series[0].exported"),
    "exported below raw": (_set(("series", 0, "exported"), 1), "below its raw total"),
    "periods not list": (_set(("series", 0, "periods"), {}), "periods"),
    "period not pair": (_set(("series", 0, "periods", 0), [at(1)]), "periods[0]"),
    "period value negative": (_set(("series", 0, "periods", 0), [at(1), -2]), "periods[0] value"),
    "period before watermark": (_set(("series", 0, "periods", 0), [at(0), 2]), "watermark"),
    "period duplicated": (_set(("series", 0, "periods", 1), [at(1), 1]), "duplicated"),
}


@pytest.mark.parametrize("mutate, fragment", MALFORMED.values(), ids=list(MALFORMED))
def test_from_dict_rejects_malformed(mutate: Any, fragment: str) -> None:
    state = valid_state()
    mutate(state)
    with pytest.raises(LedgerStateError) as excinfo:
        PeriodLedger.from_dict(state)
    assert fragment in str(excinfo.value)


def test_from_dict_rejects_duplicate_series_and_non_objects() -> None:
    state = valid_state()
    state["series"].append(state["series"][0])
    with pytest.raises(LedgerStateError, match="duplicated"):
        PeriodLedger.from_dict(state)
    with pytest.raises(LedgerStateError, match="object"):
        PeriodLedger.from_dict([])  # type: ignore[arg-type]
    assert issubclass(LedgerStateError, ValueError)


# ---------------------------------------------------------------------------
# LedgerStateStore
# ---------------------------------------------------------------------------


def sample_ledger() -> PeriodLedger:
    ledger = PeriodLedger(created=1_700_000_000.25)
    ledger.observe(at(0), {KEY_A: {at(0): 3, at(1): 4.5}, KEY_B: {at(1): 1}})
    ledger.observe(at(1), {KEY_A: {at(1): 2}})
    return ledger


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_store_round_trip_creates_directory(tmp_path: Path) -> None:
    store = LedgerStateStore(tmp_path / "state" / "nested")
    assert store.load("bird", "ws-1") is None
    ledger = sample_ledger()
    store.save("bird", "ws-1", ledger)
    loaded = store.load("bird", "ws-1")
    assert loaded == ledger
    assert loaded is not None and loaded.created == ledger.created
    assert store.load("bird", "ws-2") is None

    document = json.loads(store.path_for("bird", "ws-1").read_text())
    assert document["format"] == LEDGER_FILE_FORMAT
    assert document["version"] == LEDGER_FILE_VERSION
    assert (document["source"], document["target"]) == ("bird", "ws-1")

    # Overwrite with newer state.
    ledger.observe(at(5), {KEY_A: {at(5): 10}})
    store.save("bird", "ws-1", ledger)
    assert store.load("bird", "ws-1") == ledger
    assert files_in(store.directory) == [store.path_for("bird", "ws-1").name]


def test_path_for_is_safe_stable_and_distinct(tmp_path: Path) -> None:
    store = LedgerStateStore(tmp_path)
    awkward = [
        ("bird", "ws/1"),
        ("bird", "ws_1"),
        ("bird", "ws:1"),
        ("../..", "/etc/passwd"),
        ("", ""),
        ("wa flows", "ünïcödé " * 40),
        ("bird__ws", "1"),
        ("bird", "_ws_1"),
    ]
    paths = [store.path_for(s, t) for s, t in awkward]
    assert len(set(paths)) == len(paths)
    for path in paths:
        assert path.parent == tmp_path
        assert not path.name.startswith(".")
        assert len(path.name) < 200
        assert all(c.isalnum() or c in "._-" for c in path.name)
    assert LedgerStateStore(tmp_path).path_for("bird", "ws/1") == paths[0]
    # Round trip through the awkward names as well.
    for source, target in awkward:
        store.save(source, target, sample_ledger())
        assert store.load(source, target) == sample_ledger()


def test_save_leaves_no_temp_files_on_success_or_failure(tmp_path: Path) -> None:
    store = LedgerStateStore(tmp_path)
    store.save("bird", "ws-1", sample_ledger())
    assert files_in(tmp_path) == [store.path_for("bird", "ws-1").name]

    # Make the final rename fail: the target path is a non-empty directory.
    blocked = store.path_for("flux", "t")
    blocked.mkdir()
    (blocked / "keep").write_text("x")
    with pytest.raises(OSError):
        store.save("flux", "t", sample_ledger())
    assert files_in(tmp_path) == sorted([store.path_for("bird", "ws-1").name, blocked.name])

    # A ledger that cannot be serialised fails before any file is created.
    broken = sample_ledger()
    broken.created = math.nan
    with pytest.raises(ValueError):
        store.save("bird", "ws-2", broken)
    assert files_in(tmp_path) == sorted([store.path_for("bird", "ws-1").name, blocked.name])
    assert store.load("bird", "ws-1") == sample_ledger()


def assert_quarantined(
    store: LedgerStateStore,
    source: str,
    target: str,
    caplog: pytest.LogCaptureFixture,
    problem: str,
) -> None:
    path = store.path_for(source, target)
    original = path.read_bytes()
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="exporter.ledger"):
        assert store.load(source, target) is None
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert str(path) in message
    assert problem in message
    assert not path.exists()
    aside = [p for p in store.directory.iterdir() if p.name.startswith(path.name + ".corrupt-")]
    assert len(aside) == 1
    assert aside[0].read_bytes() == original  # kept, not rewritten
    # Once moved aside, the next load is simply "no state".
    caplog.clear()
    assert store.load(source, target) is None
    assert not caplog.records


def test_corrupt_file_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = LedgerStateStore(tmp_path)
    store.save("bird", "ws-1", sample_ledger())
    store.path_for("bird", "ws-1").write_bytes(b"\x00\xff\xfegarbage{{{")
    assert_quarantined(store, "bird", "ws-1", caplog, "not valid JSON")


def test_truncated_json_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = LedgerStateStore(tmp_path)
    store.save("bird", "ws-1", sample_ledger())
    path = store.path_for("bird", "ws-1")
    path.write_bytes(path.read_bytes()[:40])
    assert_quarantined(store, "bird", "ws-1", caplog, "not valid JSON")


def test_foreign_file_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = LedgerStateStore(tmp_path)
    store.save("bird", "ws-OTHER", sample_ledger())
    os.replace(store.path_for("bird", "ws-OTHER"), store.path_for("bird", "ws-1"))
    assert_quarantined(store, "bird", "ws-1", caplog, "belongs to source 'bird' target 'ws-OTHER'")


def test_wrong_version_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = LedgerStateStore(tmp_path)
    store.save("bird", "ws-1", sample_ledger())
    path = store.path_for("bird", "ws-1")
    document = json.loads(path.read_text())
    document["version"] = 2
    path.write_text(json.dumps(document))
    assert_quarantined(store, "bird", "ws-1", caplog, "version is 2")


def test_wrong_format_and_bad_ledger_are_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = LedgerStateStore(tmp_path)
    path = store.path_for("bird", "ws-1")
    path.write_text(json.dumps({"format": "something-else", "version": 1}))
    assert_quarantined(store, "bird", "ws-1", caplog, "format is 'something-else'")

    store.save("bird", "ws-1", sample_ledger())
    document = json.loads(path.read_text())
    document["ledger"]["corrections_total"] = -5
    path.write_text(json.dumps(document))
    # The first quarantined file is still there; this one gets its own name.
    before = {p.name for p in tmp_path.iterdir()}
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="exporter.ledger"):
        assert store.load("bird", "ws-1") is None
    assert "corrections_total" in caplog.records[0].getMessage()
    after = {p.name for p in tmp_path.iterdir()}
    assert len(after) == len(before)  # renamed, nothing deleted
    assert not path.exists()

    path.write_text('{"format": "api-metrics-exporter/ledger", "version": 1, "x": NaN}')
    caplog.clear()
    assert store.load("bird", "ws-1") is None
    assert "NaN" in caplog.records[0].getMessage()


def test_unreadable_state_does_not_crash_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The "directory" is a regular file: every access fails with
    # NotADirectoryError. (chmod 000 is no obstacle for root, so use this.)
    not_a_dir = tmp_path / "state"
    not_a_dir.write_text("I am a file")
    store = LedgerStateStore(not_a_dir)
    with caplog.at_level(logging.ERROR, logger="exporter.ledger"):
        assert store.load("bird", "ws-1") is None
    assert len(caplog.records) == 1
    assert not_a_dir.read_text() == "I am a file"

    # The state file is a directory.
    store = LedgerStateStore(tmp_path / "ok")
    store.path_for("bird", "ws-1").mkdir(parents=True)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="exporter.ledger"):
        assert store.load("bird", "ws-1") is None
    assert len(caplog.records) == 1
    assert store.path_for("bird", "ws-1").is_dir()  # left alone


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_permission_denied_directory_does_not_crash_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = LedgerStateStore(tmp_path / "locked")
    store.save("bird", "ws-1", sample_ledger())
    store.directory.chmod(0)
    try:
        with caplog.at_level(logging.ERROR, logger="exporter.ledger"):
            assert store.load("bird", "ws-1") is None
        assert len(caplog.records) == 1
    finally:
        store.directory.chmod(0o700)
    assert store.load("bird", "ws-1") == sample_ledger()
