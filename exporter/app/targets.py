"""The sources of the config and the targets this replica polls.

A source is built from its config with its HTTP client (credential, rate
budget, retry counter); its targets come from the config or, for sources that
discover them (Pluto runs), from its API every interval. Each target is kept
only if this replica's shard owns it, gets a status in the runner and a poll
job on the poller; a target that goes away loses all three, its ledger and
its series.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable

from exporter.app.status import endpoint_of
from exporter.config.limits import LimitsConfig, shard_of
from exporter.config.source import SourceConfigBase
from exporter.errors import PollError
from exporter.ledger.registry import Ledgers
from exporter.logs import REDACTOR
from exporter.poller import Discovery, Poller
from exporter.runner import Runner
from exporter.selfmetrics import ProcessMetrics
from exporter.simulator import SIMULATOR_TOKEN
from exporter.sources import REGISTRY, Target
from exporter.sources.base import AnySource, SourceContext
from exporter.sources.kit.http import HttpClient
from exporter.sources.kit.inflight import ByteBudget, HostSlots

log = logging.getLogger(__name__)


class SourceBuildError(Exception):
    """A source that the config describes but that cannot be built here."""


class Targets:
    def __init__(
        self,
        runner: Runner,
        ledgers: Ledgers,
        metrics: ProcessMetrics,
        clock: Callable[[], float],
        shard: tuple[int, int] = (0, 1),
        simulator_url: str | None = None,
        limits: LimitsConfig | None = None,
    ) -> None:
        limits = limits or LimitsConfig()
        # Shared by every source's HTTP client (sources/kit/inflight.py).
        self.host_slots = HostSlots(limits.max_in_flight_per_host)
        self.body_budget = ByteBudget(limits.max_response_bytes_in_flight)
        self.runner = runner
        self.ledgers = ledgers
        self.metrics = metrics
        self.clock = clock
        self.shard, self.shards = shard
        self.simulator_url = simulator_url
        self.sources: list[AnySource] = []
        # Source name → where it is polled: its base URL, or "simulator" (the status page).
        self.endpoints: dict[str, str] = {}
        # Each source's targets by id, in the order they came: a source of
        # 10,000 targets is removed, and a discovery aligned, without a walk
        # over every other source's targets per target.
        self._targets: dict[int, dict[str, Target]] = {}
        # Set once the app starts: jobs are added from then on.
        self.poller: Poller | None = None

    @property
    def pairs(self) -> list[tuple[AnySource, Target]]:
        """Every (source, target) this replica polls."""
        return [(source, target) for source in self.sources for target in self.of(source)]

    def of(self, source: AnySource) -> list[Target]:
        return list(self._targets.get(id(source), {}).values())

    # --- sources ------------------------------------------------------------------------------

    def add_source(self, config: SourceConfigBase, served_by_simulator: bool) -> AnySource:
        """Build the source and add the targets its config names."""
        return self.adopt(self.make_source(config, served_by_simulator), served_by_simulator)

    def adopt(self, source: AnySource, served_by_simulator: bool) -> AnySource:
        """Add a source built by make_source, and the targets its config names."""
        if self.ledgers.persistent:
            self.metrics.state_save_failures.labels(source.name)  # at 0 from the start
        self.sources.append(source)
        self._targets[id(source)] = {}
        self.endpoints[source.name] = endpoint_of(None if served_by_simulator else
                                                  source.config.base_url or type(source).default_base_url)
        for target in source.targets():
            self._add(source, target)
        return source

    async def start_source(self, source: AnySource) -> None:
        """Discover its targets, then schedule their polls (and its discovery)."""
        await self.discover(source)
        if self.poller is None:
            return
        for target in self.of(source):
            self._schedule(source, target)
        if source.discovers:
            self.poller.add(Discovery(source.name), source.interval, self._discovery_job(source),
                            first_delay=source.interval)

    async def remove_source(self, source: AnySource) -> None:
        """Remove the source and its targets. Its polls in flight are
        cancelled, and waited for, before its HTTP client closes: a poll of
        a replaced source ends quietly, it does not fail on a closed client."""
        in_flight = [self._remove(source, target) for target in self.of(source)]
        if self.poller is not None:
            in_flight.append(self.poller.remove(Discovery(source.name)))
        tasks = [task for task in in_flight if task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self.sources.remove(source)
        self.endpoints.pop(source.name, None)
        del self._targets[id(source)]
        await source.aclose()

    async def close(self) -> None:
        for source in self.sources:
            await source.aclose()

    def make_source(self, config: SourceConfigBase, served_by_simulator: bool) -> AnySource:
        """The source with its HTTP client, not yet added: raises SourceBuildError
        when it cannot be built (nothing is changed then)."""
        cls = REGISTRY[config.type]
        secret = config.secret()
        token = secret.get_secret_value() if secret is not None else None
        if token is not None:  # a real credential; the simulator's placeholder below is none
            REDACTOR.add(token)
        if served_by_simulator:
            if self.simulator_url is None:
                raise SourceBuildError(f"source {config.name!r} has neither a credential nor base_url, so the "
                                       "built-in simulator would serve it, and it is not running ([simulator] "
                                       "is read only at start)")
            if token is not None:  # the rule of Settings.uses_simulator; never send a credential there
                raise SourceBuildError(f"source {config.name!r} has a credential: not sent to the simulator")
            base_url = f"{self.simulator_url}/{cls.simulator_prefix}"
            token = SIMULATOR_TOKEN
        else:
            base_url = config.base_url or cls.default_base_url
        headers = {}
        if token is not None:
            headers["Authorization"] = f"{cls.auth_scheme} {token}"
        http = HttpClient(
            base_url=base_url,
            config=config.http,
            headers=headers,
            source=config.name,
            on_retry=lambda reason: self.metrics.http_retries.labels(config.name, reason).inc(),
            budget=cls.rate_budget(config, base_url),
            host_slots=self.host_slots,
            body_budget=self.body_budget,
        )
        context = SourceContext(http=http, clock=self.clock, ledgers=self.ledgers, report=self.runner.report)
        return cls(config, context)

    # --- targets ------------------------------------------------------------------------------

    def owns(self, source: AnySource, target: Target) -> bool:
        """Whether this replica's shard polls the target."""
        return shard_of(source.name, target.id, self.shards) == self.shard

    async def discover(self, source: AnySource) -> bool:
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
        known = dict(self._targets[id(source)])
        wanted = {t.id: t for t in found}
        for target_id in known.keys() - wanted.keys():
            task = self._remove(source, known[target_id])
            if task is not None:
                task.cancel()  # its answer would no longer be shown
        for target_id in wanted.keys() - known.keys():
            if self._add(source, wanted[target_id]) and self.poller is not None and self.poller.running:
                self._schedule(source, wanted[target_id])
        return True

    def _add(self, source: AnySource, target: Target) -> bool:
        if not self.owns(source, target):
            return False
        self.runner.add(source, target)
        self._targets[id(source)][target.id] = target
        return True

    def _remove(self, source: AnySource, target: Target) -> asyncio.Task[None] | None:
        """Remove the target; returns its poll in flight, if any (cancelled by the caller)."""
        log.info("target %s removed (gone upstream or from the config); its series go too", target.key)
        in_flight = self.poller.remove(target.key) if self.poller is not None else None
        del self._targets[id(source)][target.id]
        self.runner.remove(target.key)
        self.ledgers.forget(source.name, target.id)
        source.forget(target)
        return in_flight

    def _schedule(self, source: AnySource, target: Target) -> None:
        assert self.poller is not None
        # Partials of plain functions, not closures or bound methods: fewer
        # objects a target for the cyclic garbage collector to walk.
        self.poller.add(target.key, source.interval, functools.partial(Runner.poll, self.runner, source, target),
                        on_overrun=functools.partial(Runner.overrun, self.runner, target.key))

    def _discovery_job(self, source: AnySource) -> Callable[[], Awaitable[None]]:
        async def discover() -> None:
            await self.discover(source)

        return discover
