"""Keeps the cyclic garbage collector off the long-lived heap of a running daemon.

CPython's full (generation 2) collection walks every container object that
is alive, and stops every thread while it does. The daemon's heap is mostly
long-lived: modules, the config, the sources, and per target its ledger,
statistics and exposition blocks. With 10,000 targets that is ~400,000
objects, and a full collection every 40 s or so took 400-700 ms: the
slowest scrapes, the scheduling lag p99 and ~8% of a core
(`benchmarks/scale.py`, docs/performance.md).

`gc.freeze()` moves everything alive into a generation the collector never
walks. What a frozen object holds is still freed by reference counting when
it is dropped (a replaced block, a removed target), but a *reference cycle*
among frozen objects is never found. So the daemon settles the heap
(collect, then freeze) at these moments:

- after start-up, before the first poll: the code, the config, the sources;
- once every target's first poll has ended: the per-target state, which
  lives as long as the target;
- after each reload (which unfreezes first, so what it drops is collected:
  a source's HTTP client is a web of cycles), and every SETTLE_SECONDS,
  which bounds what frozen cycles can hold (targets that discovery removed,
  closed connections) to what became garbage within that time.

Each settle is one full collection of the whole heap (about as long as one
of the collections it saves), once an hour instead of once a minute. Tests
that build many apps in one process do not freeze: only the daemon and the
benchmarks call this.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Protocol

# How often the frozen heap is collected once more (see the module docstring).
SETTLE_SECONDS = 3600.0
# How often `keep_settled` looks whether the first polls have all ended.
READY_CHECK_SECONDS = 1.0


class Readiness(Protocol):
    def ready(self) -> bool: ...


def settle_heap() -> None:
    """Collect all that is garbage now, then freeze what is alive."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


async def keep_settled(app: Readiness, every: float = SETTLE_SECONDS) -> None:
    """Settle once every first poll has ended (or `every` has passed), then
    every `every` seconds, until cancelled."""
    waited = 0.0
    while not app.ready() and waited < every:
        await asyncio.sleep(READY_CHECK_SECONDS)
        waited += READY_CHECK_SECONDS
    while True:
        settle_heap()
        await asyncio.sleep(every)
