"""Wires the application: config → poller → sources → runner → snapshots → sinks.

    Settings ──► Targets (sources, their HTTP clients, sharding)
                    │ poll jobs on the Poller
                    ▼
                 Runner ──Snapshot──► PrometheusSink ──► /metrics (WebServer)
                                  └─► OtlpSink ──► collector

This is the one module (with the command line and the root settings) that
knows every part by name; the parts know each other only through the
protocols between them (`Source`, `Sink`, the web server's `AppView`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from exporter.app.heap import settle_heap
from exporter.app.reload import plan_reload
from exporter.app.settings import Settings
from exporter.app.status import otlp_view, target_views
from exporter.app.targets import SourceBuildError, Targets
from exporter.config.load import ConfigError
from exporter.ledger.registry import Ledgers
from exporter.logs import REDACTOR
from exporter.model import Sink
from exporter.poller import Chore, Poller
from exporter.runner import Runner, TargetStatus
from exporter.selfmetrics import ProcessMetrics
from exporter.sinks.prometheus import PrometheusSink
from exporter.sources import Target
from exporter.sources.base import AnySource
from exporter.web import WebServer
from exporter.web.status import ProcessView, ReloadView, TargetView

if TYPE_CHECKING:
    from exporter.sinks.otlp.sink import OtlpSink

log = logging.getLogger(__name__)

CONFIG_WATCH_SECONDS = 5.0
# How often targets without a successful poll for max_staleness lose their series.
EXPIRY_SECONDS = 1.0


def config_stamp(path: str) -> tuple[str, int, int] | None:
    """Identity of the file behind `path`: its real path (a ConfigMap update
    swaps the `..data` symlink), inode and mtime; None when it is missing."""
    real = os.path.realpath(path)
    try:
        info = os.stat(real)
    except OSError:
        return None
    return real, info.st_ino, info.st_mtime_ns


class App:
    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        config_path: str | None = None,
        simulator_url: str | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.clock = clock
        self.loop: asyncio.AbstractEventLoop | None = None
        # The process-wide self-metrics; every other series reaches the sinks in snapshots.
        self.registry = CollectorRegistry(auto_describe=False)
        self.metrics = ProcessMetrics(self.registry)
        self.ledgers = Ledgers(settings.state.dir, clock,
                               lambda source: self.metrics.state_save_failures.labels(source).inc())
        self.prometheus = PrometheusSink(self.registry)
        sinks: list[Sink] = [self.prometheus]
        self.otlp: OtlpSink | None = None
        if settings.otlp.enabled:
            from exporter.sinks.otlp.sink import OtlpSink, instance_id  # grpc and the OTel SDK load only when used

            self.otlp = OtlpSink(settings.otlp, self.metrics, instance_id(settings.server.listen),
                                 state_dir=settings.state.dir)
            sinks.append(self.otlp)
        self.runner = Runner(sinks, self.ledgers, clock, settings.limits)
        self.shard = (settings.sharding.resolved_index(), settings.sharding.total)
        self.metrics.shard_info.labels(str(self.shard[0]), str(self.shard[1])).set(1)
        self.target_set = Targets(self.runner, self.ledgers, self.metrics, clock, self.shard, simulator_url,
                                  settings.limits)
        self.web: WebServer | None = None
        self.poller: Poller | None = None
        self._config_stamp: tuple[str, int, int] | None = None
        self.started_at = clock()
        # The config was loaded before the app was made: that is its first load.
        self.last_reload = ReloadView(True, self.started_at, None, self.started_at)

    @property
    def sources(self) -> list[AnySource]:
        return self.target_set.sources

    @property
    def targets(self) -> list[tuple[AnySource, Target]]:
        return self.target_set.pairs

    # --- lifecycle ------------------------------------------------------------------------------

    def build(self) -> None:
        """Create every source and the targets its config names."""
        for config in self.settings.sources:
            self.target_set.add_source(config, self.settings.uses_simulator(config))
            log.info("source %s (%s): %s", config.name, config.type, self.settings.endpoint(config),
                     extra={"source": config.name})
        log.info("%d source(s), %d target(s) configured", len(self.sources), len(self.targets))

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.build()
        if self.otlp is not None:
            self.otlp.start()
        server = self.settings.server
        self.web = WebServer.from_config(server, self, registry=self.registry)
        self.web.start()
        log.info("serving /metrics on %s (port %d)", server.listen, self.web.port)
        self.poller = self.target_set.poller = Poller()
        for source in self.sources:
            await self.target_set.start_source(source)
        self.poller.add(Chore("expiry"), EXPIRY_SECONDS, self._expire, first_delay=EXPIRY_SECONDS)
        if server.watch_config and self.config_path is not None:
            self._config_stamp = config_stamp(self.config_path)
            self.poller.add(Chore("config-watch"), CONFIG_WATCH_SECONDS, self._watch_config,
                            first_delay=CONFIG_WATCH_SECONDS)
        self.poller.start()
        self._reloaded(None)

    async def stop(self) -> None:
        if self.poller is not None:  # cancels the polls in flight, quietly, and waits for them
            await self.poller.shutdown()
        if self.otlp is not None:  # flush within otlp.shutdown_grace, /metrics still served meanwhile
            await self.otlp.stop()
        if self.web is not None:
            self.web.stop()
        await self.target_set.close()

    async def poll_all(self) -> bool:
        """Discover, then poll every target once, concurrently; True when all succeeded."""
        discovered = [await self.target_set.discover(source) for source in self.sources]
        results = await asyncio.gather(*(self.runner.poll(s, t) for s, t in self.targets))
        return all(results) and all(discovered)

    async def discover(self, source: AnySource) -> bool:
        return await self.target_set.discover(source)

    async def _expire(self) -> None:
        self.runner.expire()

    # --- reload ---------------------------------------------------------------------------------

    async def _watch_config(self) -> None:
        stamp = config_stamp(self.config_path) if self.config_path is not None else None
        if stamp != self._config_stamp:
            self._config_stamp = stamp
            log.info("config file %s changed: reloading", self.config_path)
            await self.reload()

    async def reload(self) -> str | None:
        """Re-read the config file; apply it if valid (see app/reload.py).
        Returns the error, or None."""
        # The daemon froze its heap (app/heap.py): what a reload drops
        # (sources, their HTTP clients) must be collectable again, so
        # unfreeze, and settle again once the reload is done.
        frozen = gc.get_freeze_count() > 0
        if frozen:
            gc.unfreeze()
        try:
            return await self._reload()
        except Exception as exc:
            self._reloaded(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if frozen:
                settle_heap()

    async def _reload(self) -> str | None:
        """All or nothing: the new config is validated and every new or
        changed source is built before anything running is touched."""
        from exporter.app.settings import load_settings

        try:
            new = load_settings(self.config_path)
        except ConfigError as exc:
            return self._reload_failed(str(exc))
        plan = plan_reload(self.settings, new, self.sources)
        built: list[tuple[AnySource, bool]] = []
        try:
            for config in plan.start:
                # The file as written decides who serves a source; [simulator]
                # itself waits for a restart, so a source it would serve fails here.
                simulated = new.uses_simulator(config)
                built.append((self.target_set.make_source(config, simulated), simulated))
        except Exception as exc:  # any failure to build leaves the running config as it is
            for source, _ in built:
                await source.aclose()
            if not isinstance(exc, SourceBuildError):
                log.error("config reload: building a source failed", exc_info=exc)
                return self._reload_failed(f"a source cannot be built ({type(exc).__name__}; see the log)")
            return self._reload_failed(str(exc))
        if plan.waiting:
            log.warning("config reload: changes to %s take effect only after a restart", ", ".join(plan.waiting))
        for old in plan.stop:
            await self.target_set.remove_source(old)
        self.settings = plan.settings
        for source, simulated in built:
            self.target_set.adopt(source, simulated)
            if self.poller is not None:
                await self.target_set.start_source(source)
        self._reloaded(None)
        log.info("config reloaded: %d source(s), %d target(s)", len(self.sources), len(self.targets))
        return None

    def _reload_failed(self, error: str) -> str:
        """A failed reload: recorded (masked) for the metric and the status page, and logged."""
        masked = self._reloaded(error) or error
        log.error("config reload failed, the previous config keeps running: %s", masked)
        return masked

    def _reloaded(self, error: str | None) -> str | None:
        """Record a (re)load's outcome for the metrics and the status page; the error, masked."""
        now = self.clock()
        if error is None:
            self.metrics.reload_success.set(1)
            self.metrics.reload_timestamp.set(now)
            self.last_reload = ReloadView(True, now, None, now)
            return None
        error = REDACTOR.redact(error)
        self.metrics.reload_success.set(0)
        self.last_reload = ReloadView(False, now, error, self.last_reload.last_success_timestamp)
        return error

    def reload_from_thread(self, timeout: float = 60.0) -> str | None:
        """For the HTTP thread (`POST /-/reload`): run reload() on the event loop."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(self.reload(), self.loop).result(timeout)

    # --- what the web endpoints read ------------------------------------------------------------

    def metrics_body(self, accept: str | None, accept_encoding: str | None) -> tuple[list[bytes], dict[str, str]]:
        return self.prometheus.body(accept, accept_encoding)

    def statuses(self) -> list[TargetStatus]:
        """Every target's status, ordered by (source, target): sorted once per change of targets."""
        return self.runner.ordered()

    def target_views(self) -> list[TargetView]:
        next_runs = self.poller.next_runs() if self.poller is not None else {}
        return target_views(self.target_set.pairs, self.runner.status, self.target_set.endpoints, next_runs)

    def process_view(self) -> ProcessView:
        otlp = otlp_view(self.otlp, self.registry) if self.otlp is not None else None
        return ProcessView(self.clock(), self.started_at, self.last_reload, otlp, *self.shard)

    def ready(self) -> bool:
        return self.runner.ready

    def exposition(self, accept: str = "text/plain") -> bytes:
        """The whole uncompressed body after expiring stale targets: for `once`, tests and humans."""
        self.runner.expire()
        return self.prometheus.text(accept)
