"""Reading the config: the TOML file, `APIMETRICS_*` overrides, and errors that name the key.

Precedence, highest first: environment variables, then the TOML file, then the
model defaults. Nesting in variable names uses `__`; list entries of
`[[sources]]` are addressed by index or by name:

    APIMETRICS_SERVER__LISTEN=0.0.0.0:9000
    APIMETRICS_SOURCES__0__INTERVAL=30s
    APIMETRICS_SOURCES__K6_DEMO__TOKEN_FILE=/run/secrets/k6   # name: case-insensitive, - and . as _

Values that look like JSON lists or objects are parsed as JSON. Every problem
is reported with its key path (`sources[0].interval: ...`) in one `ConfigError`;
a problem caused by a variable names the variable first
(`APIMETRICS_SOURCES__0__INTERVL (sources[0].intervl): unknown key; did you
mean 'interval'?`), with the JSON error when its value was meant as JSON but
is not. Variable values are never quoted (they may be secrets).
The root model is `exporter.app.settings.Settings`; this module knows only
its shape's conventions (a `sources` list tagged by `type`).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from exporter.config.keys import unknown_key_message
from exporter.config.types import FieldError

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


@dataclass(frozen=True)
class EnvOrigin:
    """The variable that set a key path, and why its value was not read as JSON."""

    var: str
    json_error: str | None = None


@dataclass
class Document:
    """The config file's content with every `APIMETRICS_*` variable applied,
    and which variable set which key path (`sources[0].interval`)."""

    data: dict[str, Any]
    origins: dict[str, EnvOrigin] = field(default_factory=dict)

    def explain(self, details: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Name the variable behind each problem it caused."""
        return [self._explained(loc, message) for loc, message in details]

    def _explained(self, loc: str, message: str) -> tuple[str, str]:
        unknown = message.startswith("unknown key")
        causes = [(path, origin) for path, origin in self.origins.items()
                  if loc and (_under(loc, path) or (unknown and _under(path, loc)))]
        if not causes:
            return loc, message
        names = ", ".join(origin.var for _, origin in causes)
        for path, origin in causes:
            if origin.json_error is not None and _under(loc, path):
                message += f"; its value is not valid JSON: {origin.json_error}"
        return f"{names} ({loc})", message


def _under(loc: str, path: str) -> bool:
    """Whether key path `loc` is `path` or inside it."""
    return loc == path or loc.startswith((f"{path}.", f"{path}["))


def read_document(path: str | Path | None, environ: Mapping[str, str]) -> Document:
    """The config file's document with every `APIMETRICS_*` variable applied;
    raises ConfigError for an unreadable file or a variable naming nothing."""
    data = read_toml(resolve_config_path(path, environ), _looked_at(path, environ))
    document, env_errors = apply_env_overrides(data, environ)
    if env_errors:
        raise ConfigError(env_errors)
    return document


def resolve_config_path(path: str | Path | None, environ: Mapping[str, str]) -> Path:
    return Path(path or environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def _looked_at(path: str | Path | None, environ: Mapping[str, str]) -> str:
    """Where the config file was looked for, for "not found"."""
    if path:
        return f"--config {Path(path).absolute()}"
    if environ.get(CONFIG_ENV):
        return f"${CONFIG_ENV}={Path(environ[CONFIG_ENV]).absolute()} (--config not given)"
    return f"./{DEFAULT_CONFIG} in {os.getcwd()} (--config not given, ${CONFIG_ENV} not set)"


def read_toml(path: Path, looked_at: str | None = None) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        where = looked_at or str(path.absolute())
        raise ConfigError([("", f"config file not found: looked at {where}; point to one with --config PATH "
                                f"or {CONFIG_ENV}=PATH (`api-metrics-exporter sample-config TYPE` prints an example)")
                           ]) from None
    except OSError as exc:
        raise ConfigError([("", f"cannot read config file {path}: {exc.strerror or exc}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("", f"{path} is not valid TOML: {exc}")]) from None


def _env_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def _env_value(raw: str) -> tuple[Any, str | None]:
    """The value of a variable, and the JSON error when it looks like JSON
    but is not (it is then kept as a string: `[::1]:9687` is an address)."""
    text = raw.strip()
    if text[:1] in ("[", "{"):
        try:
            return json.loads(text), None
        except json.JSONDecodeError as exc:
            return raw, f"{exc.msg}: line {exc.lineno} column {exc.colno}"
    return raw, None


def apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> tuple[Document, list[tuple[str, str]]]:
    """The TOML document with every `APIMETRICS_*` variable applied."""
    document = Document(json.loads(json.dumps(data)))  # deep copy of plain TOML data
    errors: list[tuple[str, str]] = []
    for var in sorted(environ):
        if not var.upper().startswith(ENV_PREFIX) or var.upper() == CONFIG_ENV:
            continue
        parts = [p.lower() for p in var[len(ENV_PREFIX):].split("__")]
        if not all(parts):
            errors.append((var, "empty segment in variable name"))
            continue
        value, json_error = _env_value(environ[var])
        if parts[0] == "sources":
            if len(parts) < 3:
                errors.append((var, "use APIMETRICS_SOURCES__<index or name>__<key>"))
                continue
            sources = document.data.setdefault("sources", [])
            index = _find_source(sources, parts[1]) if isinstance(sources, list) else None
            if index is None:
                errors.append((var, f"no source with index or name {parts[1]!r}"))
                continue
            _set_path(sources[index], parts[2:], value)
            path = f"sources[{index}]." + ".".join(parts[2:])
        else:
            _set_path(document.data, parts, value)
            path = ".".join(parts)
        document.origins[path] = EnvOrigin(var, json_error)
    return document, errors


def _find_source(sources: list[Any], selector: str) -> int | None:
    """The index of the `[[sources]]` entry with this index or name."""
    if selector.isdigit():
        index = int(selector)
        return index if index < len(sources) and isinstance(sources[index], dict) else None
    for index, entry in enumerate(sources):
        if isinstance(entry, dict) and _env_name(str(entry.get("name", ""))) == selector.upper():
            return index
    return None


def _set_path(target: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        child = target.get(key)
        if not isinstance(child, dict):
            child = target[key] = {}
        target = child
    target[path[-1]] = value


def format_validation_error(
    exc: ValidationError, source_types: Collection[str], root: type[BaseModel]
) -> list[tuple[str, str]]:
    """`(key path, message)` per error; `source_types` are the valid `type`
    tags of `[[sources]]`, `root` the model validated (for "did you mean")."""
    details = []
    for error in exc.errors(include_url=False):
        loc = _format_loc(error["loc"], source_types)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = unknown_key_message(root, error["loc"])
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = f"{loc}.type"
            message = f"unknown source type {error['input'].get('type')!r}; one of: {', '.join(source_types)}"
            if error["type"] == "union_tag_not_found":
                message = f"required; one of: {', '.join(source_types)}"
        ctx_error = (error.get("ctx") or {}).get("error")
        if isinstance(ctx_error, FieldError):
            loc = f"{loc}.{ctx_error.field}" if loc else ctx_error.field
            message = str(ctx_error)
        details.append((loc, message))
    return details


def _format_loc(loc: tuple[Any, ...], source_types: Collection[str]) -> str:
    text = ""
    for index, part in enumerate(loc):
        if isinstance(part, int):
            text += f"[{part}]"
        elif index >= 2 and loc[index - 2] == "sources" and isinstance(loc[index - 1], int) and part in source_types:
            continue  # the discriminator tag pydantic inserts: `sources[0].k6_cloud.x`
        else:
            text += f".{part}" if text else str(part)
    return text
