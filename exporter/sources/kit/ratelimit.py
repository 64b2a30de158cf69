"""Rate budgets: at most N upstream requests in any window of `per` seconds, per API key.

A budget is a bucket of N tokens. A request takes a token before it is sent
and gives it back when its answer (or failure) has arrived; a token given back
is usable again `per` seconds later.

Why not the textbook token bucket (capacity N, refilled continuously at N per
`per`)? It lets up to 2N - 1 requests through in one window: a full bucket
spent just before a window boundary, plus the refill during the next window.
Vendors write "60 requests/minute" without saying whether they count fixed or
sliding windows; only "at most N in *any* window" is safe against both.

Why count from the answer rather than from the send? The server received a
request before it answered it, and the next request on that token is sent at
least `per` after the answer, so the server sees two requests on one token at
least `per` apart whatever the network delays. Of any N + 1 requests two share
a token, so no window of `per` at the server ever holds more than N.

A 429 means somebody else spends the same key (or the server counts
differently): `hold()` stops every holder of the budget until its
`Retry-After` has passed.

Budgets are shared by every source that uses the same key against the same
server, through `Budgets.get`, which keys them by a sha256 of the two: the raw
key is never kept. The waiting side uses only `asyncio.sleep` and a thread
lock, so one budget serves several event loops (each test runs its own).
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import logging
import math
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

log = logging.getLogger(__name__)

# How often a waiter looks again while every token is out (in flight); a
# token given back is usable only `per` later anyway, so this costs nothing.
_POLL = 0.02


class TokenBucket:
    """The bookkeeping of a budget, without waiting: times are passed in.

    `_free` is a heap of the times at which the tokens not in flight become
    usable; `_out` counts tokens in flight.
    """

    def __init__(self, limit: int, per: float) -> None:
        if limit < 1 or not per > 0 or not math.isfinite(per):
            raise ValueError(f"a budget needs limit >= 1 and a positive window, got {limit} per {per}")
        self.limit = limit
        self.per = float(per)
        self._free: list[float] = [-math.inf] * limit
        self._out = 0
        self._debt = 0  # tokens to destroy as they come back (after a stricter reconfigure)
        self._hold_until = -math.inf

    @property
    def in_flight(self) -> int:
        return self._out

    def available_at(self) -> float | None:
        """When the next token can be taken; None while every token is in flight."""
        if not self._free:
            return None
        return max(self._free[0], self._hold_until)

    def take(self, now: float) -> bool:
        at = self.available_at()
        if at is None or at > now:
            return False
        heapq.heappop(self._free)
        self._out += 1
        return True

    def give_back(self, now: float) -> None:
        if self._out <= 0:
            raise RuntimeError("give_back() without a token taken")
        self._out -= 1
        if self._debt:
            self._debt -= 1
            return
        heapq.heappush(self._free, now + self.per)

    def hold(self, until: float) -> None:
        self._hold_until = max(self._hold_until, until)

    def tighten(self, limit: int, per: float) -> None:
        """Become at least as strict as `limit` per `per` (fewer tokens, longer window)."""
        if per > self.per:
            shift = per - self.per
            self._free = [t + shift for t in self._free]
            heapq.heapify(self._free)
            self.per = float(per)
        if limit < self.limit:
            self._debt += self.limit - limit
            self.limit = limit
            # Pay what can be paid now with the tokens that would come back last.
            while self._debt and self._free:
                self._free.remove(max(self._free))
                self._debt -= 1
            heapq.heapify(self._free)

    def estimate(self, requests: int) -> float:
        """Seconds that `requests` requests need at least, starting from a full bucket
        (answers taken as instant): every N requests after the first N wait a window."""
        if requests <= 0:
            return 0.0
        return (math.ceil(requests / self.limit) - 1) * self.per


class RateBudget:
    """A `TokenBucket` with waiting: `async with budget.slot(): send()`."""

    def __init__(
        self,
        limit: int,
        per: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._bucket = TokenBucket(limit, per)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._queue: deque[object] = deque()
        self._demand: dict[str, int] = {}

    @property
    def limit(self) -> int:
        return self._bucket.limit

    @property
    def per(self) -> float:
        return self._bucket.per

    async def acquire(self) -> None:
        """Wait for a token, first come first served. Pair with `release()`."""
        ticket = object()
        with self._lock:
            self._queue.append(ticket)
        try:
            while True:
                with self._lock:
                    now = self._clock()
                    if self._queue[0] is ticket and self._bucket.take(now):
                        self._queue.popleft()
                        return
                    at = self._bucket.available_at()
                # Tokens only ever become usable later than `at` (answers, holds and
                # tightening all push it back), so sleeping until then is exact; a
                # waiter behind the head wakes with it and looks again.
                await self._sleep(_POLL if at is None else max(at - now, 0.001))
        finally:
            with self._lock:
                try:
                    self._queue.remove(ticket)
                except ValueError:
                    pass

    def release(self) -> None:
        """Give the token back: usable again `per` seconds from now."""
        with self._lock:
            self._bucket.give_back(self._clock())

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    def hold(self, seconds: float) -> None:
        """Hand out no token for `seconds` (a 429's Retry-After)."""
        with self._lock:
            self._bucket.hold(self._clock() + max(0.0, seconds))

    def tighten(self, limit: int, per: float) -> None:
        with self._lock:
            self._bucket.tighten(limit, per)

    # --- planning: several sources share one budget -----------------------------

    def declare(self, owner: str, requests: int) -> None:
        """`owner` plans `requests` requests per cycle on this budget."""
        with self._lock:
            self._demand[owner] = requests

    def demand(self) -> int:
        with self._lock:
            return sum(self._demand.values())

    def sharers(self) -> int:
        with self._lock:
            return len(self._demand)

    def estimate(self, requests: int | None = None) -> float:
        """Seconds a cycle needs at least: `requests`, or every owner's declared demand."""
        with self._lock:
            total = sum(self._demand.values()) if requests is None else requests
            return self._bucket.estimate(total)


def key_id(secret: str, scope: str) -> str:
    """sha256 of the server and the key: what budgets are filed under."""
    return hashlib.sha256(f"{scope}\n{secret}".encode()).hexdigest()


class Budgets:
    """Budgets by (server, API key), shared by every source that asks with both.

    Held weakly: a budget lives as long as a source uses it.
    """

    def __init__(self) -> None:
        self._budgets: weakref.WeakValueDictionary[str, RateBudget] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()

    def get(self, secret: str, scope: str, limit: int, per: float) -> RateBudget:
        """The budget of `secret` at `scope` (a base URL). A second user asking
        for other numbers makes it the stricter of both, and it is logged."""
        digest = key_id(secret, scope)
        with self._lock:
            budget = self._budgets.get(digest)
            if budget is None:
                budget = self._budgets[digest] = RateBudget(limit, per)
                return budget
        if (budget.limit, budget.per) != (limit, float(per)):
            before = (budget.limit, budget.per)
            budget.tighten(min(limit, budget.limit), max(per, budget.per))
            log.warning("two sources use the same API key on %s with different rate limits (%d per %gs and "
                        "%d per %gs); both now use the stricter %d per %gs",
                        scope, before[0], before[1], limit, per, budget.limit, budget.per)
        return budget

    def __len__(self) -> int:
        return len(self._budgets)


# The process-wide registry sources use.
BUDGETS = Budgets()
