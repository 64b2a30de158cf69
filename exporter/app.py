"""Wires config → sources → scheduler → runner → store → sinks, and back down."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from exporter.config import Settings
from exporter.configtypes import SourceConfigBase
from exporter.http import HttpClient
from exporter.logs import REDACTOR
from exporter.runner import Runner, TargetStatus
from exporter.scheduler import Scheduler
from exporter.selfmetrics import SelfMetrics
from exporter.simulator import SIMULATOR_TOKEN, Simulator
from exporter.sinks.prometheus import exposition, render
from exporter.errors import PollError
from exporter.ledgers import Ledgers
from exporter.limits import shard_of
from exporter.sources import REGISTRY, Source, Target
from exporter.sources.base import SourceContext
from exporter.store import Store, Stored
from exporter.web import WebServer

if TYPE_CHECKING:
    from exporter.sinks.otlp import OtlpSink

log = logging.getLogger(__name__)

CONFIG_WATCH_SECONDS = 5.0


def config_stamp(path: str) -> tuple[str, int, int] | None:
    """Identity of the file behind `path`: its real path (a ConfigMap update
    swaps the `..data` symlink), inode and mtime; None when it is missing."""
    real = os.path.realpath(path)
    try:
        info = os.stat(real)
    except OSError:
        return None
    return real, info.st_ino, info.st_mtime_ns



def freeze_startup_heap() -> None:
    """Move everything alive after start-up out of the cyclic collector's reach.

    Modules, pydantic schemas, the config and the sources live as long as the
    process, yet every full (generation 2) collection walked them again: a
    15-25 ms pause every ten or so k6 polls (`benchmarks/bench.py poll`).
    After `gc.freeze()` full collections only walk what polls allocated
    since. The daemon calls this after `App.start()` and each reload (which
    unfreezes first, so that what it drops can be collected); tests that
    build many apps in one process do not."""
    gc.collect()
    gc.freeze()

class App:
    def __init__(
        self, settings: Settings, clock: Callable[[], float] = time.time, config_path: str | None = None
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.loop: asyncio.AbstractEventLoop | None = None
        self.clock = clock
        # The registry holds the exporter's own metrics; vendor series are
        # pre-rendered in the store (see sinks/prometheus.py).
        self.registry = CollectorRegistry(auto_describe=False)
        self.store = Store(on_expire=self._expired)
        self.metrics = SelfMetrics(self.registry)
        self.ledgers = Ledgers(settings.state.dir, clock)
        self.registry.register(self.ledgers)
        self.runner = Runner(self.store, self.metrics, self.ledgers, clock, settings.limits)
        self.shard = settings.sharding.resolved_index()
        self.metrics.shard_info.labels(str(self.shard), str(settings.sharding.total)).set(1)
        # OTLP push: the sink gets every new snapshot from the runner.
        self.otlp: OtlpSink | None = None
        if settings.otlp.enabled:
            from exporter.sinks.otlp import OtlpSink, instance_id  # grpc and the OTel SDK load only when used

            self.otlp = OtlpSink(settings.otlp, self.metrics, instance_id(settings.server.listen))
            self.runner.listeners.append(self.otlp.on_snapshot)
        self.simulator: Simulator | None = None
        self.sources: list[Source] = []
        self.targets: list[tuple[Source, Target]] = []
        self.web: WebServer | None = None
        self._config_stamp: tuple[str, int, int] | None = None
        self._scheduler: Scheduler | None = None

    # --- lifecycle ------------------------------------------------------------

    def build(self) -> None:
        """Start the simulator if configured and create every source and target."""
        if self.settings.simulator.enabled and self.simulator is None:
            sim = self.settings.simulator
            self.simulator = Simulator(sim.listen, seed=sim.seed, freeze_time=sim.freeze_time).start()
            log.info("simulator serving the vendor APIs on %s", self.simulator.url)
        for config in self.settings.sources:
            source = self._make_source(config)
            self.sources.append(source)
            for target in source.targets():
                self._add_target(source, target)
        log.info("%d source(s), %d target(s) configured", len(self.sources), len(self.targets))

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.build()
        if self.otlp is not None:
            self.otlp.start()
        self.web = WebServer.from_config(self.settings.server, self, registry=self.registry)
        self.web.start()
        log.info("serving /metrics on %s (port %d)", self.settings.server.listen, self.web.port)
        self._scheduler = Scheduler(on_overrun=self._overrun)
        for source in self.sources:
            await self._start_source(source)
        if self.settings.server.watch_config and self.config_path is not None:
            self._config_stamp = config_stamp(self.config_path)
            self._scheduler.add("(config-watch)", CONFIG_WATCH_SECONDS, self._watch_config, first_delay=CONFIG_WATCH_SECONDS)
        self._scheduler.start()
        self.metrics.reload_success.set(1)
        self.metrics.reload_timestamp.set(self.clock())

    async def _start_source(self, source: Source) -> None:
        assert self._scheduler is not None
        await self.discover(source)
        for owner, target in self.targets:
            if owner is source:
                self._schedule(source, target)
        if source.discovers:
            self._scheduler.add(f"{source.name}/(discovery)", source.config.interval, self._discovery_job(source),
                                first_delay=source.config.interval)

    async def _watch_config(self) -> None:
        stamp = config_stamp(self.config_path) if self.config_path is not None else None
        if stamp != self._config_stamp:
            self._config_stamp = stamp
            log.info("config file %s changed: reloading", self.config_path)
            await self.reload()

    async def reload(self) -> str | None:
        """Re-read the config file; apply it if valid. Sources whose config is
        unchanged keep their targets, snapshots, counters and schedule; removed
        ones disappear; new or changed ones start. Returns the error, or None."""
        # The daemon froze its start-up heap: what a reload drops (sources,
        # their HTTP clients) must be collectable again, so unfreeze, and
        # freeze what is then alive once the reload is done.
        frozen = gc.get_freeze_count() > 0
        if frozen:
            gc.unfreeze()
        try:
            return await self._reload()
        finally:
            if frozen:
                freeze_startup_heap()

    async def _reload(self) -> str | None:
        from exporter.config import ConfigError, load_settings

        try:
            new = load_settings(self.config_path)
        except ConfigError as exc:
            self.metrics.reload_success.set(0)
            log.error("config reload failed, the previous config keeps running: %s", exc)
            return str(exc)
        fixed = [key for key in ("server", "simulator", "state", "otlp", "limits", "sharding")
                 if getattr(new, key) != getattr(self.settings, key)]
        if fixed:
            log.warning("config reload: changes to %s take effect only after a restart", ", ".join(fixed))
        old = {source.name: source for source in self.sources}
        wanted = {config.name: config for config in new.sources}
        for name, source in old.items():
            if name not in wanted or wanted[name] != source.config_as_loaded:
                for owner, target in [(s, t) for s, t in self.targets if s is source]:
                    self._remove_target(owner, target)
                if self._scheduler is not None:
                    self._scheduler.remove(f"{name}/(discovery)")
                self.sources.remove(source)
                await source.aclose()
        self.settings = new.model_copy(update={key: getattr(self.settings, key) for key in fixed})
        for name, config in wanted.items():
            if name in old and old[name] in self.sources:
                continue
            source = self._make_source(config)
            self.sources.append(source)
            for target in source.targets():
                self._add_target(source, target)
            if self._scheduler is not None:
                await self._start_source(source)
        self.metrics.reload_success.set(1)
        self.metrics.reload_timestamp.set(self.clock())
        log.info("config reloaded: %d source(s), %d target(s)", len(self.sources), len(self.targets))
        return None

    def reload_from_thread(self, timeout: float = 60.0) -> str | None:
        """For the HTTP thread (`POST /-/reload`): run reload() on the event loop."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(self.reload(), self.loop).result(timeout)

    async def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown()
        if self.otlp is not None:  # flush within otlp.shutdown_grace, /metrics still served meanwhile
            await self.otlp.stop()
        if self.web is not None:
            self.web.stop()
        for source in self.sources:
            await source.aclose()
        if self.simulator is not None:
            self.simulator.stop()

    async def poll_all(self) -> bool:
        """Discover, then poll every target once, concurrently; True when all succeeded."""
        discovered = [await self.discover(source) for source in self.sources]
        results = await asyncio.gather(*(self.runner.poll(s, t) for s, t in self.targets))
        return all(results) and all(discovered)

    async def discover(self, source: Source) -> bool:
        """Align the source's targets with what its API lists; False on failure
        (the known targets are then kept as they are)."""
        try:
            found = await source.discover()
        except PollError as exc:
            self.metrics.discovery_errors.labels(source.name, exc.reason).inc()
            log.warning("target discovery of %s failed (%s): %s", source.name, exc.reason, exc.message,
                        extra={"source": source.name, "reason": exc.reason})
            return False
        if found is None:
            return True
        self.metrics.discovered_targets.labels(source.name).set(len(found))
        known = {t.id: t for s, t in self.targets if s is source}
        wanted = {t.id: t for t in found}
        for target_id in known.keys() - wanted.keys():
            self._remove_target(source, known[target_id])
        for target_id in wanted.keys() - known.keys():
            if not self.owns(source, wanted[target_id]):
                continue
            self._add_target(source, wanted[target_id])
            if self._scheduler is not None and self._scheduler.running:
                self._schedule(source, wanted[target_id])
        return True

    # --- what the web endpoints read (exporter.web.AppView) -------------------------

    def metrics_body(self, accept: str | None, accept_encoding: str | None) -> tuple[list[bytes], dict[str, str]]:
        return render(self.store, self.registry, accept, accept_encoding, self.clock)

    def statuses(self) -> list[TargetStatus]:
        return list(self.runner.status.values())

    def ready(self) -> bool:
        return all(status.tried for status in self.runner.status.values())

    # --- helpers ------------------------------------------------------------------

    def _make_source(self, config: SourceConfigBase) -> Source:
        cls = REGISTRY[config.type]
        secret = config.secret()
        if self.settings.uses_simulator(config):
            assert self.simulator is not None
            base_url = self.simulator.base_url(cls.simulator_prefix)
            token = secret.get_secret_value() if secret is not None else SIMULATOR_TOKEN
        else:
            base_url = config.base_url or cls.default_base_url
            token = secret.get_secret_value() if secret is not None else None
        headers = {}
        if token is not None:
            REDACTOR.add(token)
            headers["Authorization"] = f"{cls.auth_scheme} {token}"
        http = HttpClient(
            base_url=base_url,
            config=config.http,
            headers=headers,
            source=config.name,
            on_retry=lambda reason: self.metrics.http_retries.labels(config.name, reason).inc(),
        )
        context = SourceContext(http=http, clock=self.clock, ledgers=self.ledgers, report=self.runner.report)
        source = cls(config, context)
        # Sources may refine their config (Flux derives timeouts); reload
        # compares against what was loaded.
        source.config_as_loaded = config
        return source

    def owns(self, source: Source, target: Target) -> bool:
        """Whether this replica's shard polls the target."""
        return shard_of(source.name, target.id, self.settings.sharding.total) == self.shard

    def _add_target(self, source: Source, target: Target) -> None:
        if not self.owns(source, target):
            return
        self.runner.add(source, target)
        self.targets.append((source, target))

    def _remove_target(self, source: Source, target: Target) -> None:
        log.info("target %s removed (gone upstream or from the config); its series go too", target.key)
        if self._scheduler is not None:
            self._scheduler.remove(target.key)
        self.targets.remove((source, target))
        self.runner.remove(source.name, target.id)
        self.ledgers.forget(source.name, target.id)
        source.forget(target)

    def _schedule(self, source: Source, target: Target) -> None:
        assert self._scheduler is not None

        async def poll() -> None:
            await self.runner.poll(source, target)

        self._scheduler.add(target.key, source.config.interval, poll)

    def _discovery_job(self, source: Source) -> Callable[[], object]:
        async def discover() -> None:
            await self.discover(source)

        return discover

    def _overrun(self, job_id: str) -> None:
        source, _, target = job_id.partition("/")
        self.runner.overrun(source, target)

    def exposition(self, accept: str = "text/plain") -> bytes:
        return exposition(self.store, self.registry, accept, self.clock)

    def _expired(self, snapshot: Stored) -> None:
        self.metrics.snapshots_expired.labels(snapshot.source, snapshot.target).inc()
        self.metrics.target_series.labels(snapshot.source, snapshot.target).set(0)
        self.runner.publish_self(snapshot.source, snapshot.target)
        log.warning("dropped the snapshot of %s/%s: no successful poll for %.0fs (max_staleness)",
                    snapshot.source, snapshot.target, self.clock() - snapshot.taken_at)
