"""OTLP push sink: every new polled point, through a bounded queue, to an OpenTelemetry collector.

    poll ─► runner ─► `publish(snapshot)` ─► PointQueue ─► drain task ─► worker thread
                                                                           (encode: wire; send: SDK exporter)

- `publish` runs right after a successful poll, on the event loop or (for a
  big snapshot) in the runner's worker thread. It only turns the snapshot's
  new samples into points and appends them under a lock, then wakes the drain
  task on its loop: no I/O, so a collector being down never delays a poll or
  a scrape.
- One drain task sends batches of at most `max_batch_points`, one at a time,
  in queue order. Encoding and the SDK's blocking `export()` run in a daemon
  worker thread (not `asyncio.to_thread`: the default executor is joined at
  exit, so one export hung on a dead collector would hold the process past its
  shutdown grace).
- A retryable failure puts the batch back at the head of the queue and waits
  (`backoff`, doubled up to `max_backoff`, or the collector's Retry-After /
  RetryInfo when it gives one, capped at `max_backoff`): points are delivered
  in order, and a batch is never re-sent after a success. A permanent failure
  drops the batch and counts it.
- The queue holds at most `max_queue_points`; when full, the oldest points are
  dropped and counted. Memory: the queue plus one batch in flight.
- `stop()` flushes what is queued, retrying, until the queue is empty or
  `shutdown_grace` has passed; what is left is counted as dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from exporter import __version__
from exporter.logs import REDACTOR
from exporter.model import Change, SeriesKey, Snapshot, TargetKey
from exporter.selfmetrics import ProcessMetrics
from exporter.sinks.otlp.config import OtlpConfig
from exporter.sinks.otlp.points import Point, build_resource, new_points, scope
from exporter.sinks.otlp.state import SentStateStore
from exporter.sinks.otlp.transport import Encoded, Outcome, Transport, resolve
from exporter.sinks.otlp.wire import WireEncoder

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Mark:
    """Queued after a snapshot's points: once the collector has taken every
    point before it, `sent` (the newest vendor time per series of `key`) is
    what was delivered, and what the state dir remembers."""

    key: TargetKey
    sent: dict[SeriesKey, int]


Item = Point | Mark


class PointQueue:
    """A FIFO of points (and the marks between them) bounded by `max_points`:
    adding past the bound drops the oldest, and says how many points."""

    def __init__(self, max_points: int) -> None:
        self.max_points = max_points
        self._items: deque[Item] = deque()
        self._points = 0

    def __len__(self) -> int:
        return self._points

    def put(self, points: Iterable[Point], mark: Mark | None = None) -> int:
        before = len(self._items)
        self._items.extend(points)
        self._points += len(self._items) - before
        if mark is not None:
            self._items.append(mark)
        return self._trim()

    def put_back(self, items: list[Item]) -> int:
        """Return a batch that could not be sent to the head, where it was."""
        self._items.extendleft(reversed(items))
        self._points += sum(type(item) is not Mark for item in items)
        return self._trim()

    def take(self, count: int) -> list[Item]:
        """Up to `count` points, with the marks among and right after them."""
        items, taken = [], 0
        while self._items and (taken < count or type(self._items[0]) is Mark):
            item = self._items.popleft()
            taken += type(item) is not Mark
            items.append(item)
        self._points -= taken
        return items

    def _trim(self) -> int:
        # Marks dropped with their points are not applied: a later mark of the
        # same target says at least as much.
        dropped = 0
        while self._points > self.max_points:
            if type(self._items.popleft()) is not Mark:
                self._points -= 1
                dropped += 1
        return dropped


def in_daemon_thread(function: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """Run `function` in a new daemon thread; the future resolves on the loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():  # the waiter gave up (shutdown grace over)
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result, error = function(*args), None
        except BaseException as exc:  # handed to the awaiting task
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop is closed: the process is exiting
            pass

    threading.Thread(target=run, name="otlp-export", daemon=True).start()
    return future


@dataclass(frozen=True, slots=True)
class OtlpStatus:
    """How delivery stands, for the status page."""

    endpoint: str
    protocol: str
    queued_points: int  # the batch being sent included
    max_queue_points: int
    failing: str | None  # the reason of the last failed export, until one succeeds
    last_success: float | None  # Unix time of the last successful export


class OtlpSink:
    def __init__(
        self,
        config: OtlpConfig,
        metrics: ProcessMetrics,
        instance_id: str,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        state_dir: Path | None = None,
    ) -> None:
        environ = os.environ if environ is None else environ
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.settings = resolve(config, environ)
        for value in self.settings.headers.values():
            REDACTOR.add(value)
        self.resource = build_resource(config.resource_attributes, environ, instance_id, __version__)
        self.scope = scope(__version__)
        self.encoder = WireEncoder(self.resource, self.scope)
        self.transport = Transport(self.settings)
        self.queue = PointQueue(config.max_queue_points)
        # Counters without a vendor-given start (none today) start here.
        self._started_at = clock()
        # Per target: the newest vendor time queued per series, and when to forget it.
        self._sent: dict[TargetKey, tuple[dict[SeriesKey, int], float]] = {}
        # With a state dir: per target, what the collector accepted (from the
        # marks), saved by the drain task; loaded when a target first shows up.
        self._store = SentStateStore(state_dir) if state_dir is not None else None
        self._delivered: dict[TargetKey, dict[SeriesKey, int]] = {}
        self._unsaved: set[TargetKey] = set()
        self._saving = threading.Lock()  # one save at a time: the newest state is written last
        # publish() may run in a worker thread: the queue and `_sent` are
        # changed under this lock, and the drain task is woken on its loop.
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight = 0
        self._wake = asyncio.Event()
        self._interrupt = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._deadline: float | None = None  # loop time; set by stop()
        self._stopped = False
        self._failing: str | None = None
        self._last_success: float | None = None
        self._dropping = False
        metrics.add_otlp()
        if not logging.getLogger().isEnabledFor(logging.DEBUG):
            # The SDK exporters log every failed attempt at ERROR; this sink
            # logs each change of state once (failing, recovered, dropping).
            logging.getLogger("opentelemetry.exporter.otlp").setLevel(logging.CRITICAL)
        log.info("pushing OTLP (%s) to %s", self.settings.protocol, self.settings.endpoint)

    # --- the sink: on the event loop or a worker thread, never blocking ------------------

    def publish(self, snapshot: Snapshot) -> None:
        if snapshot.change is Change.REMOVED:
            with self._lock:
                self._sent.pop(snapshot.key, None)
                self._delivered.pop(snapshot.key, None)
            return
        if snapshot.change not in (Change.POLLED, Change.HISTORY):
            return  # only polls (and backfills) bring vendor points; the target's own series are not pushed
        with self._lock:
            if snapshot.change is Change.HISTORY:
                self._take_history(snapshot)
            else:
                self._take(snapshot)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _take(self, snapshot: Snapshot) -> None:
        key = snapshot.key
        known = self._sent.get(key)
        sent = known[0] if known is not None else self._restore(key)
        points, newest = new_points(snapshot.samples, snapshot.taken_at, self._started_at, sent)
        if self._stopped:  # a poll that ended after the flush
            self._drop("shutdown", len(points))
            return
        self._sent[key] = (newest, snapshot.taken_at + 2 * snapshot.max_staleness)
        now = snapshot.taken_at
        for gone in [k for k, (_, forget_at) in self._sent.items() if forget_at < now]:
            del self._sent[gone]  # a target not polled successfully for long
            self._delivered.pop(gone, None)
        mark = Mark(key, newest) if self._store is not None and newest != sent else None
        self._drop("queue_full", self.queue.put(points, mark))
        self._update_queue_gauge()

    def _take_history(self, snapshot: Snapshot) -> None:
        """A backfill: every point goes, whatever was sent live (the live
        state is neither read nor changed)."""
        points, _ = new_points(snapshot.samples, snapshot.taken_at, self._started_at, {})
        self._drop("queue_full", self.queue.put(points))
        self._update_queue_gauge()

    def _restore(self, key: TargetKey) -> dict[SeriesKey, int] | None:
        """What an earlier process delivered of a target first seen now (None:
        nothing known, so only the newest points go). A small file read, as
        the ledger's on a target's first poll."""
        if self._store is None:
            return None
        delivered = self._store.load(key)
        if delivered is not None:
            self._delivered[key] = delivered
        return delivered

    def room(self) -> int:
        """Points the queue takes before it drops any (a backfill waits for room)."""
        return self.queue.max_points - len(self.queue) - self._in_flight

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(self._drain(), name="otlp-drain")

    async def stop(self) -> None:
        """Flush within `shutdown_grace`, then close the exporter; never raises."""
        if self._stopped:
            return
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self.config.shutdown_grace
        self.start()  # `once` never started it: flush now
        self._wake.set()
        self._interrupt.set()  # a backoff wait ends now: try once more at once
        assert self._task is not None
        done, _ = await asyncio.wait({self._task}, timeout=self.config.shutdown_grace)
        if not done:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._stopped = True
        left = len(self.queue) + self._in_flight
        if left:
            log.warning("OTLP: %d point(s) not delivered within the shutdown grace (%gs); dropped",
                        left, self.config.shutdown_grace)
            self._drop("shutdown", left)
            with self._lock:
                self.queue.take(len(self.queue))
            self._in_flight = 0
        self.save_state()  # what the flush delivered; what was dropped is sent again after a restart
        self._update_queue_gauge()
        self.transport.shutdown()

    # --- the drain task ---------------------------------------------------------------------

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = self.config.backoff
        while True:
            if self._deadline is not None and (not self.queue or loop.time() >= self._deadline):
                return
            if not self.queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                outcome = await self._send_one_batch()
            except Exception:  # a bug here must not end delivery for the process's life
                log.exception("OTLP drain failed; going on")
                outcome = Outcome(False, True, "internal")
            if outcome.ok or not outcome.retryable:
                backoff = self.config.backoff
                continue
            hint = outcome.retry_after
            delay = min(hint if hint is not None else backoff * random.uniform(0.8, 1.2), self.config.max_backoff)
            backoff = min(backoff * 2, self.config.max_backoff)
            if self._deadline is not None:  # flushing: retry until the grace runs out
                await asyncio.sleep(min(delay, max(0.0, self._deadline - loop.time())))
                continue
            self._interrupt.clear()
            try:  # stop() cuts this wait short: the flush tries again at once
                await asyncio.wait_for(self._interrupt.wait(), delay)
            except TimeoutError:
                pass

    async def _send_one_batch(self) -> Outcome:
        with self._lock:
            items = self.queue.take(self.config.max_batch_points)
        batch = [item for item in items if type(item) is not Mark]
        self._in_flight = len(batch)
        started = time.monotonic()
        try:
            outcome = await in_daemon_thread(self._export, batch)
        finally:
            self.metrics.otlp_export_duration.observe(time.monotonic() - started)
        self._in_flight = 0
        size = len(batch)
        if outcome.ok:
            self.metrics.otlp_exported_points.labels("success").inc(size)
            self._last_success = self.clock()
            if self._failing is not None:
                log.info("OTLP export to %s recovered", self.settings.endpoint)
            self._failing, self._dropping = None, False
        elif outcome.retryable:
            self.metrics.otlp_exported_points.labels("retryable").inc(size)
            with self._lock:
                self._drop("queue_full", self.queue.put_back(items))
            self._log_failure(outcome, f"retrying; {len(self.queue)} point(s) queued")
        else:
            if outcome.reason != "invalid":
                self.metrics.otlp_exported_points.labels("rejected").inc(size)
            self._drop("invalid" if outcome.reason == "invalid" else "rejected", size)
            self._log_failure(outcome, f"{size} point(s) dropped (not retryable)")
        if outcome.ok or not outcome.retryable:
            await self._delivered_up_to([item for item in items if type(item) is Mark])
        self._update_queue_gauge()
        return outcome

    async def _delivered_up_to(self, marks: list[Mark]) -> None:
        """Every point before these marks is done with: remember, and save in
        the worker thread, what the collector now has."""
        if not marks or self._store is None:
            return
        with self._lock:
            for mark in marks:
                if mark.key in self._sent:  # not removed meanwhile
                    self._delivered[mark.key] = mark.sent
                    self._unsaved.add(mark.key)
        await in_daemon_thread(self.save_state)

    def save_state(self) -> None:
        """Write the delivered times of every target changed since the last
        save; a failure is logged and retried with the next batch."""
        if self._store is None:
            return
        with self._saving:
            self._save_changed(self._store)

    def _save_changed(self, store: SentStateStore) -> None:
        with self._lock:
            todo = {key: self._delivered[key] for key in self._unsaved if key in self._delivered}
            self._unsaved.clear()
        for key, sent in todo.items():
            try:
                store.save(key, sent)
            except OSError as exc:
                log.error("cannot save OTLP state of %s to %s: %s", key, store.path_for(key), exc)
                with self._lock:
                    self._unsaved.add(key)

    def _export(self, batch: list[Point]) -> Outcome:
        """In the worker thread: encode, then send; never raises."""
        try:
            data = Encoded(self.encoder.encode(batch), len(batch))
        except Exception:
            log.exception("OTLP: cannot encode a batch of %d point(s)", len(batch))
            return Outcome(False, False, "invalid")
        return self.transport.export(data)

    # --- accounting -------------------------------------------------------------------------

    def _drop(self, reason: str, count: int) -> None:
        if not count:
            return
        self.metrics.otlp_dropped_points.labels(reason).inc(count)
        if reason == "queue_full" and not self._dropping:
            self._dropping = True
            log.warning("OTLP queue full (%d points): dropping the oldest points until the collector catches up",
                        self.queue.max_points)

    def _log_failure(self, outcome: Outcome, what: str) -> None:
        level = logging.WARNING if outcome.reason != self._failing else logging.DEBUG
        self._failing = outcome.reason
        log.log(level, "OTLP export to %s failed (%s): %s", self.settings.endpoint, outcome.reason, what,
                extra={"reason": outcome.reason})

    def status(self) -> OtlpStatus:
        """Read from any thread (the status page's)."""
        return OtlpStatus(self.settings.endpoint, self.settings.protocol, len(self.queue) + self._in_flight,
                          self.queue.max_points, self._failing, self._last_success)

    def _update_queue_gauge(self) -> None:
        self.metrics.otlp_queue_points.set(len(self.queue) + self._in_flight)


def instance_id(listen: str) -> str:
    """`service.instance.id`: host name and /metrics port, stable across
    restarts (unlike a random id, which would start new series in the backend
    at every restart) and unique per host, as two exporters cannot share a
    port; a random id when the port is chosen at start (0)."""
    port = listen.rpartition(":")[2]
    if port in ("", "0"):
        return str(uuid.uuid4())
    return f"{socket.gethostname()}:{port}"
