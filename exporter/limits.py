"""Cardinality limits: what keeps one target, and all of them, bounded.

Vendor data decides our label values (k6 URLs, Flux tags, WhatsApp error
types), so a target may add at most `max_series` series (per source), and all
targets together at most `[limits] max_series`. Past a cap, series the target
already had keep updating and new ones are dropped and counted. Label values
longer than `[limits] max_label_bytes` are cut, with a marker, and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.model import Sample, SeriesKey, TargetKey

TRUNCATION_MARKER = "…[truncated]"


def truncate_labels(samples: list[Sample], max_bytes: int) -> tuple[list[Sample], int]:
    """Samples with every over-long label value cut to `max_bytes` (marker
    included, never splitting a UTF-8 character), and how many values were cut."""
    cut = 0
    out = []
    for sample in samples:
        if all(len(value) * 4 <= max_bytes or len(value.encode()) <= max_bytes for _, value in sample.labels):
            out.append(sample)
            continue
        labels: list[tuple[str, str]] = []
        for name, value in sample.labels:
            raw = value.encode()
            if len(raw) > max_bytes:
                keep = max_bytes - len(TRUNCATION_MARKER.encode())
                value = raw[:keep].decode("utf-8", "ignore") + TRUNCATION_MARKER
                cut += 1
            labels.append((name, value))
        out.append(Sample(sample.family, tuple(labels), sample.value, sample.timestamp, sample.created,
                          sample.history))
    return out, cut


@dataclass
class SeriesCap:
    """Which series each target may export, under a per-target and a global cap."""

    global_cap: int
    admitted: dict[TargetKey, set[SeriesKey]] = field(default_factory=dict)
    # Series admitted over all targets: kept as a running sum, so that a
    # poll's admission does not walk every other target.
    total: int = 0

    def admit(self, target: TargetKey, samples: tuple[Sample, ...], cap: int) -> tuple[tuple[Sample, ...], int]:
        """The samples this target may export now, and how many were dropped.
        Series it exported before come first, so they keep updating."""
        before = self.admitted.get(target, set())
        others = self.total - len(before)
        room = max(0, min(cap, self.global_cap - others))
        keys = [(s.family.name, s.labels) for s in samples]
        known = [i for i, k in enumerate(keys) if k in before]
        new = [i for i, k in enumerate(keys) if k not in before]
        chosen = set(known[:room])
        chosen.update(new[: max(0, room - len(chosen))])
        kept = tuple(s for i, s in enumerate(samples) if i in chosen)
        self.admitted[target] = {keys[i] for i in chosen}
        self.total = others + len(self.admitted[target])
        return kept, len(samples) - len(kept)

    def forget(self, target: TargetKey) -> None:
        self.total -= len(self.admitted.pop(target, ()))
