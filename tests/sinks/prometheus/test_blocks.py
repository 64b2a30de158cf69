"""The pre-rendered exposition is byte-for-byte prometheus_client's own rendering.

For random families (every kind, hostile help texts), labels (quotes,
backslashes, newlines, unicode) and values (NaN, ±Inf), the store's joined
blocks equal what prometheus_client's `generate_latest` writes for the same
metrics — text 0.0.4 without `_created`, OpenMetrics with it — and the gzip
parts decompress to the same bytes.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest as text_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter.model import Family, HistogramValue, Kind, Sample, SummaryValue
from exporter.sinks.prometheus.blocks import Block, go_float, render_blocks
from exporter.sinks.prometheus.store import Store

NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True).filter(lambda n: not n.endswith("_") and "__" not in n)
LABEL_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda n: n not in ("le", "quantile") and not n.startswith("__"))
HOSTILE = st.text(alphabet=st.sampled_from(list('ab"\\\n{}=,ü路 \t#') + ["\u2028"]), max_size=12)
VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**12, 10**12).map(float))
COUNTS = st.floats(min_value=0, max_value=1e12, allow_nan=False)


@st.composite
def families(draw: st.DrawFn) -> list[list[Sample]]:
    names = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    out = []
    for name in names:
        kind = draw(st.sampled_from(list(Kind)))
        unit = draw(st.sampled_from(["", "seconds", "bytes"]))
        family = Family(f"{name}_{unit}" if unit else name, kind, draw(HOSTILE), unit)
        label_names = draw(st.lists(LABEL_NAMES, max_size=3, unique=True))
        label_sets = draw(st.lists(st.tuples(*[HOSTILE] * len(label_names)), min_size=1, max_size=4, unique=True))
        samples = []
        for values in label_sets:
            labels = tuple(zip(label_names, values, strict=True))
            created = draw(st.one_of(st.none(), st.floats(min_value=1e9, max_value=2e9)))
            samples.append(Sample(family, labels, draw(value_for(kind)), created=created if kind is not Kind.GAUGE else None))
        out.append(samples)
    return out


def value_for(kind: Kind) -> st.SearchStrategy[object]:
    if kind is Kind.HISTOGRAM:
        return st.lists(COUNTS, min_size=1, max_size=4).map(sorted).flatmap(
            lambda counts: st.builds(
                HistogramValue,
                st.just(tuple(zip([*[float(i + 1) for i in range(len(counts) - 1)], math.inf], counts, strict=True))),
                st.one_of(st.none(), COUNTS)))
    if kind is Kind.SUMMARY:
        return st.builds(SummaryValue, st.just(((0.5, 1.5), (0.99, 7.0))), st.one_of(st.none(), COUNTS),
                         st.one_of(st.none(), COUNTS))
    if kind is Kind.COUNTER:
        return COUNTS
    return VALUES


class Reference(Collector):
    """The same data as prometheus_client Metric objects, built independently."""

    def __init__(self, groups: list[list[Sample]], with_created: bool) -> None:
        self.groups = groups
        self.with_created = with_created

    def collect(self) -> Iterator[Metric]:
        for group in sorted(self.groups, key=lambda g: g[0].family.name):
            family = group[0].family
            metric = Metric(family.name, family.help, family.kind.value, family.unit)
            for s in group:
                labels = dict(s.labels)
                if family.kind is Kind.GAUGE:
                    metric.add_sample(family.name, labels, s.value)
                elif family.kind is Kind.COUNTER:
                    metric.add_sample(family.name + "_total", labels, s.value)
                elif family.kind is Kind.HISTOGRAM:
                    for bound, count in s.value.buckets:
                        le = "+Inf" if math.isinf(bound) else repr(bound)
                        metric.add_sample(family.name + "_bucket", {**labels, "le": le}, count)
                    if s.value.sum is not None or not self.with_created:  # OpenMetrics: _count only with _sum
                        metric.add_sample(family.name + "_count", labels, s.value.buckets[-1][1])
                    if s.value.sum is not None:
                        metric.add_sample(family.name + "_sum", labels, s.value.sum)
                else:
                    for q, v in s.value.quantiles:
                        metric.add_sample(family.name, {**labels, "quantile": repr(q)}, v)
                    if s.value.count is not None:
                        metric.add_sample(family.name + "_count", labels, s.value.count)
                    if s.value.sum is not None:
                        metric.add_sample(family.name + "_sum", labels, s.value.sum)
                if self.with_created and s.created is not None:
                    metric.add_sample(family.name + "_created", labels, s.created)
            yield metric


def reference(groups: list[list[Sample]], openmetrics: bool) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Reference(groups, with_created=openmetrics))
    return openmetrics_latest(registry) if openmetrics else text_latest(registry)


def stored(groups: list[list[Sample]]) -> Store:
    store = Store()
    samples = [s for group in groups for s in group]
    store.put(("src", "t1", 0), tuple(render_blocks(samples)))
    return store


@settings(max_examples=300, deadline=None)
@given(families())
def test_text_equals_prometheus_client(groups: list[list[Sample]]) -> None:
    store = stored(groups)
    assert b"".join(store.parts(openmetrics=False, compressed=False)) == reference(groups, openmetrics=False)
    assert gzip.decompress(b"".join(store.parts(openmetrics=False, compressed=True))) == reference(groups, False)


@settings(max_examples=300, deadline=None)
@given(families())
def test_openmetrics_equals_prometheus_client(groups: list[list[Sample]]) -> None:
    store = stored(groups)
    body = b"".join(store.parts(openmetrics=True, compressed=False)) + b"# EOF\n"
    assert body == reference(groups, openmetrics=True)
    gz = b"".join(store.parts(openmetrics=True, compressed=True))
    assert gzip.decompress(gz) + b"# EOF\n" == reference(groups, openmetrics=True)


def whole_counts(groups: list[list[Sample]]) -> list[list[Sample]]:
    """The same samples with whole histogram bucket counts and summary
    counts, as OpenMetrics requires of them (and as vendors send them)."""
    out = []
    for group in groups:
        samples = []
        for s in group:
            value = s.value
            if isinstance(value, HistogramValue):
                value = HistogramValue(tuple((b, float(math.floor(c))) for b, c in value.buckets), value.sum)
            elif isinstance(value, SummaryValue) and value.count is not None:
                value = SummaryValue(value.quantiles, float(math.floor(value.count)), value.sum)
            samples.append(replace(s, value=value))
        out.append(samples)
    return out


@settings(max_examples=300, deadline=None)
@given(families())
def test_openmetrics_parses_with_the_strict_parser(groups: list[list[Sample]]) -> None:
    """prometheus_client's OpenMetrics parser checks what its writer does not:
    e.g. a histogram's `_count` only beside its `_sum`."""
    groups = whole_counts(groups)
    body = b"".join(stored(groups).parts(openmetrics=True, compressed=False)) + b"# EOF\n"
    parsed = {f.name: f.type for f in openmetrics_families(body.decode())}
    assert parsed == {g[0].family.name: g[0].family.kind.value for g in groups}


def test_one_family_from_many_targets_has_one_header() -> None:
    family = Family("shared_gauge", Kind.GAUGE, "Shared.")
    store = Store()
    for target in ("b", "a", "c"):
        store.put(("src", target, 0), tuple(render_blocks([Sample(family, (("t", target),), 1.0)])))
    text = b"".join(store.parts(openmetrics=False, compressed=False)).decode()
    assert text.count("# TYPE shared_gauge gauge") == 1
    assert [line.split('"')[1] for line in text.splitlines() if not line.startswith("#")] == ["a", "b", "c"]


def test_target_replaced_and_dropped() -> None:
    family = Family("g", Kind.GAUGE, "G.")
    other = Family("h", Kind.GAUGE, "H.")
    store = Store()
    store.put(("s", "a", 0), tuple(render_blocks([Sample(family, (), 1.0), Sample(other, (), 2.0)])))
    store.put(("s", "a", 0), tuple(render_blocks([Sample(family, (), 3.0)])))
    assert b"".join(store.parts(False, False)) == b"# HELP g G.\n# TYPE g gauge\ng 3.0\n"
    store.drop(("s", "a", 0))
    assert store.parts(False, False) == []


def test_conflicting_family_type_is_refused() -> None:
    store = Store()
    assert store.put(("s", "a", 0), tuple(render_blocks([Sample(Family("x", Kind.GAUGE, ""), (), 1.0)]))) == []
    refused = store.put(("s", "b", 0), tuple(render_blocks([Sample(Family("x", Kind.COUNTER, ""), (), 1.0)])))
    assert [f.kind for f in refused] == [Kind.COUNTER]


OPERATIONS = st.lists(st.tuples(st.sampled_from(["put", "drop"]), st.sampled_from(["a", "b", "c", "d"]),
                                st.sets(st.sampled_from(["f", "g", "h", "k"]), max_size=4),
                                st.sampled_from([0.0, -0.0, 1.0, 1, 2.5]),
                                st.sampled_from([None, 10.0, 20.0]), st.sampled_from(["x", "y"])), max_size=12)
# "f" a gauge; "g" and "h" counters, whose `_created` may change while their
# value does not; "k" a histogram. The label "l" may change while nothing else does.
KINDS = {"f": Kind.GAUGE, "g": Kind.COUNTER, "h": Kind.COUNTER, "k": Kind.HISTOGRAM}


@settings(max_examples=300, deadline=None)
@given(OPERATIONS)
def test_any_sequence_of_polls_and_removals_serves_the_final_state_in_target_order(
    operations: list[tuple[str, str, set[str], float, float | None, str]],
) -> None:
    def sample(name: str, target: str, value: float, created: float | None, label: str) -> Sample:
        kind = KINDS[name]
        number: float | HistogramValue = value
        if kind is Kind.HISTOGRAM:
            number = HistogramValue(((1.0, abs(value)), (math.inf, abs(value))), None if created is None else value)
        return Sample(Family(name, kind, name.upper()), (("t", target), ("l", label)), number,
                      created=None if kind is Kind.GAUGE else created)

    def blocks(target: str, names: set[str], value: float, created: float | None, label: str,
               store: Store | None = None) -> tuple[Block, ...]:
        samples = [sample(name, target, value, created, label) for name in sorted(names)]
        # Against the live store: a family whose lines did not change keeps its block.
        return tuple(render_blocks(samples, store.current(("s", target, 0)) if store else None))

    live, final = Store(), {}
    for operation, target, names, value, created, label in operations:
        if operation == "put":
            live.put(("s", target, 0), blocks(target, names, value, created, label, live))
            final[target] = (names, value, created, label)
        else:
            live.drop(("s", target, 0))
            final.pop(target, None)
        for openmetrics in (False, True):  # read between changes, so cached bodies must be invalidated
            live.parts(openmetrics, False)
            live.parts(openmetrics, True)
    fresh = Store()
    for target in sorted(final):
        fresh.put(("s", target, 0), blocks(target, *final[target]))
    for openmetrics in (False, True):
        assert b"".join(live.parts(openmetrics, False)) == b"".join(fresh.parts(openmetrics, False))
        assert gzip.decompress(b"".join(live.parts(openmetrics, True)) or gzip.compress(b"")) == \
            b"".join(fresh.parts(openmetrics, False))


@settings(max_examples=2000)
@given(st.one_of(st.floats(), st.integers(-10**20, 10**20), st.sampled_from([1e6, 9999999.0, 1234567.5, 1e16, 0.0, -0.0])))
def test_go_float_writes_what_prometheus_client_writes(value: float) -> None:
    assert go_float(value) == floatToGoString(value)


GAUGE, COUNTER = Family("g", Kind.GAUGE, "G"), Family("c", Kind.COUNTER, "C")


@pytest.mark.parametrize(("before", "after"), [
    (Sample(GAUGE, (("a", "1"),), 1.0), Sample(GAUGE, (("a", "2"),), 1.0)),  # a label value
    (Sample(GAUGE, (("a", "1"),), 1.0), Sample(GAUGE, (("b", "1"),), 1.0)),  # a label name
    (Sample(GAUGE, (), 0.0), Sample(GAUGE, (), -0.0)),  # equal numbers, "0.0" and "-0.0"
    (Sample(COUNTER, (), 0.0, created=-0.0), Sample(COUNTER, (), 0.0, created=0.0)),
    (Sample(COUNTER, (), 3.0, created=1.0), Sample(COUNTER, (), 3.0, created=None)),
    (Sample(GAUGE, (), 1.0), Sample(Family("g", Kind.GAUGE, "other help"), (), 1.0)),
])
def test_a_family_is_rendered_again_when_anything_in_its_lines_changed(before: Sample, after: Sample) -> None:
    old = render_blocks([before])
    new = render_blocks([after], {before.family.name: old[0]})
    assert new[0] is not old[0]
    assert new[0].text == render_blocks([after])[0].text
    assert new[0].openmetrics() == render_blocks([after])[0].openmetrics()


@pytest.mark.parametrize("value", [math.nan, 0.0, -0.0, 0, 7.5])
def test_a_gauge_whose_lines_did_not_change_keeps_its_block(value: float) -> None:
    old = render_blocks([Sample(GAUGE, (("a", "x"),), value)])
    new = render_blocks([Sample(GAUGE, (("a", "x"),), value * 1.0)], {"g": old[0]})  # a NaN: a new object
    assert new[0] is old[0]


def test_an_unchanged_family_keeps_its_block_and_holds_the_latest_labels() -> None:
    """Equal numbers render alike (1 and 1.0); the kept block refers to the
    new poll's labels, which the series cap holds, not to the old ones."""
    old = render_blocks([Sample(COUNTER, (("a", "x"),), 1, created=5.0)])
    labels = (("a", "".join(["x"])),)
    new = render_blocks([Sample(COUNTER, labels, 1.0, created=5.0)], {"c": old[0]})
    assert new[0] is old[0]
    assert new[0].signature[0] is labels
