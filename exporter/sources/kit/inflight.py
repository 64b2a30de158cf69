"""What every source's requests share: slots per upstream host, a budget of response bytes, the poll's deadline.

- **Slots.** Each source's HTTP client lets at most `http.max_in_flight`
  requests out at once, and every client talking to one host (scheme, host,
  port) at most `[limits] max_in_flight_per_host` together. A burst of
  10,000 polls then queues here, in a FIFO semaphore, not in the HTTP
  client's connection pool, whose bookkeeping grows with its queue.
- **Response bytes.** All bodies being read at once hold at most
  `[limits] max_response_bytes_in_flight` bytes. A body of known length
  reserves its length before it is read and waits (first come, first served)
  while others hold the budget; a body of unknown length (chunked, or
  compressed) reserves as it grows and fails as `response_too_large` when the
  budget is used up by others, rather than waiting while holding part of it
  (two such bodies waiting for each other would wait forever).
- **Deadline.** The runner sets the poll's deadline (`poll_deadline`) in a
  context variable, which the tasks a poll starts inherit: the HTTP client
  does not start a retry wait that would end after it, and fails the poll
  at once under the reason of the failed attempt instead.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager


class ByteBudget:
    """A pool of `total` bytes shared by every body being read (one event loop)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def held(self) -> int:
        return self.total - self.free

    async def reserve(self, size: int) -> None:
        """Wait until `size` bytes (at most `total`) are free, then take them."""
        if size > self.total:
            raise ValueError(f"cannot reserve {size} of {self.total} bytes")
        if not self._waiters and size <= self.free:
            self.free -= size
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((size, future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(size)  # granted just as the wait was cancelled
            else:
                self._waiters.remove((size, future))
                self._wake()  # a smaller waiter behind may fit now
            raise

    def try_grow(self, size: int) -> bool:
        """Take `size` more bytes if they are free now; never waits."""
        if size <= self.free:
            self.free -= size
            return True
        return False

    def release(self, size: int) -> None:
        self.free += size
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._waiters[0][0] <= self.free:
            size, future = self._waiters.popleft()
            if future.cancelled():
                continue
            self.free -= size
            future.set_result(None)


class HostSlots:
    """One semaphore per upstream host, shared by every source's client."""

    def __init__(self, per_host: int) -> None:
        self.per_host = per_host
        self._hosts: dict[str, asyncio.Semaphore] = {}

    def of(self, host: str) -> asyncio.Semaphore:
        slots = self._hosts.get(host)
        if slots is None:
            slots = self._hosts[host] = asyncio.Semaphore(self.per_host)
        return slots


# Loop time (`time.monotonic`) by which the current poll must end; None outside a poll.
poll_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("poll_deadline", default=None)


def remaining() -> float:
    """Seconds left before the current poll's deadline (inf outside a poll)."""
    deadline = poll_deadline.get()
    return math.inf if deadline is None else deadline - time.monotonic()


@contextmanager
def deadline_after(seconds: float) -> Iterator[None]:
    """The poll run inside must end within `seconds` (see `remaining`)."""
    token = poll_deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        poll_deadline.reset(token)
