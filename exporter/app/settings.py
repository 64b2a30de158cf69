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

from exporter.config.limits import LimitsConfig, ShardingConfig
from exporter.config.load import ConfigError, format_validation_error, read_document
from exporter.config.server import ServerConfig
from exporter.config.source import SourceConfigBase
from exporter.config.types import ListenAddress, SecretFileError, StrictModel
from exporter.sinks.otlp.config import OtlpConfig
from exporter.sources import REGISTRY


class SimulatorConfig(StrictModel):
    """The built-in fake of every vendor API; sources without `base_url` use it."""

    enabled: bool = False
    listen: ListenAddress = "127.0.0.1:0"
    seed: int = 1
    # Freeze the simulator's clock (epoch seconds) for reproducible output.
    freeze_time: float | None = None
    # Data only tests want (label values with quotes and newlines, colliding
    # tag keys): off, the demo looks like a product.
    hostile_fixtures: bool = False


class StateConfig(StrictModel):
    dir: Path | None = None


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
    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    server: ServerConfig = ServerConfig()
    simulator: SimulatorConfig = SimulatorConfig()
    state: StateConfig = StateConfig()
    otlp: OtlpConfig = OtlpConfig()
    limits: LimitsConfig = LimitsConfig()
    sharding: ShardingConfig = ShardingConfig()
    sources: list[SourceConfig] = Field(default_factory=list)

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
        return self.simulator.enabled and source.base_url is None


def load_settings(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, merge and validate; raise ConfigError listing every problem."""
    merged = read_document(path, os.environ if environ is None else environ)
    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, REGISTRY)) from None
    except SecretFileError as exc:  # pragma: no cover - pydantic wraps it; kept for safety
        raise ConfigError([(exc.field, str(exc))]) from None
    problems = semantic_problems(settings)
    if problems:
        raise ConfigError(problems)
    return settings


def semantic_problems(settings: Settings) -> list[tuple[str, str]]:
    """Checks that span several keys."""
    problems: list[tuple[str, str]] = []
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
            problems.append(
                (f"{where}.{field}", f"required (or {field}_file) unless the built-in simulator serves this source")
            )
    return problems
