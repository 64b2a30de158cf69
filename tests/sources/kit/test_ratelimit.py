"""Rate budgets: the bookkeeping as properties in virtual time, the waiting in real time."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import math
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.sources.kit.ratelimit import Budgets, RateBudget, TokenBucket, key_id


def simulate(bucket: TokenBucket, clients: int, durations: list[float], think: list[float]) -> list[float]:
    """Clients that take a token as soon as the bucket allows, hold it for a
    request's duration, give it back and want another after a pause. Returns
    the take times, in virtual time."""
    now = 0.0
    wants = [0.0] * clients  # time a client wants its next token; None while busy
    busy: list[tuple[float, int]] = []  # (done at, client)
    takes: list[float] = []
    jobs = iter(durations)
    pauses = iter(think * (len(durations) // max(1, len(think)) + 1))
    remaining = len(durations)
    while remaining or busy:
        at = bucket.available_at()
        idle = [(max(w, at), c) for c, w in enumerate(wants) if w is not None and at is not None and remaining]
        next_take = min(idle) if idle else None
        next_done = min(busy) if busy else None
        if next_done is not None and (next_take is None or next_done[0] <= next_take[0]):
            busy.remove(next_done)
            now = next_done[0]
            bucket.give_back(now)
            wants[next_done[1]] = now + next(pauses, 0.0)
            continue
        assert next_take is not None, "deadlock: nobody busy and no token ever available"
        now, client = next_take
        assert bucket.take(now), "available_at() promised a token"
        takes.append(now)
        remaining -= 1
        busy.append((now + next(jobs), client))
        wants[client] = None  # type: ignore[call-overload]
    return takes


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 8),
    per=st.floats(0.1, 100, allow_nan=False),
    clients=st.integers(1, 12),
    durations=st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=80),
    think=st.lists(st.floats(0, 3, allow_nan=False), min_size=1, max_size=5),
)
def test_no_window_ever_holds_more_than_the_limit(limit: int, per: float, clients: int,
                                                  durations: list[float], think: list[float]) -> None:
    takes = sorted(simulate(TokenBucket(limit, per), clients, durations, think))
    # Any limit + 1 requests span at least one window (measured from sends; the
    # server sees each one even later relative to the answer of the previous).
    for first, last in zip(takes, takes[limit:], strict=False):
        assert last - first >= per - 1e-9 * per


@settings(max_examples=100, deadline=None)
@given(limit=st.integers(1, 10), per=st.floats(0.1, 100, allow_nan=False), requests=st.integers(1, 200))
def test_instant_requests_go_as_fast_as_the_limit_allows(limit: int, per: float, requests: int) -> None:
    takes = simulate(TokenBucket(limit, per), 1, [0.0] * requests, [0.0])
    assert takes[-1] == pytest.approx(TokenBucket(limit, per).estimate(requests))
    # The first window is spent at once: the bucket starts full.
    assert takes[: min(limit, requests)] == [0.0] * min(limit, requests)


def test_hold_delays_every_token() -> None:
    bucket = TokenBucket(5, 10.0)
    bucket.hold(7.0)
    assert bucket.available_at() == 7.0
    assert not bucket.take(6.9)
    assert bucket.take(7.0)


def test_tighten_to_fewer_tokens_and_a_longer_window() -> None:
    bucket = TokenBucket(4, 1.0)
    for _ in range(3):
        assert bucket.take(0.0)
    bucket.give_back(0.5)  # one free token, one back at 1.5, two in flight
    bucket.tighten(2, 3.0)
    assert (bucket.limit, bucket.per) == (2, 3.0)
    # Two tokens are destroyed (the free ones); the two in flight are all that is left.
    assert bucket.available_at() is None and bucket.in_flight == 2
    bucket.give_back(10.0)
    bucket.give_back(10.0)
    assert bucket.available_at() == 13.0  # the new, longer window
    assert not bucket.take(12.9)
    assert bucket.take(13.0) and bucket.take(13.0) and not bucket.take(13.0)


def test_tighten_while_tokens_are_out_destroys_them_on_return() -> None:
    bucket = TokenBucket(3, 1.0)
    for _ in range(3):
        assert bucket.take(0.0)
    bucket.tighten(1, 1.0)
    for _ in range(3):
        bucket.give_back(2.0)
    assert bucket.take(3.0) and not bucket.take(100.0)


def test_give_back_without_take_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        TokenBucket(1, 1.0).give_back(0.0)


def test_invalid_budget() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 1.0)
    with pytest.raises(ValueError):
        TokenBucket(1, 0.0)


# --- waiting, in real time with small windows -----------------------------------------------


def test_concurrent_acquirers_respect_the_window_in_order() -> None:
    limit, per, tasks = 5, 0.2, 23
    budget = RateBudget(limit, per)
    taken: list[tuple[float, int]] = []
    released: list[float] = []

    async def request(index: int) -> None:
        async with budget.slot():
            taken.append((time.monotonic(), index))
            await asyncio.sleep(random.uniform(0, 0.02))
        released.append(time.monotonic())

    async def main() -> float:
        start = time.monotonic()
        await asyncio.gather(*(request(i) for i in range(tasks)))
        return time.monotonic() - start

    elapsed = asyncio.run(main())
    times = [t for t, _ in taken]
    assert [i for _, i in taken] == list(range(tasks))  # first come, first served
    for first, last in zip(times, times[limit:], strict=False):
        assert last - first >= per
    expected = (math.ceil(tasks / limit) - 1) * per
    assert expected <= elapsed < expected + 1.0


def test_one_budget_serves_several_event_loops() -> None:
    budget = RateBudget(2, 0.1)

    async def twice() -> None:
        for _ in range(2):
            async with budget.slot():
                pass

    start = time.monotonic()
    asyncio.run(twice())
    asyncio.run(twice())  # another loop: the two tokens come back 0.1 s after use
    assert time.monotonic() - start >= 0.1


def test_a_cancelled_waiter_leaves_the_queue() -> None:
    budget = RateBudget(1, 0.2)

    async def main() -> None:
        await budget.acquire()
        budget.release()
        waiter = asyncio.create_task(budget.acquire())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await asyncio.wait_for(budget.acquire(), timeout=1.0)  # not stuck behind the cancelled one
        budget.release()

    asyncio.run(main())


def test_hold_stops_acquirers() -> None:
    budget = RateBudget(10, 1.0)

    async def main() -> float:
        budget.hold(0.3)
        start = time.monotonic()
        async with budget.slot():
            return time.monotonic() - start

    assert asyncio.run(main()) >= 0.29


def test_declared_demand_makes_the_estimate() -> None:
    budget = RateBudget(60, 60.0)
    budget.declare("a", 100)
    budget.declare("b", 50)
    budget.declare("a", 130)  # a re-declaration replaces
    assert budget.demand() == 180 and budget.sharers() == 2
    assert budget.estimate() == 120.0  # three windows: now, +60 s, +120 s
    assert budget.estimate(60) == 0.0


# --- the registry ------------------------------------------------------------------------------


def test_budgets_are_shared_per_key_and_server_by_hash() -> None:
    budgets = Budgets()
    a = budgets.get("sk_live_secret", "https://flux.example", 60, 60.0)
    assert budgets.get("sk_live_secret", "https://flux.example", 60, 60.0) is a
    assert budgets.get("sk_live_other", "https://flux.example", 60, 60.0) is not a
    assert budgets.get("sk_live_secret", "http://127.0.0.1:1/flux", 60, 60.0) is not a
    keys = list(budgets._budgets.keys())
    assert all("sk_live" not in key for key in keys)
    assert key_id("sk_live_secret", "https://flux.example") in keys
    assert key_id("k", "s") == hashlib.sha256(b"s\nk").hexdigest()


def test_different_limits_for_one_key_become_the_stricter(caplog: pytest.LogCaptureFixture) -> None:
    budgets = Budgets()
    a = budgets.get("key", "scope", 60, 60.0)
    with caplog.at_level(logging.WARNING):
        b = budgets.get("key", "scope", 100, 120.0)
    assert a is b and (a.limit, a.per) == (60, 120.0)
    assert "stricter 60 per 120s" in caplog.text and "key" not in caplog.text.replace("API key", "")


def test_budgets_go_when_nobody_uses_them() -> None:
    budgets = Budgets()
    budget = budgets.get("key", "scope", 1, 1.0)
    assert len(budgets) == 1
    del budget
    gc.collect()
    assert len(budgets) == 0
