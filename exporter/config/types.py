"""Reusable pieces of the config schema: durations, listen addresses, secrets.

Each type validates like the loader does and says so in the JSON Schema too
(`api-metrics-exporter config-schema`): a duration is a number of seconds or a
string such as `"5m"`, a secret `x` also has its `x_file` key.

Kept apart from the root settings (`exporter.app.settings`) so that each source
and sink can define its own config model from these pieces without importing
the root (which imports every source and sink).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, WithJsonSchema, model_validator

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


DURATION_PATTERN = r"^\s*(\d+(\.\d+)?|(\d+(\.\d+)?(ms|s|m|h|d))+)\s*$"
_DURATION_SCHEMA = {
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0},
        {"type": "string", "pattern": DURATION_PATTERN, "examples": ["30s", "5m", "1h30m", "500ms", "2d"]},
    ]
}
Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(_DURATION_SCHEMA)]


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


_LISTEN_SCHEMA = {"type": "string", "pattern": r"^(\[[0-9A-Fa-f:.]+\]|[^:\[\]]*):\d{1,5}$",
                  "examples": ["0.0.0.0:9687"]}
ListenAddress = Annotated[str, BeforeValidator(parse_listen), WithJsonSchema(_LISTEN_SCHEMA)]


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class StrictModel(BaseModel):
    """Unknown keys are errors everywhere in the config."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldError(ValueError):
    """A problem with one key of the model being validated; `field` names it
    (pydantic would otherwise name the whole table)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class SecretFileError(FieldError):
    """A `<field>_file` could not be read, or a secret is not usable."""


# Secrets travel in HTTP headers (and gRPC metadata): printable ASCII only.
# A secret outside it would either be cut at a line break (and its first line
# end up in an error message) or crash the client with a UnicodeEncodeError.
SECRET_PATTERN = r"^[ -~]+$"


def header_value_problem(value: str) -> str | None:
    """Why `value` cannot be sent as an HTTP header value, or None. Never
    quotes the value: it is a secret."""
    if not value:
        return "is empty"
    for index, char in enumerate(value, start=1):
        if char in "\r\n":
            return f"contains a line break (character {index}): a secret is one line"
        if not " " <= char <= "~":
            what = "a control character" if char < " " or char == "\x7f" else "a non-ASCII character"
            return f"contains {what} (character {index}): a secret sent in a header must be printable ASCII"
    return None


def check_secret(key: str, value: str) -> str:
    problem = header_value_problem(value)
    if problem is not None:
        raise SecretFileError(key, f"the secret {problem}; its value is not shown")
    return value


def _secret_schema(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """JSON Schema of a model with secrets: every secret `x` is printable ASCII
    and has an `x_file` twin; giving both is refused."""
    fields: tuple[str, ...] = getattr(model, "secret_fields", ())
    old = schema.get("properties", {})
    properties: dict[str, Any] = {}
    for name, prop in old.items():
        properties[name] = prop
        if name in fields:
            for option in prop.get("anyOf", [prop]):
                if option.get("type") == "string":
                    option["pattern"] = SECRET_PATTERN
            properties[f"{name}_file"] = {
                "type": "string",
                "description": f"a file whose content (trailing newline stripped) is `{name}`, "
                               "as Kubernetes and Docker mount secrets",
            }
    schema["properties"] = properties
    if fields:
        schema["allOf"] = [{"not": {"required": [name, f"{name}_file"]}} for name in fields]


class WithSecrets(StrictModel):
    """Every `SecretStr` field `x` also accepts `x_file`: a path whose content
    (trailing newline stripped, as Kubernetes secret files often have one) is the
    secret. Giving both is an error, so a forgotten value never wins silently.
    Secrets are checked at load (`header_value_problem`), never quoted."""

    model_config = ConfigDict(json_schema_extra=_secret_schema)
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

    @model_validator(mode="after")
    def _usable_secrets(self) -> WithSecrets:
        for name in self.secret_fields:
            value: SecretStr | None = getattr(self, name)
            if value is not None:
                check_secret(name, value.get_secret_value())
        return self


def read_secret_file(key: str, path: Any) -> str:
    """The secret in file `path` (given as `key`), checked like any secret."""
    try:
        raw = Path(str(path)).read_bytes()
    except OSError as exc:
        raise SecretFileError(key, f"cannot read {path}: {exc.strerror or exc}") from None
    secret = raw.decode("latin-1").rstrip("\r\n")
    if not secret:
        raise SecretFileError(key, f"{path} is empty")
    problem = header_value_problem(secret)
    if problem is not None:
        raise SecretFileError(key, f"the secret in {path} {problem}; its value is not shown")
    return secret


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return SecretStr in getattr(annotation, "__args__", ())


SourceName = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", description="unique name; the `source` label"),
]
