"""Keeps the cyclic garbage collector off the long-lived heap of a running daemon.

CPython's collector walks every container object of the generations it
collects, and stops every thread while it does. The daemon's heap is mostly
long-lived: modules, the config, the sources, and per target its ledger,
statistics and exposition blocks, ~400,000 objects at 10,000 targets. Each
poll replaces a part of its target's state, so that state keeps passing
through the young generations into the old one:

- a full (generation 2) collection walked all of it: 400-700 ms, every
  40 s or so;
- the young generations grew to 200,000 objects between two collections
  (CPython counts allocations *minus deallocations*, and a poll that
  replaces its state frees about as many objects as it makes), so even a
  young collection took 50-140 ms, every few seconds.

Each of those pauses is a scrape that waits (`benchmarks/scale.py`,
docs/performance.md). `gc.freeze()` moves everything alive into a
generation the collector never walks; what a frozen object holds is still
freed by reference counting when it is dropped (a replaced block, a
removed target), but a *reference cycle* among frozen objects is never
found. So the daemon:

- settles the heap (collect everything, then freeze) after start-up, once
  every target's first poll has ended, after each reload (which unfreezes
  first: a dropped source's HTTP client is a web of cycles) and every
  SETTLE_SECONDS, which bounds what frozen cycles can hold to what became
  garbage within that time; each settle is one full collection, 0.4-0.5 s
  at 10,000 targets, once an hour;
- in between, every FREEZE_SECONDS, collects the young generations (what
  the last second made: a few milliseconds) and freezes what survived, so
  the young generations stay small and the old one stays empty.

The cyclic garbage of the daemon's steady state is small: at 10,000
targets the collector found 100-400 objects a minute, and a settle after
4 minutes of freezes found 128 a minute among the frozen ones (about
8,000 an hour that wait for the hourly settle). Tests that build many apps
in one process do not freeze: only the daemon and the benchmarks call this.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Protocol

# How often the whole heap, frozen part included, is collected (see above).
SETTLE_SECONDS = 3600.0
# How often the young generations are collected and what survived frozen.
FREEZE_SECONDS = 1.0
# How often `keep_settled` looks whether the first polls have all ended.
READY_CHECK_SECONDS = 1.0


class Readiness(Protocol):
    def ready(self) -> bool: ...


def settle_heap() -> None:
    """Collect all that is garbage now, then freeze what is alive."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def freeze_young() -> None:
    """Collect the young generations, then freeze what survived (with the
    rest: freezing is a splice of lists, whatever the heap's size)."""
    gc.collect(1)
    gc.freeze()


async def keep_settled(app: Readiness, every: float = SETTLE_SECONDS, young_every: float = FREEZE_SECONDS) -> None:
    """Settle once every first poll has ended (or `every` has passed), then
    every `every` seconds, freezing the young generations every
    `young_every` seconds in between; until cancelled."""
    waited = 0.0
    while not app.ready() and waited < every:
        await asyncio.sleep(READY_CHECK_SECONDS)
        waited += READY_CHECK_SECONDS
    while True:
        settle_heap()
        settled = time.monotonic()
        while (left := every - (time.monotonic() - settled)) > young_every:
            await asyncio.sleep(young_every)
            freeze_young()
        await asyncio.sleep(max(0.0, left))
