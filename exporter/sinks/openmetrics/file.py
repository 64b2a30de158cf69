"""`OpenMetricsFile`: snapshots of a backfill → one OpenMetrics text file with a timestamp on every sample.

What `promtool tsdb create-blocks-from openmetrics` reads: OpenMetrics text
(`# TYPE`, `# UNIT`, `# HELP`, then the family's samples), each family once and
its lines together, each series' points in increasing time, a timestamp (in
seconds) on every sample, and `# EOF` last. Counters are written as
`<name>_total`, histograms as `_bucket{le=…}` per point (with `_count` and
`_sum` when the vendor gives a sum: OpenMetrics parsers want both or neither;
the `+Inf` bucket is the count), summaries as `{quantile=…}` / `_count` / `_sum`;
no `_created` lines (promtool would store them as series of their own).

Memory stays bounded by one snapshot (one target's history): each snapshot's
lines are rendered per family and appended to a spool file next to the output,
with an index of where each family's pieces are. `close()` copies the pieces
family by family into a temporary file, ends it with `# EOF`, fsyncs and
renames it to the output; `abort()` (an interrupted backfill, a failure)
removes both, so no partial file is ever left under the output's name.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import IO

from exporter.model import Change, Family, HistogramValue, Kind, Labels, Sample, Snapshot, SummaryValue, Value
from exporter.sinks.prometheus.blocks import escape_label_value, go_float

CHUNK = 1 << 20


def number(value: float) -> str:
    """OpenMetrics numbers: Go's float format (`NaN`, `+Inf`, `-Inf`, `1e+06`…)."""
    return go_float(value)


def stamp(seconds: float) -> str:
    """A timestamp in seconds, to the millisecond Prometheus keeps."""
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def label_text(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{escape_label_value(value)}"' for name, value in labels) + "}"


def value_lines(family: Family, labels: Labels, value: Value, when: float) -> list[str]:
    """The lines of one point of one series."""
    at = stamp(when)
    name = family.name
    if family.kind is Kind.COUNTER:
        return [f"{name}_total{label_text(labels)} {number(float(value))} {at}"]  # type: ignore[arg-type]
    if family.kind is Kind.GAUGE:
        return [f"{name}{label_text(labels)} {number(float(value))} {at}"]  # type: ignore[arg-type]
    if isinstance(value, HistogramValue):
        lines = [f"{name}_bucket{label_text((*labels, ('le', number(bound))))} {number(count)} {at}"
                 for bound, count in value.buckets]
        if value.sum is not None:  # OpenMetrics parsers want _count and _sum together or neither
            lines.append(f"{name}_count{label_text(labels)} {number(value.count)} {at}")
            lines.append(f"{name}_sum{label_text(labels)} {number(value.sum)} {at}")
        return lines
    assert isinstance(value, SummaryValue)
    lines = [f"{name}{label_text((*labels, ('quantile', number(q))))} {number(v)} {at}" for q, v in value.quantiles]
    if value.count is not None:
        lines.append(f"{name}_count{label_text(labels)} {number(value.count)} {at}")
    if value.sum is not None:
        lines.append(f"{name}_sum{label_text(labels)} {number(value.sum)} {at}")
    return lines


def sample_lines(sample: Sample, default_time: float) -> list[str]:
    """Every point of a sample, oldest first: its history, then its own value."""
    lines: list[str] = []
    for when, value in sample.history:
        lines += value_lines(sample.family, sample.labels, value, when)
    when = sample.timestamp if sample.timestamp is not None else default_time
    return lines + value_lines(sample.family, sample.labels, sample.value, when)


def header(family: Family) -> str:
    lines = [f"# TYPE {family.name} {family.kind.value}"]
    if family.unit and family.name.endswith(f"_{family.unit}"):
        lines.append(f"# UNIT {family.name} {family.unit}")
    if family.help:
        help_text = family.help.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        lines.append(f"# HELP {family.name} {help_text}")
    return "\n".join(lines) + "\n"


class OpenMetricsFile:
    """A sink for `Change.HISTORY` snapshots; `close()` makes the file, `abort()` leaves none."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._spool_path = self.path.with_name(f".{self.path.name}.{os.getpid()}.spool")
        self._spool: IO[bytes] = open(self._spool_path, "w+b")  # noqa: SIM115 - closed in close()/abort()
        self._families: dict[str, Family] = {}
        self._pieces: dict[str, list[tuple[int, int]]] = {}
        self._lock = threading.Lock()
        self.points = 0

    def publish(self, snapshot: Snapshot) -> None:
        if snapshot.change is not Change.HISTORY:
            return
        by_family: dict[str, list[str]] = {}
        for sample in snapshot.samples:
            family = self._families.setdefault(sample.family.name, sample.family)
            if family.kind is not sample.family.kind:
                continue  # one name, two types: the first wins, as on /metrics
            lines = sample_lines(sample, snapshot.taken_at)
            by_family.setdefault(family.name, []).extend(lines)
            self.points += 1 + len(sample.history)
        with self._lock:
            for name, lines in by_family.items():
                data = ("\n".join(lines) + "\n").encode()
                offset = self._spool.seek(0, os.SEEK_END)
                self._spool.write(data)
                self._pieces.setdefault(name, []).append((offset, len(data)))

    def close(self) -> None:
        """Write the file under a temporary name, then rename it to `path`."""
        try:
            with open(self._tmp, "wb") as out:
                for name, pieces in self._pieces.items():
                    out.write(header(self._families[name]).encode())
                    for offset, length in pieces:
                        self._copy(out, offset, length)
                out.write(b"# EOF\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._discard(self._spool_path)

    def abort(self) -> None:
        """Leave nothing behind: no output, no temporary file, no spool."""
        self._discard(self._tmp)
        self._discard(self._spool_path)

    def _copy(self, out: IO[bytes], offset: int, length: int) -> None:
        self._spool.seek(offset)
        while length:
            chunk = self._spool.read(min(CHUNK, length))
            out.write(chunk)
            length -= len(chunk)

    def _discard(self, path: Path) -> None:
        if path == self._spool_path and not self._spool.closed:
            self._spool.close()
        try:
            path.unlink()
        except FileNotFoundError:
            pass
