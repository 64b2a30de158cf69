"""The rendered blocks of every target, swapped atomically when a snapshot arrives.

Snapshots arrive on the event loop (or a worker thread) while scrapes read
from the HTTP server's thread, so the index is guarded by a lock; blocks
themselves are immutable bytes. The index is kept per family, each family's
blocks ordered by key (source, target, part), so a scrape only collects
references: no per-series work.

Each family's joined body is cached until one of its blocks changes, so
scrapes between polls cost one buffer reference per family.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TypeVar

from exporter.model import Family
from exporter.sinks.prometheus.blocks import Block, gzip_member, header_openmetrics, header_text

# A target's blocks are stored in two parts: its vendor series and its own
# (`apimetrics_*`) series, which change on failures too: (source, target, part).
BlockKey = tuple[str, str, int]
V = TypeVar("V")


class _FamilyEntry:
    __slots__ = ("family", "text_header", "om_header", "text_header_gzip", "om_header_gzip", "blocks", "texts",
                 "text_gzips", "joined", "unordered")

    def __init__(self, family: Family) -> None:
        self.family = family
        self.text_header = header_text(family)
        self.om_header = header_openmetrics(family)
        self.text_header_gzip = gzip_member(self.text_header)
        self.om_header_gzip = gzip_member(self.om_header)
        self.blocks: dict[BlockKey, Block] = {}
        # The eager formats' bytes again, in the same order: joining from
        # these skips an attribute lookup on every block, which at 100k blocks
        # cost 8x the copy itself (cache misses; benchmarks/bench.py scrape).
        self.texts: dict[BlockKey, bytes] = {}
        self.text_gzips: dict[BlockKey, bytes] = {}
        # The family's whole body per (openmetrics, compressed), joined on the
        # first scrape after a change: later scrapes send it as one buffer.
        self.joined: dict[tuple[bool, bool], bytes] = {}
        # A target new to the family was appended out of (source, target)
        # order: the dicts are sorted before the next join, once, however
        # many targets came meanwhile (10,000 at start-up).
        self.unordered = False

    def body(self, openmetrics: bool, compressed: bool) -> bytes:
        key = (openmetrics, compressed)
        cached = self.joined.get(key)
        if cached is not None:
            return cached
        if self.unordered:
            _sort(self.blocks)
            _sort(self.texts)
            _sort(self.text_gzips)
            self.unordered = False
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

    def put(self, key: BlockKey, block: Block) -> None:
        """Add or replace a target's block: a target already in the family
        keeps its place; a new one goes last and the order is restored at the
        next join."""
        if self.blocks.get(key) is block:
            return  # unchanged (blocks.render_blocks): the joined bodies stay valid
        if key not in self.blocks and self.blocks and key < next(reversed(self.blocks)):
            self.unordered = True
        self.blocks[key] = block
        self.texts[key] = block.text
        self.text_gzips[key] = block.text_gzip
        self.joined.clear()

    def pop(self, key: BlockKey) -> None:
        self.blocks.pop(key, None)
        self.texts.pop(key, None)
        self.text_gzips.pop(key, None)
        self.joined.clear()


class Store:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blocks: dict[BlockKey, tuple[Block, ...]] = {}
        self._families: dict[str, _FamilyEntry] = {}
        self._order: list[str] = []  # family names, sorted

    def put(self, key: BlockKey, blocks: Iterable[Block]) -> list[Family]:
        """Swap in the blocks under `key`; returns families refused because
        another target already exports that name with a different type."""
        refused = []
        with self._lock:
            old = self._blocks.get(key, ())
            blocks = tuple(blocks)
            new_names = {block.family.name for block in blocks}
            for block in old:
                if block.family.name not in new_names:
                    self._unlink_locked(key, block.family.name)
            kept = []
            for block in blocks:
                entry = self._families.get(block.family.name)
                if entry is None:
                    entry = self._families[block.family.name] = _FamilyEntry(block.family)
                    self._order = sorted(self._families)
                elif entry.family.kind is not block.family.kind:
                    refused.append(block.family)
                    continue
                entry.put(key, block)
                kept.append(block)
            self._blocks[key] = tuple(kept)
        return refused

    def current(self, key: BlockKey) -> dict[str, Block]:
        """The blocks under `key` by family name. Without the lock (a scrape
        holds it while joining): `_blocks` maps to immutable tuples."""
        return {block.family.name: block for block in self._blocks.get(key, ())}

    def drop(self, key: BlockKey) -> None:
        with self._lock:
            for block in self._blocks.pop(key, ()):
                self._unlink_locked(key, block.family.name)

    def parts(self, openmetrics: bool, compressed: bool) -> list[bytes]:
        """One buffer per family, in exposition order (joined once per change)."""
        with self._lock:
            return [self._families[name].body(openmetrics, compressed) for name in self._order]

    def _unlink_locked(self, key: BlockKey, name: str) -> None:
        entry = self._families.get(name)
        if entry is None:
            return
        entry.pop(key)
        if not entry.blocks:
            del self._families[name]
            self._order = sorted(self._families)


def _sort(mapping: dict[BlockKey, V]) -> None:
    """Put a family's entries in (source, target) order, in place."""
    ordered = sorted(mapping.items())
    mapping.clear()
    mapping.update(ordered)
