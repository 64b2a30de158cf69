"""The small protocol every upstream API implements.

Like prometheus_client's custom collectors all implement `collect()`, every
source implements `poll(target) -> list[Sample]`. A source knows its vendor's
HTTP API and nothing about Prometheus or OTLP.

What a source may use is handed to it in a `SourceContext`: its HTTP client,
the clock, and the period ledgers that turn per-period counts into counters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from exporter.config.source import SourceConfigBase
from exporter.errors import PollError
from exporter.ledger.registry import Ledgers
from exporter.model import Sample, TargetKey
from exporter.sources.kit.http import HttpClient
from exporter.sources.kit.ratelimit import RateBudget

ConfigT = TypeVar("ConfigT", bound=SourceConfigBase)


@dataclass(frozen=True, slots=True)
class Target:
    """One unit of polling: a k6 test run, a Bird flow, a Pluto run…"""

    source: str
    id: str

    @property
    def key(self) -> TargetKey:
        return TargetKey(self.source, self.id)


@dataclass(frozen=True)
class SourceContext:
    http: HttpClient
    clock: Callable[[], float]
    ledgers: Ledgers
    # report(source, target, error): a partial problem of a poll that still
    # succeeds; counted under error.reason, logged when it first appears.
    report: Callable[[str, str, PollError], None] = lambda source, target, error: None


class Source(Generic[ConfigT]):
    """Base class: holds the config and the context.

    Subclasses set `type`, `config_model`, `default_base_url`,
    `simulator_prefix` and `auth_scheme`, and implement `poll()`; a source
    whose targets come from the API (not from config) also overrides
    `discover()`.
    """

    config_model: ClassVar[type[SourceConfigBase]]
    type: ClassVar[str]
    default_base_url: ClassVar[str]
    simulator_prefix: ClassVar[str]
    # The Authorization header is `f"{auth_scheme} {secret}"`.
    auth_scheme: ClassVar[str]
    # Poll error reasons of this vendor beyond the base ones, so that their
    # counters exist (at 0) from the start.
    extra_reasons: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: ConfigT, context: SourceContext) -> None:
        self.config = config
        self.context = context
        self.http = context.http
        self.name = config.name

    @classmethod
    def rate_budget(cls, config: ConfigT, base_url: str) -> RateBudget | None:
        """The request budget every attempt of this source's HTTP client takes
        a token from, or None (no budget: the vendor documents no rate limit)."""
        return None

    @property
    def interval(self) -> float:
        return self.config.interval

    @property
    def poll_timeout(self) -> float:
        """Deadline of one poll (a source may derive it from its work)."""
        return self.config.poll_timeout

    @property
    def staleness_limit(self) -> float:
        """How long the series of the last successful poll stay served."""
        return self.config.staleness_limit

    def targets(self) -> list[Target]:
        """Targets named in the config."""
        return [Target(self.name, target_id) for target_id in self.config.target_ids()]

    @property
    def discovers(self) -> bool:
        """Whether this source lists its targets upstream (overrides discover)."""
        return type(self).discover is not Source.discover

    async def discover(self) -> list[Target] | None:
        """Targets found upstream, re-run every interval; None: config only."""
        return None

    async def poll(self, target: Target) -> list[Sample]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def backfills(self) -> bool:
        """Whether this source can fetch a target's history (overrides history)."""
        return type(self).history is not Source.history

    def check_range(self, since: float, until: float) -> None:
        """Raise ValueError naming the vendor's limit when [since, until] is past what it serves."""

    def history(self, target: Target, since: float, until: float) -> AsyncIterator[list[Sample]]:
        """A backfill: the target's points within [since, until], every one
        stamped with its vendor time (`Sample.history` holds all but the
        newest of a series), in pieces of at most one target's history, so
        memory stays bounded by one target. Uses the same requests, retries,
        rate budget and ledger rules as `poll`."""
        raise NotImplementedError(f"{self.type} has no backfill")

    def report(self, target: Target, error: PollError) -> None:
        """Count a partial problem of this poll without failing it."""
        self.context.report(self.name, target.id, error)

    def forget(self, target: Target) -> None:
        """Drop per-target state when a target goes away."""

    async def aclose(self) -> None:
        await self.http.aclose()


# A source of any type, as the runner and the app hold them.
AnySource = Source[Any]
