"""Pre-rendered exposition blocks: render at poll time, join at scrape time.

The data only changes when a poll finishes, yet every scrape (two Prometheus
replicas, humans) would otherwise re-render every series. So each target's
samples are rendered once per poll into one `Block` per metric family: the
text-format lines, and a gzip member of them. OpenMetrics lines are rendered
on the first OpenMetrics scrape and cached in the block (for gauges they are
the text lines themselves). A scrape joins headers and blocks; a gzip scrape
concatenates gzip members, which RFC 1952 makes one valid gzip stream.

Output is byte-for-byte what prometheus_client's `generate_latest` (text) and
`openmetrics.exposition.generate_latest` produce for the same families, labels
sorted by name, in the order samples are given (tests/sinks/prometheus/test_blocks.py
checks this property). Vendor timestamps are not written: Prometheus rejects
samples older than its head block.
"""

from __future__ import annotations

import gzip
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.utils import floatToGoString

from exporter.model import Family, HistogramValue, Kind, Sample, SummaryValue

GZIP_LEVEL = 3  # 1-6: level 3 is ~2x faster than 6 and a few % larger on exposition text


def go_float(value: float) -> str:
    """prometheus_client's `floatToGoString`, with the common case first: a
    finite float whose `repr` has at most six digits before the point is
    written as `repr` writes it (the property test compares whole outputs)."""
    text = repr(float(value))
    if text.find(".") > 6 or text[-1] in "fn":  # Go's exponent form, inf, nan
        return str(floatToGoString(value))  # type: ignore[no-untyped-call]
    return text


def escape_label_value(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def _help_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _help_openmetrics(text: str) -> str:
    return _help_text(text).replace('"', '\\"')


def label_string(pairs: Sequence[tuple[str, str]]) -> str:
    """`{a="1",b="2"}` with names sorted, as prometheus_client writes them."""
    if not pairs:
        return ""
    return "{" + ",".join([f'{k}="{escape_label_value(v)}"' for k, v in sorted(pairs)]) + "}"


def header_text(family: Family) -> bytes:
    name = family.exposed_name
    return f"# HELP {name} {_help_text(family.help)}\n# TYPE {name} {family.kind.value}\n".encode()


def header_openmetrics(family: Family) -> bytes:
    text = f"# HELP {family.name} {_help_openmetrics(family.help)}\n# TYPE {family.name} {family.kind.value}\n"
    if family.unit:
        text += f"# UNIT {family.name} {family.unit}\n"
    return text.encode()


def gzip_member(data: bytes) -> bytes:
    # mtime=0: identical input gives identical bytes, whatever the time.
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


def sample_lines(samples: list[Sample], openmetrics: bool) -> str:
    """The lines of one family's samples (no header)."""
    out: list[str] = []
    append = out.append
    for sample in samples:
        name = sample.family.name
        kind = sample.family.kind
        value = sample.value
        if kind is Kind.GAUGE:
            append(f"{name}{label_string(sample.labels)} {go_float(value)}\n")  # type: ignore[arg-type]
            continue
        labels = list(sample.labels)
        plain = label_string(labels)
        if kind is Kind.COUNTER:
            append(f"{name}_total{plain} {go_float(value)}\n")  # type: ignore[arg-type]
        elif kind is Kind.HISTOGRAM:
            assert isinstance(value, HistogramValue)
            for bound, count in value.buckets:
                append(f"{name}_bucket{label_string([*labels, ('le', go_float(bound))])} {go_float(count)}\n")
            # OpenMetrics allows `_count` only beside `_sum`; the +Inf bucket
            # holds the same value.
            if value.sum is not None or not openmetrics:
                append(f"{name}_count{plain} {go_float(value.count)}\n")
            if value.sum is not None:
                append(f"{name}_sum{plain} {go_float(value.sum)}\n")
        else:
            assert isinstance(value, SummaryValue)
            for quantile, number in value.quantiles:
                append(f"{name}{label_string([*labels, ('quantile', go_float(quantile))])} {go_float(number)}\n")
            if value.count is not None:
                append(f"{name}_count{plain} {go_float(value.count)}\n")
            if value.sum is not None:
                append(f"{name}_sum{plain} {go_float(value.sum)}\n")
        if openmetrics and sample.created is not None:
            append(f"{name}_created{plain} {go_float(sample.created)}\n")
    return "".join(out)


# Renders the OpenMetrics form of any block once, however many scrapes ask
# at the same time (one lock for all: a lock per block was an object the
# cyclic garbage collector walked, 13 a target).
_OPENMETRICS_LOCK = threading.Lock()

# A sample kept for the lazy OpenMetrics rendering, as plain tuples of
# strings and numbers: (labels, value, created), a histogram's value as
# ("h", buckets, sum), a summary's as ("s", quantiles, count, sum). The
# cyclic garbage collector stops tracking such tuples, where it walked
# every kept `Sample` on every full collection (24 a target: with 10,000
# targets, pauses of ~0.75 s; benchmarks/scale.py).
Kept = tuple[tuple[tuple[str, str], ...], object, float | None]


def _keep(sample: Sample) -> Kept:
    value: object = sample.value
    if isinstance(value, HistogramValue):
        value = ("h", value.buckets, value.sum)
    elif isinstance(value, SummaryValue):
        value = ("s", value.quantiles, value.count, value.sum)
    return (sample.labels, value, sample.created)


def _restore(family: Family, kept: Kept) -> Sample:
    labels, value, created = kept
    if isinstance(value, tuple):
        value = HistogramValue(value[1], value[2]) if value[0] == "h" else SummaryValue(value[1], value[2], value[3])
    assert isinstance(value, float | int | HistogramValue | SummaryValue)
    return Sample(family, labels, value, created=created)


@dataclass(eq=False, slots=True)
class Block:
    """One family's lines from one target, in both formats and gzip."""

    family: Family
    series: int
    text: bytes
    text_gzip: bytes
    # Kept only where OpenMetrics differs from text (see _differs) and
    # until the OpenMetrics form has been rendered once.
    _samples: tuple[Kept, ...] | None = field(default=None, repr=False)
    # What the lines were rendered from, compared at the next poll before
    # rendering anything (render_blocks). A gauge or counter family: each
    # sample's labels, value and `_created` time (`_signature`). A histogram
    # or summary family: its `_created` times only, which with the family
    # and the text make the OpenMetrics lines. Tuples of strings and numbers,
    # which the cyclic collector does not track.
    signature: tuple[object, ...] = field(default=(), repr=False)
    _openmetrics: bytes | None = field(default=None, repr=False)
    _openmetrics_gzip: bytes | None = field(default=None, repr=False)

    def openmetrics(self) -> bytes:
        if self._openmetrics is None:
            self._render_openmetrics()
        assert self._openmetrics is not None
        return self._openmetrics

    def openmetrics_gzip(self) -> bytes:
        if self._openmetrics_gzip is None:
            self._render_openmetrics()
        assert self._openmetrics_gzip is not None
        return self._openmetrics_gzip

    def _render_openmetrics(self) -> None:
        with _OPENMETRICS_LOCK:  # two concurrent scrapes render it once
            if self._openmetrics is not None:
                return
            if self._samples is None:
                self._openmetrics_gzip = self.text_gzip
                self._openmetrics = self.text
                return
            samples = [_restore(self.family, kept) for kept in self._samples]
            data = sample_lines(samples, openmetrics=True).encode()
            self._openmetrics_gzip = gzip_member(data)
            self._openmetrics = data
            self._samples = None


def render_blocks(samples: tuple[Sample, ...] | list[Sample],
                  previous: Mapping[str, Block] | None = None) -> list[Block]:
    """Group a target's samples by family (first appearance order) and render.

    A family whose lines would be those of the target's `previous` block keeps
    that block: no gzip member is made, and the store sees the same object, so
    the family's joined body stays cached. In a steady state most families of
    a target do not change from one poll to the next (its error counts,
    overruns, expiries, series count, closed vendor periods), and with
    thousands of targets polled every minute a family changed by any of them
    would otherwise be joined again at every scrape. Counters count too: a
    counter that did not move keeps its block, `_created` line included.

    A gauge or counter family is compared by its samples (`_signature`)
    before its lines are rendered: at 10,000 targets, rendering the lines of
    unchanged families only to compare them was 13% of the exporter's CPU.
    Histograms and summaries (a target's poll durations: they change at
    every poll) are rendered and compared by their lines."""
    groups: dict[str, list[Sample]] = {}
    for sample in samples:
        groups.setdefault(sample.family.name, []).append(sample)
    blocks = []
    for name, group in groups.items():
        family = group[0].family
        old = previous.get(name) if previous else None
        by_samples = family.kind is Kind.GAUGE or family.kind is Kind.COUNTER
        signature = _signature(group) if by_samples else tuple([sample.created for sample in group])
        if by_samples and old is not None and old.signature == signature and old.family == family:
            # This poll's labels from now on: the series cap holds them
            # (limits.SeriesCap), so the old ones can go.
            old.signature = signature
            blocks.append(old)
            continue
        text = sample_lines(group, openmetrics=False).encode()
        # A histogram or summary: the family, the text lines and the
        # `_created` times determine the OpenMetrics lines too (the other
        # difference, a `_count` without `_sum`, shows in the text).
        if not by_samples and old is not None and old.text == text and old.signature == signature \
                and old.family == family:
            blocks.append(old)
            continue
        kept = tuple(_keep(sample) for sample in group) if _differs(group) else None
        blocks.append(Block(family, len(group), text, gzip_member(text), kept, signature=signature))
    return blocks


def _signature(group: list[Sample]) -> tuple[object, ...]:
    """A gauge or counter family's samples as one flat tuple of labels, value
    and `_created` time each: equal tuples render to equal lines in both
    formats. Equal numbers render alike (an int as the float it equals), but
    for 0.0 and -0.0 ("0.0", "-0.0"), so a zero stands as its sign; a NaN,
    unequal to itself, stands as "NaN" (its line). Unequal tuples may still
    render alike (labels in another order): those families are rendered
    again, never wrong."""
    return tuple([part for sample in group
                  for part in (sample.labels,
                               sample.value if sample.value == sample.value and sample.value else _odd(sample.value),
                               sample.created or _odd(sample.created))])


def _odd(number: object) -> object:
    """A zero, NaN or None as what sets its line apart."""
    if number is None:
        return None
    if number != number:
        return "NaN"
    return "-0" if math.copysign(1.0, number) < 0 else "+0"  # type: ignore[arg-type]


def _differs(group: list[Sample]) -> bool:
    """Whether a family's OpenMetrics lines differ from its text lines: a
    `_created` line, or a histogram without `_sum` (so without `_count`)."""
    kind = group[0].family.kind
    if kind is Kind.GAUGE:
        return False
    if any(s.created is not None for s in group):
        return True
    return kind is Kind.HISTOGRAM and any(getattr(s.value, "sum", 0) is None for s in group)


EOF_LINE = b"# EOF\n"
EOF_MEMBER = gzip_member(EOF_LINE)
