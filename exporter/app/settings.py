"""The root of the configuration: the sections of `exporter.toml` and how they compose.

Each source module defines its own `[[sources]]` model and the OTLP sink its
`[otlp]` one; this module gathers them (it is part of the wiring, like
`application.py`), and `exporter.config.load` reads files and variables into it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from yarl import URL

from exporter.config.limits import LimitsConfig, ShardingConfig
from exporter.config.load import ConfigError, format_validation_error, read_document
from exporter.config.server import ServerConfig
from exporter.config.source import SourceConfigBase
from exporter.config.types import FieldError, ListenAddress, StrictModel
from exporter.sinks.otlp.config import OtlpConfig
from exporter.sources import REGISTRY
from exporter.sources.kit.http import proxy_for


class SimulatorConfig(StrictModel):
    """`[simulator]`: the built-in fake of every vendor API. It serves only the
    sources with neither a credential nor a `base_url`: it never receives a
    credential."""

    enabled: bool = Field(default=False, description="start the built-in simulator; it serves the sources that "
                                                     "set neither a credential nor base_url")
    listen: ListenAddress = Field(default="127.0.0.1:0", description="the simulator's own address (port 0: any)")
    seed: int = Field(default=1, description="its data is deterministic from the seed")
    freeze_time: float | None = Field(default=None, description="freeze the simulator's clock at this instant "
                                                                "(epoch seconds) for reproducible output")
    # Data only tests want (label values with quotes and newlines, colliding
    # tag keys): off, the demo looks like a product.
    hostile_fixtures: bool = Field(default=False, description="serve the test fixtures (hostile label values)")


class StateConfig(StrictModel):
    """`[state]`: where counters built from per-period counts survive restarts."""

    dir: Path | None = Field(default=None, description="directory of the period ledgers' state files; without "
                                                       "it a restart resets those counters")


def _source_union() -> Any:
    models = tuple(cls.config_model for cls in REGISTRY.values())
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007 - built at runtime


if TYPE_CHECKING:
    SourceConfig = SourceConfigBase  # every entry is one; the union is built at runtime
else:
    SourceConfig = _source_union()


class Settings(BaseSettings):
    """exporter.toml: the configuration of api-metrics-exporter (docs/configuration.md)."""

    # The loader refuses a config without sources (semantic_problems); so does the schema.
    model_config = SettingsConfigDict(extra="forbid", frozen=True, json_schema_extra={"required": ["sources"]})

    server: ServerConfig = Field(default=ServerConfig(), description="where and how /metrics is served")
    simulator: SimulatorConfig = Field(default=SimulatorConfig(), description="the built-in vendor API simulator")
    state: StateConfig = Field(default=StateConfig(), description="counter state across restarts")
    otlp: OtlpConfig = Field(default=OtlpConfig(), description="push polled points over OTLP")
    limits: LimitsConfig = Field(default=LimitsConfig(), description="caps over every target together")
    sharding: ShardingConfig = Field(default=ShardingConfig(), description="split the targets over replicas")
    sources: list[SourceConfig] = Field(default_factory=list, json_schema_extra={"minItems": 1},
                                        description="the vendor APIs polled, one [[sources]] table each")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML document and the environment are merged into init kwargs by
        # `load_settings`, because pydantic-settings' own env source cannot
        # address entries of a list (it silently ignores SOURCES__0__X).
        return (init_settings,)

    def uses_simulator(self, source: SourceConfigBase) -> bool:
        """Whether the built-in simulator serves the source: only when it is
        enabled and the source sets neither a credential nor a `base_url`, so
        that a real credential never reaches the simulator."""
        return self.simulator.enabled and source.base_url is None and source.secret() is None

    def endpoint(self, source: SourceConfigBase) -> str:
        """`simulator`, or the URL the source's requests go to."""
        if self.uses_simulator(source):
            return SIMULATOR
        return source.base_url or REGISTRY[source.type].default_base_url


SIMULATOR = "simulator"


def load_settings(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, merge and validate; raise ConfigError listing every problem."""
    document = read_document(path, os.environ if environ is None else environ)
    try:
        settings = Settings(**document.data)
    except ValidationError as exc:
        raise ConfigError(document.explain(format_validation_error(exc, REGISTRY, Settings))) from None
    except FieldError as exc:  # pragma: no cover - pydantic wraps it; kept for safety
        raise ConfigError([(exc.field, str(exc))]) from None
    problems = semantic_problems(settings)
    if problems:
        raise ConfigError(document.explain(problems))
    return settings


def semantic_problems(settings: Settings) -> list[tuple[str, str]]:
    """Checks that span several keys."""
    problems: list[tuple[str, str]] = []
    if not settings.sources:
        problems.append(("sources", "no sources: add at least one [[sources]] table "
                                    "(`api-metrics-exporter sample-config TYPE` prints one)"))
    try:
        settings.sharding.resolved_index()
    except ValueError as exc:
        problems.append(("sharding.index", str(exc)))
    seen: dict[str, int] = {}
    for index, source in enumerate(settings.sources):
        where = f"sources[{index}]"
        if source.name in seen:
            first = seen[source.name]
            problems.append((f"{where}.name", f"duplicate source name {source.name!r} (also sources[{first}])"))
        seen.setdefault(source.name, index)
        if not settings.uses_simulator(source) and source.secret() is None and source.secret_fields:
            field = source.secret_fields[0]
            problems.append((f"{where}.{field}", f"required (or {field}_file): the source is served by "
                             f"{settings.endpoint(source)}. The built-in simulator ([simulator] enabled = true) "
                             "serves only sources that set neither a credential nor base_url"))
        if not settings.uses_simulator(source):
            try:
                proxy_for(URL(settings.endpoint(source)))
            except ValueError as exc:  # names the variable
                problems.append((f"{where}.base_url", str(exc)))
    return problems
