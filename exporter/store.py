"""Latest snapshot per target, swapped atomically after each successful poll.

The HTTP server reads from a thread while polls write from the event loop, so
the map is guarded by a lock; a snapshot itself is immutable. A snapshot older
than its target's `max_staleness` is dropped when read: stale data is never
served as fresh forever.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from exporter.model import Sample


@dataclass(frozen=True, slots=True)
class Snapshot:
    source: str
    target: str
    samples: tuple[Sample, ...]
    taken_at: float
    max_staleness: float

    def expired(self, now: float) -> bool:
        return now - self.taken_at > self.max_staleness


class Store:
    def __init__(self, on_expire: Callable[[Snapshot], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[tuple[str, str], Snapshot] = {}
        self._on_expire = on_expire

    def put(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._snapshots[(snapshot.source, snapshot.target)] = snapshot

    def get(self, source: str, target: str) -> Snapshot | None:
        with self._lock:
            return self._snapshots.get((source, target))

    def drop(self, source: str, target: str) -> None:
        with self._lock:
            self._snapshots.pop((source, target), None)

    def current(self, now: float) -> list[Snapshot]:
        """Fresh snapshots, ordered by (source, target); expired ones are removed."""
        with self._lock:
            expired = [key for key, snap in self._snapshots.items() if snap.expired(now)]
            gone = [self._snapshots.pop(key) for key in expired]
            fresh = sorted(self._snapshots.values(), key=lambda s: (s.source, s.target))
        if self._on_expire is not None:
            for snapshot in gone:
                self._on_expire(snapshot)
        return fresh
