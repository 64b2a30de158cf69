"""The fast OTLP encoder against the SDK's, its reference: parse both, compare equal."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from exporter.model import Family, Kind, Sample
from exporter.sinks.otlp.points import build_resource, encode, new_points, scope
from exporter.sinks.otlp.wire import WireEncoder, varint
from tests.sinks.prometheus.test_blocks import HOSTILE, families

RESOURCE = build_resource({"deployment.environment": "test", "team": "ü路"}, {}, "host:9687", "1.2.3")
SCOPE = scope("1.2.3")
TIMES = st.one_of(st.none(), st.floats(min_value=1e9, max_value=2e9))


def reference(points: list) -> ExportMetricsServiceRequest:  # type: ignore[type-arg]
    return encode_metrics(encode(points, RESOURCE, SCOPE))


def ours(points: list) -> ExportMetricsServiceRequest:  # type: ignore[type-arg]
    return ExportMetricsServiceRequest.FromString(WireEncoder(RESOURCE, SCOPE).encode(points))


@settings(max_examples=300, deadline=None)
@given(families(), st.data())
def test_the_wire_encoder_sends_what_the_sdk_would_send(groups: list[list[Sample]], data: st.DataObject) -> None:
    samples = [
        dataclasses.replace(sample, timestamp=data.draw(TIMES),
                            history=tuple((when, sample.value) for when in data.draw(
                                st.lists(st.floats(1e9, 2e9), max_size=2))))
        for group in groups for sample in group
    ]
    points, _ = new_points(samples, data.draw(st.floats(1e9, 2e9)), 1.5e9, {})
    assert ours(points) == reference(points)


def test_an_empty_batch_and_a_zero_valued_point_match_too() -> None:
    family = Family("zero", Kind.GAUGE, "")
    points, _ = new_points([Sample(family, (("k", ""),), 0.0)], 1.7e9, 1.7e9, {})
    assert ours([]) == reference([])
    assert ours(points) == reference(points)
    assert ours(points).resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points[0].HasField("as_double")


@given(st.lists(HOSTILE, min_size=1, max_size=3))
def test_repeated_label_sets_reuse_their_encoded_attributes(values: list[str]) -> None:
    family = Family("cached", Kind.COUNTER, "help")
    samples = [Sample(family, (("v", value),), 1.0, created=1.6e9) for value in values]
    first, _ = new_points(samples, 1.7e9, 1.6e9, {})
    again, _ = new_points(samples, 1.7e9 + 60, 1.6e9, {})
    encoder = WireEncoder(RESOURCE, SCOPE)
    encoder.encode(first)
    assert ExportMetricsServiceRequest.FromString(encoder.encode(again)) == reference(again)


def test_varint() -> None:
    assert [varint(n) for n in (0, 1, 127, 128, 300, 2**63)] == [
        b"\x00", b"\x01", b"\x7f", b"\x80\x01", b"\xac\x02", b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01"]
