"""Reusable pieces of the config schema: durations, listen addresses, secrets.

Kept apart from the root settings (`exporter.app.settings`) so that each source
and sink can define its own config model from these pieces without importing
the root (which imports every source and sink).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Seconds from `30`, `"30s"`, `"5m"`, `"1h30m"`, `"500ms"`, `"2d"`."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m, 1h or a number of seconds")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(
                    f"invalid duration {value!r}: use a number of seconds or units ms, s, m, h, d (e.g. 30s, 5m, 1h)"
                ) from None
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    else:
        raise ValueError("expected a duration such as 30s, 5m, 1h or a number of seconds")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration must be positive, got {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def parse_listen(value: Any) -> str:
    """`host:port` (IPv6 as `[::1]:9687`), port 0-65535."""
    if not isinstance(value, str):
        raise ValueError("expected host:port")
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid listen address {value!r}: expected host:port, e.g. 0.0.0.0:9687")
    if host.startswith("[") != host.endswith("]"):
        raise ValueError(f"invalid listen address {value!r}")
    return value


ListenAddress = Annotated[str, BeforeValidator(parse_listen)]


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class StrictModel(BaseModel):
    """Unknown keys are errors everywhere in the config."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretFileError(ValueError):
    """A `<field>_file` could not be read; `field` names the config key."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class WithSecrets(StrictModel):
    """Every `SecretStr` field `x` also accepts `x_file`: a path whose content
    (trailing newline stripped, as Kubernetes secret files often have one) is the
    secret. Giving both is an error, so a forgotten value never wins silently."""

    secret_fields: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.secret_fields = tuple(
            name for name, field in cls.model_fields.items() if _is_secret(field.annotation)
        )

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name in cls.secret_fields:
            key = f"{name}_file"
            if key not in data:
                continue
            path = data.pop(key)
            if data.get(name) is not None:
                raise SecretFileError(key, f"give either {name} or {key}, not both")
            data[name] = read_secret_file(key, path)
        return data


def read_secret_file(key: str, path: Any) -> str:
    try:
        text = Path(str(path)).read_text(encoding="utf-8")
    except OSError as exc:
        raise SecretFileError(key, f"cannot read {path}: {exc.strerror or exc}") from None
    secret = text.rstrip("\r\n")
    if not secret:
        raise SecretFileError(key, f"{path} is empty")
    return secret


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return SecretStr in getattr(annotation, "__args__", ())


SourceName = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", description="unique name; the `source` label"),
]
