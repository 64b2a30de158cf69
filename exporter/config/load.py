"""Reading the config: the TOML file, `APIMETRICS_*` overrides, and errors that name the key.

Precedence, highest first: environment variables, then the TOML file, then the
model defaults. Nesting in variable names uses `__`; list entries of
`[[sources]]` are addressed by index or by name:

    APIMETRICS_SERVER__LISTEN=0.0.0.0:9000
    APIMETRICS_SOURCES__0__INTERVAL=30s
    APIMETRICS_SOURCES__K6_DEMO__TOKEN_FILE=/run/secrets/k6   # name: case-insensitive, - and . as _

Values that look like JSON lists or objects are parsed as JSON. Every problem
is reported with its key path (`sources[0].interval: ...`) in one `ConfigError`.
The root model is `exporter.app.settings.Settings`; this module knows only
its shape's conventions (a `sources` list tagged by `type`).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from exporter.config.types import SecretFileError

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


def read_document(path: str | Path | None, environ: Mapping[str, str]) -> dict[str, Any]:
    """The config file's document with every `APIMETRICS_*` variable applied;
    raises ConfigError for an unreadable file or a variable naming nothing."""
    document = read_toml(resolve_config_path(path, environ))
    merged, env_errors = apply_env_overrides(document, environ)
    if env_errors:
        raise ConfigError(env_errors)
    return merged


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


def format_validation_error(exc: ValidationError, source_types: Collection[str]) -> list[tuple[str, str]]:
    """`(key path, message)` per error; `source_types` are the valid `type` tags of `[[sources]]`."""
    details = []
    for error in exc.errors(include_url=False):
        loc = _format_loc(error["loc"], source_types)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = f"{loc}.type"
            message = f"unknown source type {error['input'].get('type')!r}; one of: {', '.join(source_types)}"
            if error["type"] == "union_tag_not_found":
                message = f"required; one of: {', '.join(source_types)}"
        ctx_error = (error.get("ctx") or {}).get("error")
        if isinstance(ctx_error, SecretFileError):
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
