"""A commented example config for one source type, generated from its model.

`api-metrics-exporter sample-config TYPE` prints it. As printed it is a whole
config that the built-in simulator serves (the keys in the model's `sample`,
values the simulator knows); every other key follows commented out, with its
default (or an example) and its description, so that uncommenting a line
gives a valid key. Generated rather than written by hand, so that it cannot
fall behind the models.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from exporter.config.source import SourceConfigBase
from exporter.config.types import parse_duration

WIDTH = 88
_UNITS = (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 0.001))


def sample_config(model: type[SourceConfigBase], source_type: str, default_base_url: str) -> str:
    """The example config (TOML with comments) for sources of `model`."""
    name = source_type.replace("_", "-")
    env = f"APIMETRICS_SOURCES__{name.upper().replace('-', '_')}__"
    lines = [
        *_comment(f"A `{source_type}` source: {_about(model)}. Printed by `api-metrics-exporter sample-config "
                  f"{source_type}`; every key is in docs/configuration.md.", "#"),
        "#",
        *_comment("As printed, the built-in simulator serves it: `api-metrics-exporter once --config FILE` shows "
                  "its metrics. For the real API give a credential (below): a source with a credential or a "
                  "base_url is always served by the vendor, never by the simulator.", "#"),
        "",
        "[simulator]",
        "enabled = true",
        "",
        "[[sources]]",
        f"type = {_toml(source_type)}",
        f"name = {_toml(name)}",
    ]
    for key, value in model.sample.items():
        lines += [*_comment(_description(model.model_fields[key]), "##"), f"{key} = {_toml(value)}"]
    lines += ["", "## The real API: a credential (or its environment variable) and, if not the vendor's, base_url."]
    for secret in model.secret_fields:
        field = model.model_fields[secret]
        lines += [*_comment(f"{_description(field)}; or {secret} = \"...\", or {env}{secret.upper()}", "##"),
                  f"# {secret}_file = {_toml(f'/run/secrets/{name}')}"]
    lines += [*_comment(_description(model.model_fields["base_url"]), "##"),
              f"# base_url = {_toml(default_base_url)}", "", "## Optional keys, with their defaults."]
    done = {"type", "name", "base_url", *model.secret_fields, *model.sample}
    tables = []
    for key, field in model.model_fields.items():
        if key in done:
            continue
        if isinstance(field.default, BaseModel):
            tables.append((key, field))
            continue
        lines += [*_comment(_description(field), "##"), f"# {key} = {_toml(_shown_value(key, field))}"]
    for key, field in tables:
        lines += ["", *_comment(_description(field), "##"), f"# [sources.{key}]"]
        nested: BaseModel = field.default
        for sub, sub_field in type(nested).model_fields.items():
            lines += [*_comment(_description(sub_field), "##"),
                      f"# {sub} = {_toml(_shown_value(sub, sub_field, getattr(nested, sub)))}"]
    return "\n".join(lines) + "\n"


def _about(model: type[BaseModel]) -> str:
    return _description(model.model_fields["type"]).rstrip(".")


def _description(field: FieldInfo) -> str:
    return field.description or ""


def _comment(text: str, prefix: str) -> list[str]:
    if not text:
        return []
    return [f"{prefix} {line}" for line in textwrap.wrap(text, WIDTH - len(prefix) - 1, break_on_hyphens=False)]


def _shown_value(key: str, field: FieldInfo, value: Any = PydanticUndefined) -> Any:
    """The value a commented-out key shows: an example, else its default."""
    if field.examples:
        return field.examples[0]
    if value is PydanticUndefined:
        value = field.get_default(call_default_factory=True)
    if value is None or value is PydanticUndefined:
        raise ValueError(f"{key}: give the field a default or examples=[...] for the sample config")
    if _is_duration(field) and isinstance(value, (int, float)):
        return _duration_text(float(value))
    return value


def _is_duration(field: FieldInfo) -> bool:
    return any(getattr(meta, "func", None) is parse_duration for meta in field.metadata)


def _duration_text(seconds: float) -> str:
    """`60.0` → `"60s"`, `3600.0` → `"1h"`, `0.5` → `"500ms"`: the largest unit
    that divides it, seconds below five minutes (`"60s"` reads better than `"1m"`)."""
    for unit, size in _UNITS:
        count = seconds / size
        if unit == "m" and seconds < 300:
            continue
        if count >= 1 and abs(count - round(count)) < 1e-9:
            return f"{round(count)}{unit}"
    return f"{seconds:g}"


def _toml(value: Any) -> str:
    """A TOML value: strings as JSON strings (a subset of TOML basic strings),
    lists as arrays, tables inline."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(k)} = {_toml(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _toml_key(key: Any) -> str:
    text = str(key)
    if text.replace("_", "").replace("-", "").isalnum() and text.isascii():
        return text
    return json.dumps(text)
