"""Latest rendered snapshot per target, swapped atomically after each poll.

Polls write from the event loop (or a render thread) while scrapes read from
HTTP threads, so the index is guarded by a lock; blocks themselves are
immutable bytes. The index is kept per family, each family's blocks ordered by
(source, target), so a scrape only collects references: no per-series work.

Each family's joined body is cached until one of its blocks changes, so
scrapes between polls cost one buffer reference per family.

A snapshot older than its target's `max_staleness` is dropped when a scrape
reads the store: stale data is never served as fresh forever.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from exporter.model import Family, Sample
from exporter.sinks.exposition import Block, header_openmetrics, header_text

TargetKey = tuple[str, str]
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one successful poll produced (handed to push sinks)."""

    source: str
    target: str
    samples: tuple[Sample, ...]
    taken_at: float
    max_staleness: float


@dataclass(frozen=True, slots=True)
class Stored:
    """What the store keeps of a snapshot: its rendered blocks."""

    source: str
    target: str
    blocks: tuple[Block, ...]
    taken_at: float
    max_staleness: float

    def expired(self, now: float) -> bool:
        return now - self.taken_at > self.max_staleness


class _FamilyEntry:
    __slots__ = ("family", "text_header", "om_header", "text_header_gzip", "om_header_gzip", "blocks", "texts",
                 "text_gzips", "joined")

    def __init__(self, family: Family) -> None:
        from exporter.sinks.exposition import gzip_member

        self.family = family
        self.text_header = header_text(family)
        self.om_header = header_openmetrics(family)
        self.text_header_gzip = gzip_member(self.text_header)
        self.om_header_gzip = gzip_member(self.om_header)
        self.blocks: dict[TargetKey, Block] = {}
        # The eager formats' bytes again, in the same order: joining from
        # these skips an attribute lookup on every block, which at 100k blocks
        # cost 8x the copy itself (cache misses; benchmarks/bench.py scrape).
        self.texts: dict[TargetKey, bytes] = {}
        self.text_gzips: dict[TargetKey, bytes] = {}
        # The family's whole body per (openmetrics, compressed), joined on the
        # first scrape after a change: later scrapes send it as one buffer.
        self.joined: dict[tuple[bool, bool], bytes] = {}

    def body(self, openmetrics: bool, compressed: bool) -> bytes:
        key = (openmetrics, compressed)
        cached = self.joined.get(key)
        if cached is not None:
            return cached
        blocks = self.blocks.values()
        lines: Iterable[bytes]
        if compressed:
            head = self.om_header_gzip if openmetrics else self.text_header_gzip
            lines = [b.openmetrics_gzip() for b in blocks] if openmetrics else self.text_gzips.values()
        else:
            head = self.om_header if openmetrics else self.text_header
            lines = [b.openmetrics() for b in blocks] if openmetrics else self.texts.values()
        joined = self.joined[key] = b"".join([head, *lines])
        return joined

    def put(self, key: TargetKey, block: Block) -> None:
        """Add or replace a target's block, keeping (source, target) order."""
        _insert_sorted(self.blocks, key, block)
        _insert_sorted(self.texts, key, block.text)
        _insert_sorted(self.text_gzips, key, block.text_gzip)
        self.joined.clear()

    def pop(self, key: TargetKey) -> None:
        self.blocks.pop(key, None)
        self.texts.pop(key, None)
        self.text_gzips.pop(key, None)
        self.joined.clear()


class Store:
    def __init__(self, on_expire: Callable[[Stored], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._targets: dict[TargetKey, Stored] = {}
        self._families: dict[str, _FamilyEntry] = {}
        self._order: list[str] = []  # family names, sorted
        self._on_expire = on_expire

    def put(self, stored: Stored) -> list[Family]:
        """Swap in a target's blocks; returns families refused because another
        target already exports that name with a different type."""
        key = (stored.source, stored.target)
        refused = []
        with self._lock:
            old = self._targets.get(key)
            new_names = {block.family.name for block in stored.blocks}
            for block in old.blocks if old is not None else ():
                if block.family.name not in new_names:
                    self._unlink_locked(key, block.family.name)
            kept = []
            for block in stored.blocks:
                entry = self._families.get(block.family.name)
                if entry is None:
                    entry = self._families[block.family.name] = _FamilyEntry(block.family)
                    self._order = sorted(self._families)
                elif entry.family.kind is not block.family.kind:
                    refused.append(block.family)
                    continue
                entry.put(key, block)
                kept.append(block)
            self._targets[key] = Stored(stored.source, stored.target, tuple(kept), stored.taken_at,
                                        stored.max_staleness)
        return refused

    def drop(self, source: str, target: str) -> None:
        with self._lock:
            self._remove_locked((source, target))

    def expire(self, now: float) -> None:
        with self._lock:
            gone = [stored for stored in self._targets.values() if stored.expired(now)]
            for stored in gone:
                self._remove_locked((stored.source, stored.target))
        if self._on_expire is not None:
            for stored in gone:
                self._on_expire(stored)

    def parts(self, openmetrics: bool, compressed: bool) -> list[bytes]:
        """One buffer per family, in exposition order (joined once per change)."""
        with self._lock:
            return [self._families[name].body(openmetrics, compressed) for name in self._order]

    def _remove_locked(self, key: TargetKey) -> None:
        old = self._targets.pop(key, None)
        for block in old.blocks if old is not None else ():
            self._unlink_locked(key, block.family.name)

    def _unlink_locked(self, key: TargetKey, name: str) -> None:
        entry = self._families.get(name)
        if entry is None:
            return
        entry.pop(key)
        if not entry.blocks:
            del self._families[name]
            self._order = sorted(self._families)


def _insert_sorted(mapping: dict[TargetKey, V], key: TargetKey, value: V) -> None:
    """Keep a family's entries in (source, target) order. A target already in
    the family is replaced in place; only a target new to the family (rare)
    costs a re-sort."""
    if key in mapping or not mapping or key > next(reversed(mapping)):
        mapping[key] = value
        return
    mapping[key] = value
    ordered = sorted(mapping.items())
    mapping.clear()
    mapping.update(ordered)
