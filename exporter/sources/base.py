"""The small protocol every upstream API implements.

Like prometheus_client's custom collectors all implement `collect()`, every
source implements `poll(target) -> list[Sample]`. A source knows its vendor's
HTTP API and nothing about Prometheus or OTLP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from exporter.configtypes import SourceConfigBase
from exporter.http import HttpClient
from exporter.model import Sample

ConfigT = TypeVar("ConfigT", bound=SourceConfigBase)


@dataclass(frozen=True, slots=True)
class Target:
    """One unit of polling: a k6 test run, a Bird flow, a Pluto run…"""

    source: str
    id: str

    @property
    def key(self) -> str:
        return f"{self.source}/{self.id}"


class Source(Generic[ConfigT]):
    """Base class: holds the config and the source's HTTP client.

    Subclasses set `type`, `config_model`, `default_base_url` and
    `simulator_prefix`, and implement `targets()` and `poll()`.
    """

    type: ClassVar[str]
    config_model: ClassVar[type[SourceConfigBase]]
    default_base_url: ClassVar[str]
    simulator_prefix: ClassVar[str]
    # How the credential is sent: header name and value template.
    auth_scheme: ClassVar[str]

    def __init__(self, config: ConfigT, http: HttpClient) -> None:
        self.config = config
        self.http = http
        self.name = config.name

    def targets(self) -> list[Target]:
        return [Target(self.name, target_id) for target_id in self.config.target_ids()]

    async def poll(self, target: Target) -> list[Sample]:  # pragma: no cover - abstract
        raise NotImplementedError

    async def aclose(self) -> None:
        await self.http.aclose()
