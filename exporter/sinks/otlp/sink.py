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
from typing import Any, TypeVar

from exporter import __version__
from exporter.logs import REDACTOR
from exporter.model import Change, SeriesKey, Snapshot, TargetKey
from exporter.selfmetrics import ProcessMetrics
from exporter.sinks.otlp.config import OtlpConfig
from exporter.sinks.otlp.points import Point, build_resource, new_points, scope
from exporter.sinks.otlp.transport import Encoded, Outcome, Transport, resolve
from exporter.sinks.otlp.wire import WireEncoder

log = logging.getLogger(__name__)

T = TypeVar("T")


class PointQueue:
    """A FIFO of points bounded by `max_points`: adding past the bound drops
    the oldest, and says how many."""

    def __init__(self, max_points: int) -> None:
        self.max_points = max_points
        self._points: deque[Point] = deque()

    def __len__(self) -> int:
        return len(self._points)

    def put(self, points: Iterable[Point]) -> int:
        self._points.extend(points)
        return self._trim()

    def put_back(self, points: list[Point]) -> int:
        """Return a batch that could not be sent to the head, where it was."""
        self._points.extendleft(reversed(points))
        return self._trim()

    def take(self, count: int) -> list[Point]:
        return [self._points.popleft() for _ in range(min(count, len(self._points)))]

    def _trim(self) -> int:
        dropped = 0
        while len(self._points) > self.max_points:
            self._points.popleft()
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
        # Per target: the newest vendor time sent per series, and when to forget it.
        self._sent: dict[TargetKey, tuple[dict[SeriesKey, int], float]] = {}
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
            return
        if snapshot.change is not Change.POLLED:
            return  # only polls bring vendor points; the target's own series are not pushed
        with self._lock:
            self._take(snapshot)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _take(self, snapshot: Snapshot) -> None:
        key = snapshot.key
        sent = self._sent.get(key, ({}, 0.0))[0]
        points, newest = new_points(snapshot.samples, snapshot.taken_at, self._started_at, sent)
        if self._stopped:  # a poll that ended after the flush
            self._drop("shutdown", len(points))
            return
        self._sent[key] = (newest, snapshot.taken_at + 2 * snapshot.max_staleness)
        now = snapshot.taken_at
        for gone in [k for k, (_, forget_at) in self._sent.items() if forget_at < now]:
            del self._sent[gone]  # a target not polled successfully for long
        self._drop("queue_full", self.queue.put(points))
        self._update_queue_gauge()

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
            batch = self.queue.take(self.config.max_batch_points)
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
                self._drop("queue_full", self.queue.put_back(batch))
            self._log_failure(outcome, f"retrying; {len(self.queue)} point(s) queued")
        else:
            if outcome.reason != "invalid":
                self.metrics.otlp_exported_points.labels("rejected").inc(size)
            self._drop("invalid" if outcome.reason == "invalid" else "rejected", size)
            self._log_failure(outcome, f"{size} point(s) dropped (not retryable)")
        self._update_queue_gauge()
        return outcome

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
