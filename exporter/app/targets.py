"""The sources of the config and the targets this replica polls.

A source is built from its config with its HTTP client (credential, rate
budget, retry counter); its targets come from the config or, for sources that
discover them (Pluto runs), from its API every interval. Each target is kept
only if this replica's shard owns it, gets a status in the runner and a poll
job on the poller; a target that goes away loses all three, its ledger and
its series.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from exporter.app.status import endpoint_of
from exporter.config.limits import shard_of
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
    ) -> None:
        self.runner = runner
        self.ledgers = ledgers
        self.metrics = metrics
        self.clock = clock
        self.shard, self.shards = shard
        self.simulator_url = simulator_url
        self.sources: list[AnySource] = []
        self.pairs: list[tuple[AnySource, Target]] = []
        # Source name → where it is polled: its base URL, or "simulator" (the status page).
        self.endpoints: dict[str, str] = {}
        # Set once the app starts: jobs are added from then on.
        self.poller: Poller | None = None

    # --- sources ------------------------------------------------------------------------------

    def add_source(self, config: SourceConfigBase, served_by_simulator: bool) -> AnySource:
        """Build the source and add the targets its config names."""
        return self.adopt(self.make_source(config, served_by_simulator), served_by_simulator)

    def adopt(self, source: AnySource, served_by_simulator: bool) -> AnySource:
        """Add a source built by make_source, and the targets its config names."""
        self.sources.append(source)
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
        for owner, target in self.pairs:
            if owner is source:
                self._schedule(source, target)
        if source.discovers:
            self.poller.add(Discovery(source.name), source.interval, self._discovery_job(source),
                            first_delay=source.interval)

    async def remove_source(self, source: AnySource) -> None:
        for owner, target in [(s, t) for s, t in self.pairs if s is source]:
            self._remove(owner, target)
        if self.poller is not None:
            self.poller.remove(Discovery(source.name))
        self.sources.remove(source)
        self.endpoints.pop(source.name, None)
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
        known = {t.id: t for s, t in self.pairs if s is source}
        wanted = {t.id: t for t in found}
        for target_id in known.keys() - wanted.keys():
            self._remove(source, known[target_id])
        for target_id in wanted.keys() - known.keys():
            if self._add(source, wanted[target_id]) and self.poller is not None and self.poller.running:
                self._schedule(source, wanted[target_id])
        return True

    def _add(self, source: AnySource, target: Target) -> bool:
        if not self.owns(source, target):
            return False
        self.runner.add(source, target)
        self.pairs.append((source, target))
        return True

    def _remove(self, source: AnySource, target: Target) -> None:
        log.info("target %s removed (gone upstream or from the config); its series go too", target.key)
        if self.poller is not None:
            self.poller.remove(target.key)
        self.pairs.remove((source, target))
        self.runner.remove(target.key)
        self.ledgers.forget(source.name, target.id)
        source.forget(target)

    def _schedule(self, source: AnySource, target: Target) -> None:
        assert self.poller is not None
        key = target.key

        async def poll() -> None:
            await self.runner.poll(source, target)

        self.poller.add(key, source.interval, poll, on_overrun=lambda: self.runner.overrun(key))

    def _discovery_job(self, source: AnySource) -> Callable[[], Awaitable[None]]:
        async def discover() -> None:
            await self.discover(source)

        return discover
