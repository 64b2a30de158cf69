"""The daemon's heap settling (app/heap.py): frozen once the first polls have
ended, the young generations frozen every second after a collection, and
the whole heap collected again periodically so frozen reference cycles do
not stay."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from exporter.app import heap


class Node:
    """A reference cycle only the cyclic collector can free."""

    def __init__(self) -> None:
        self.me = self


class Readiness:
    def __init__(self) -> None:
        self.polled = False

    def ready(self) -> bool:
        return self.polled


@contextlib.asynccontextmanager
async def keeping_settled(app: heap.Readiness, every: float, young_every: float = heap.FREEZE_SECONDS,
                          ) -> AsyncIterator[None]:
    """`keep_settled` running as the daemon runs it, until the block ends."""
    task = asyncio.create_task(heap.keep_settled(app, every=every, young_every=young_every))
    try:
        yield
    finally:
        task.cancel()


def ready() -> Readiness:
    app = Readiness()
    app.polled = True
    return app


async def until(condition: Callable[[], object]) -> None:
    """Wait up to 2 s for `condition`, then leave the assertion to the caller."""
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0.02)


def _frozen(obj: object) -> bool:
    """Tracked, yet in none of the three generations: in the permanent one."""
    return gc.is_tracked(obj) and not any(other is obj for other in gc.get_objects())


@pytest.fixture(autouse=True)
def _unfrozen(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(heap, "READY_CHECK_SECONDS", 0.01)
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test run collects as usual
    gc.collect()


def test_a_cycle_frozen_while_alive_is_freed_by_the_next_settle() -> None:
    node = Node()
    alive = weakref.ref(node)
    heap.settle_heap()
    del node
    gc.collect()
    assert alive() is not None  # frozen: the collector does not walk it
    heap.settle_heap()
    assert alive() is None


def test_the_heap_is_settled_once_the_first_polls_have_ended() -> None:
    asyncio.run(_the_heap_is_settled_once_the_first_polls_have_ended())


async def _the_heap_is_settled_once_the_first_polls_have_ended() -> None:
    app = Readiness()
    async with keeping_settled(app, every=60):
        await asyncio.sleep(0.1)
        assert gc.get_freeze_count() == 0  # first polls still running: their state is not final yet
        app.polled = True
        await asyncio.sleep(0.1)
        assert gc.get_freeze_count() > 0


def test_frozen_cycles_are_freed_periodically() -> None:
    asyncio.run(_frozen_cycles_are_freed_periodically())


async def _frozen_cycles_are_freed_periodically() -> None:
    node = Node()
    alive = weakref.ref(node)
    async with keeping_settled(ready(), every=0.05):
        await asyncio.sleep(0.02)  # settled once: `node` is frozen
        del node
        await until(lambda: alive() is None)
        assert alive() is None
        assert gc.get_freeze_count() > 0  # and what is alive is frozen again


def test_a_target_set_that_never_turns_ready_is_settled_after_one_period() -> None:
    asyncio.run(_a_target_set_that_never_turns_ready_is_settled_after_one_period())


async def _a_target_set_that_never_turns_ready_is_settled_after_one_period() -> None:
    async with keeping_settled(Readiness(), every=0.05):
        await until(gc.get_freeze_count)
        assert gc.get_freeze_count() > 0


def test_what_survives_between_settles_is_frozen_every_tick() -> None:
    asyncio.run(_what_survives_between_settles_is_frozen_every_tick())


async def _what_survives_between_settles_is_frozen_every_tick() -> None:
    async with keeping_settled(ready(), every=60, young_every=0.02):
        await asyncio.sleep(0.01)  # settled once
        state = Node()  # a poll's new state, after the settle
        assert not _frozen(state)
        await until(lambda: _frozen(state))
        assert _frozen(state)  # frozen without waiting for the next settle (a minute away)


def test_young_garbage_is_collected_before_it_is_frozen() -> None:
    asyncio.run(_young_garbage_is_collected_before_it_is_frozen())


async def _young_garbage_is_collected_before_it_is_frozen() -> None:
    async with keeping_settled(ready(), every=60, young_every=0.02):
        await asyncio.sleep(0.01)
        garbage = Node()
        dead = weakref.ref(garbage)
        del garbage  # a cycle: only the collector frees it
        await until(lambda: dead() is None)
        # A bare freeze would have kept it until the next settle, a minute away.
        assert dead() is None
