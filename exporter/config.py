"""The configuration: `exporter.toml` + `APIMETRICS_*` environment + secret files.

Precedence, highest first: environment variables, then the TOML file, then the
model defaults. Nesting in variable names uses `__`; list entries of
`[[sources]]` are addressed by index or by name:

    APIMETRICS_SERVER__LISTEN=0.0.0.0:9000
    APIMETRICS_SOURCES__0__INTERVAL=30s
    APIMETRICS_SOURCES__K6_DEMO__TOKEN_FILE=/run/secrets/k6   # name: case-insensitive, - and . as _

Values that look like JSON lists or objects are parsed as JSON. Every problem
is reported with its key path (`sources[0].interval: ...`) in one `ConfigError`.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from exporter.configtypes import Duration, ListenAddress, SecretFileError, SourceConfigBase, StrictModel
from exporter.limits import LimitsConfig, ShardingConfig
from exporter.otlpconfig import OtlpConfig
from exporter.sources import REGISTRY
from exporter.web.auth import BasicAuthConfig, TlsConfig

ENV_PREFIX = "APIMETRICS_"
CONFIG_ENV = "APIMETRICS_CONFIG"
DEFAULT_CONFIG = "exporter.toml"


class ConfigError(Exception):
    """An invalid configuration; `details` are `(key path, message)` pairs."""

    def __init__(self, details: list[tuple[str, str]]) -> None:
        self.details = details
        super().__init__("; ".join(f"{loc}: {msg}" if loc else msg for loc, msg in details))

    def lines(self) -> list[str]:
        return [f"{loc}: {msg}" if loc else msg for loc, msg in self.details]


class ServerConfig(StrictModel):
    listen: ListenAddress = "0.0.0.0:9687"
    tls: TlsConfig | None = None
    basic_auth: BasicAuthConfig | None = None
    # POST /-/reload, like Prometheus' --web.enable-lifecycle.
    enable_lifecycle: bool = False
    # Reload when the config file changes, checked every few seconds. Follows
    # symlinks, so a Kubernetes ConfigMap update (an atomic symlink swap) counts.
    watch_config: bool = False
    # What one client can make the server hold. Prometheus' flag names where
    # it has one (--web.max-connections, --web.read-timeout), else Go's
    # http.Server field names (IdleTimeout, MaxHeaderBytes).
    max_connections: int = Field(default=1024, ge=1)
    # TLS handshake plus the request head, from the connection's start (or
    # from the first byte of a later request on a kept-alive connection).
    read_timeout: Duration = 10.0
    # A kept-alive connection with no request in progress is closed after this.
    idle_timeout: Duration = 75.0
    # The answer must be written (read by the client) within this of the head's end.
    write_timeout: Duration = 120.0
    # Request line plus every header, in bytes; and the number of headers.
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    max_headers: int = Field(default=100, ge=1)


class SimulatorConfig(StrictModel):
    """The built-in fake of every vendor API; sources without `base_url` use it."""

    enabled: bool = False
    listen: ListenAddress = "127.0.0.1:0"
    seed: int = 1
    # Freeze the simulator's clock (epoch seconds) for reproducible output.
    freeze_time: float | None = None


class StateConfig(StrictModel):
    dir: Path | None = None


def _source_union() -> Any:
    models = tuple(cls.config_model for cls in REGISTRY.values())
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007 - built at runtime


SourceConfig = _source_union()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    server: ServerConfig = ServerConfig()
    simulator: SimulatorConfig = SimulatorConfig()
    state: StateConfig = StateConfig()
    otlp: OtlpConfig = OtlpConfig()
    limits: LimitsConfig = LimitsConfig()
    sharding: ShardingConfig = ShardingConfig()
    sources: list[SourceConfig] = Field(default_factory=list)  # type: ignore[valid-type]

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
    environ = os.environ if environ is None else environ
    document = read_toml(resolve_config_path(path, environ))
    merged, env_errors = apply_env_overrides(document, environ)
    if env_errors:
        raise ConfigError(env_errors)
    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    except SecretFileError as exc:  # pragma: no cover - pydantic wraps it; kept for safety
        raise ConfigError([(exc.field, str(exc))]) from None
    problems = semantic_problems(settings)
    if problems:
        raise ConfigError(problems)
    return settings


def resolve_config_path(path: str | Path | None, environ: Mapping[str, str]) -> Path:
    return Path(path or environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError([("", f"config file {path} not found")]) from None
    except OSError as exc:
        raise ConfigError([("", f"cannot read config file {path}: {exc.strerror or exc}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("", f"{path} is not valid TOML: {exc}")]) from None


def _env_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def _env_value(raw: str) -> Any:
    text = raw.strip()
    if text[:1] in ("[", "{"):
        try:
            return json.loads(text)
        except ValueError:
            return raw
    return raw


def apply_env_overrides(
    document: dict[str, Any], environ: Mapping[str, str]
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The TOML document with every `APIMETRICS_*` variable applied."""
    merged = json.loads(json.dumps(document))  # deep copy of plain TOML data
    errors: list[tuple[str, str]] = []
    for var in sorted(environ):
        if not var.upper().startswith(ENV_PREFIX) or var.upper() == CONFIG_ENV:
            continue
        parts = [p.lower() for p in var[len(ENV_PREFIX):].split("__")]
        if not all(parts):
            errors.append((var, "empty segment in variable name"))
            continue
        value = _env_value(environ[var])
        if parts[0] == "sources":
            if len(parts) < 3:
                errors.append((var, "use APIMETRICS_SOURCES__<index or name>__<key>"))
                continue
            entry = _find_source(merged.setdefault("sources", []), parts[1])
            if entry is None:
                errors.append((var, f"no source with index or name {parts[1]!r}"))
                continue
            _set_path(entry, parts[2:], value)
        else:
            _set_path(merged, parts, value)
    return merged, errors


def _find_source(sources: list[Any], selector: str) -> dict[str, Any] | None:
    if selector.isdigit():
        index = int(selector)
        return sources[index] if index < len(sources) and isinstance(sources[index], dict) else None
    for entry in sources:
        if isinstance(entry, dict) and _env_name(str(entry.get("name", ""))) == selector.upper():
            return entry
    return None


def _set_path(target: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        child = target.get(key)
        if not isinstance(child, dict):
            child = target[key] = {}
        target = child
    target[path[-1]] = value


def format_validation_error(exc: ValidationError) -> list[tuple[str, str]]:
    details = []
    for error in exc.errors(include_url=False):
        loc = _format_loc(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = f"{loc}.type"
            message = f"unknown source type {error['input'].get('type')!r}; one of: {', '.join(REGISTRY)}"
            if error["type"] == "union_tag_not_found":
                message = f"required; one of: {', '.join(REGISTRY)}"
        ctx_error = (error.get("ctx") or {}).get("error")
        if isinstance(ctx_error, SecretFileError):
            loc = f"{loc}.{ctx_error.field}" if loc else ctx_error.field
            message = str(ctx_error)
        details.append((loc, message))
    return details


def _format_loc(loc: tuple[Any, ...]) -> str:
    text = ""
    for index, part in enumerate(loc):
        if isinstance(part, int):
            text += f"[{part}]"
        elif index >= 2 and loc[index - 2] == "sources" and isinstance(loc[index - 1], int) and part in REGISTRY:
            continue  # the discriminator tag pydantic inserts: `sources[0].k6_cloud.x`
        else:
            text += f".{part}" if text else str(part)
    return text


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
            problems.append((f"{where}.name", f"duplicate source name {source.name!r} (also sources[{seen[source.name]}])"))
        seen.setdefault(source.name, index)
        if not settings.uses_simulator(source) and source.secret() is None and source.secret_fields:
            field = source.secret_fields[0]
            problems.append(
                (f"{where}.{field}", f"required (or {field}_file) unless the built-in simulator serves this source")
            )
    return problems
