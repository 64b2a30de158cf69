"""The /metrics body: format and gzip negotiation, and what a scrape costs a client that is not a scraper."""

from __future__ import annotations

import gzip

import pytest
from prometheus_client import CollectorRegistry

from exporter.model import Change, Family, Kind, Sample, Snapshot, TargetKey
from exporter.sinks.prometheus.sink import COMPRESS_FOR_HUMANS, PrometheusSink, accepts_gzip

SCRAPER = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
GAUGE = Family("demo_value", Kind.GAUGE, "A value.")


def sink_with(series: int) -> PrometheusSink:
    sink = PrometheusSink(CollectorRegistry(auto_describe=False))
    samples = tuple(Sample(GAUGE, (("i", f"{i:09d}"), ("pad", "x" * 40)), float(i)) for i in range(series))
    sink.publish(Snapshot(TargetKey("s", "t"), Change.POLLED, 1, (), samples, 0.0, 60.0))
    return sink


@pytest.mark.parametrize(("accept", "openmetrics"), [
    ("application/openmetrics-text;version=1.0.0", True),
    (SCRAPER, True),
    ("application/openmetrics-text;version=1.0.0;q=0,text/plain;version=0.0.4", False),
    ("application/openmetrics-text; q=0", False),
    ("text/plain;version=0.0.4", False),
    ("", False),
])
def test_openmetrics_only_when_asked_and_not_refused(accept: str, openmetrics: bool) -> None:
    _, headers = sink_with(3).body(accept, None)
    assert headers["Content-Type"].startswith("application/openmetrics-text") is openmetrics


@pytest.mark.parametrize(("header", "gzip_ok"), [
    ("gzip", True), ("gzip, deflate, br", True), ("GZIP;q=0.5", True), ("*", True),
    ("gzip;q=0", False), ("gzip;q=0.0, identity", False), ("*;q=0", False), ("identity", False), (None, False),
    ("*, gzip;q=0", False),
])
def test_gzip_only_when_acceptable(header: str | None, gzip_ok: bool) -> None:
    assert accepts_gzip(header) is gzip_ok


def test_gzip_refused_with_q0_is_not_sent() -> None:
    parts, headers = sink_with(3).body(SCRAPER, "gzip;q=0, identity")
    assert "Content-Encoding" not in headers
    assert b"demo_value" in b"".join(parts)


def test_a_scraper_gets_gzip_members_whatever_the_size() -> None:
    parts, headers = sink_with(10).body(SCRAPER, "gzip")
    assert headers["Content-Encoding"] == "gzip"
    assert b"demo_value" in gzip.decompress(b"".join(parts))


def test_small_bodies_are_compressed_for_browsers_big_ones_are_not() -> None:
    small_parts, small = sink_with(10).body("text/html,*/*", "gzip")
    assert small["Content-Encoding"] == "gzip" and len(small_parts) == 1
    assert b"demo_value" in gzip.decompress(small_parts[0])
    big = sink_with(COMPRESS_FOR_HUMANS // 60 + 1)
    parts, headers = big.body("text/html,*/*", "gzip")
    # Compressing 4+ MiB on every request would let any client burn a core:
    # identity is always acceptable, so the body goes out as it is.
    assert "Content-Encoding" not in headers
    assert sum(map(len, parts)) > COMPRESS_FOR_HUMANS


COUNTER = Family("demo_events", Kind.COUNTER, "Events.")


def _publish(sink: PrometheusSink, version: int, samples: tuple[Sample, ...], target: str = "t") -> None:
    sink.publish(Snapshot(TargetKey("s", target), Change.POLLED, version, (), samples, 0.0, 60.0))


def _family_body(sink: PrometheusSink, name: str, openmetrics: bool = False) -> bytes:
    [body] = [part for part in sink.store.parts(openmetrics=openmetrics, compressed=False) if name.encode() in part]
    return body


def test_an_unchanged_family_keeps_its_joined_body_and_a_changed_one_is_joined_again() -> None:
    sink = PrometheusSink(CollectorRegistry(auto_describe=False))
    steady = tuple(Sample(GAUGE, (("i", str(i)),), 1.0) for i in range(3))
    _publish(sink, 1, (*steady, Sample(COUNTER, (), 5.0)))
    _publish(sink, 1, (Sample(GAUGE, (("i", "other"),), 2.0),), target="u")
    before_gauge, before_counter = _family_body(sink, "demo_value"), _family_body(sink, "demo_events")
    _publish(sink, 2, (*steady, Sample(COUNTER, (), 6.0)))  # the gauges as they were, the counter moved
    assert _family_body(sink, "demo_value") is before_gauge  # not joined again
    assert _family_body(sink, "demo_events") is not before_counter
    assert b"demo_events_total 6.0" in _family_body(sink, "demo_events")
    _publish(sink, 3, (*steady[:2], Sample(GAUGE, (("i", "2"),), 7.0), Sample(COUNTER, (), 6.0)))
    assert b'demo_value{i="2"} 7.0' in _family_body(sink, "demo_value")


def test_a_counter_that_did_not_move_keeps_its_joined_bodies_in_both_formats() -> None:
    """Most of a target's counters (its error counts, a vendor's closed
    periods) are as they were at the last poll: nothing is joined again."""
    sink = PrometheusSink(CollectorRegistry(auto_describe=False))
    _publish(sink, 1, (Sample(COUNTER, (), 5.0, created=100.0),))
    text, openmetrics = _family_body(sink, "demo_events"), _family_body(sink, "demo_events", openmetrics=True)
    _publish(sink, 2, (Sample(COUNTER, (), 5.0, created=100.0),))  # after its OpenMetrics form was rendered
    assert _family_body(sink, "demo_events") is text
    assert _family_body(sink, "demo_events", openmetrics=True) is openmetrics
    assert b"demo_events_created 100.0" in openmetrics
    _publish(sink, 3, (Sample(COUNTER, (), 6.0, created=100.0),))
    assert b"demo_events_total 6.0" in _family_body(sink, "demo_events", openmetrics=True)


def test_a_counter_reset_to_the_same_value_still_changes_its_created_line() -> None:
    """The text lines are equal, the OpenMetrics `_created` line is not: the
    block is rendered again."""
    sink = PrometheusSink(CollectorRegistry(auto_describe=False))
    _publish(sink, 1, (Sample(COUNTER, (), 0.0, created=100.0),))
    assert b"demo_events_created 100.0" in _family_body(sink, "demo_events", openmetrics=True)
    _publish(sink, 2, (Sample(COUNTER, (), 0.0, created=200.0),))
    assert b"demo_events_created 200.0" in _family_body(sink, "demo_events", openmetrics=True)
