"""Cardinality limits and sharding: what keeps one target, or one pod, bounded.

Vendor data decides our label values (k6 URLs, Flux tags, WhatsApp error
types), so a target may add at most `max_series` series (per source), and all
targets together at most `[limits] max_series`. Past a cap, series the target
already had keep updating and new ones are dropped and counted. Label values
longer than `[limits] max_label_bytes` are cut, with a marker, and counted.

Sharding splits targets over N replicas by rendezvous hashing of
`(source name, target id)`: every target has exactly one owner, and growing
from N to N+1 shards moves only the targets the new shard wins (about 1/(N+1)).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field

from pydantic import Field, model_validator

from exporter.configtypes import StrictModel
from exporter.model import Labels, Sample

TRUNCATION_MARKER = "…[truncated]"


class LimitsConfig(StrictModel):
    """`[limits]`: caps over every target together."""

    max_series: int = Field(default=100_000, ge=1)
    max_label_bytes: int = Field(default=1024, ge=16)


class ShardingConfig(StrictModel):
    """`[sharding]`: this replica is shard `index` of `total`.

    `index_from_hostname = true` takes the index from the trailing number of
    the host name (a StatefulSet pod `api-metrics-exporter-2` is shard 2)."""

    total: int = Field(default=1, ge=1)
    index: int = Field(default=0, ge=0)
    index_from_hostname: bool = False

    @model_validator(mode="after")
    def _index_in_range(self) -> ShardingConfig:
        if not self.index_from_hostname and self.index >= self.total:
            raise ValueError(f"index {self.index} must be below total {self.total}")
        return self

    def resolved_index(self, hostname: str | None = None) -> int:
        if not self.index_from_hostname:
            return self.index
        name = hostname if hostname is not None else os.environ.get("HOSTNAME") or os.uname().nodename
        match = re.search(r"-(\d+)$", name)
        if match is None:
            raise ValueError(f"sharding.index_from_hostname: host name {name!r} does not end in -<number>")
        index = int(match.group(1))
        if index >= self.total:
            raise ValueError(f"sharding: host name {name!r} gives index {index}, not below total {self.total}")
        return index


def shard_of(source: str, target: str, total: int) -> int:
    """Rendezvous (highest random weight) hashing: stable, and minimal moves."""
    if total == 1:
        return 0
    key = f"{source}\x00{target}".encode()
    weights = [hashlib.blake2b(key + shard.to_bytes(4, "big"), digest_size=8).digest() for shard in range(total)]
    return max(range(total), key=weights.__getitem__)


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


SeriesKey = tuple[str, Labels]


@dataclass
class SeriesBudget:
    """Which series each target may export, under a per-target and a global cap."""

    global_cap: int
    admitted: dict[tuple[str, str], set[SeriesKey]] = field(default_factory=dict)

    def admit(self, target: tuple[str, str], samples: tuple[Sample, ...], cap: int) -> tuple[tuple[Sample, ...], int]:
        """The samples this target may export now, and how many were dropped.
        Series it exported before come first, so they keep updating."""
        before = self.admitted.get(target, set())
        others = sum(len(keys) for key, keys in self.admitted.items() if key != target)
        room = max(0, min(cap, self.global_cap - others))
        keys = [(s.family.name, s.labels) for s in samples]
        known = [i for i, k in enumerate(keys) if k in before]
        new = [i for i, k in enumerate(keys) if k not in before]
        chosen = set(known[:room])
        chosen.update(new[: max(0, room - len(chosen))])
        kept = tuple(s for i, s in enumerate(samples) if i in chosen)
        self.admitted[target] = {keys[i] for i in chosen}
        return kept, len(samples) - len(kept)

    def forget(self, target: tuple[str, str]) -> None:
        self.admitted.pop(target, None)
