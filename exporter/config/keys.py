"""The keys a table of the config accepts, for "did you mean" hints on unknown keys.

Pydantic says `Extra inputs are not permitted` and no more; this module walks
the config models along an error's location (`sources`, `0`, `k6_cloud`,
`intervall`) to the model of that table and suggests the nearest known key:
`intervall` → `interval`, `[[source]]` → `sources`.
"""

from __future__ import annotations

import difflib
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel


def known_keys(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """The keys accepted by the table that holds `loc[-1]`, or None when the
    location leads to no model (a free-form table such as `otlp.headers`)."""
    current: Any = root
    for part in loc[:-1]:
        current = _step(current, part)
        if current is None:
            return None
    models = _models(current)
    if len(models) != 1:
        return None
    model = models[0]
    keys: list[str] = []
    secrets: tuple[str, ...] = getattr(model, "secret_fields", ())
    for name in model.model_fields:
        keys.append(name)
        if name in secrets:
            keys.append(f"{name}_file")
    return keys


def unknown_key_message(root: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """`unknown key; did you mean 'interval'?`, or the keys that are valid there."""
    keys = known_keys(root, loc)
    if not keys or not isinstance(loc[-1], str):
        return "unknown key"
    close = difflib.get_close_matches(loc[-1], keys, n=1, cutoff=0.6)
    if not close:
        close = [key for key in keys if key.lower() == loc[-1].lower()]
    if close:
        return f"unknown key; did you mean '{close[0]}'?"
    return f"unknown key; valid here: {', '.join(keys)}"


def _unwrap(annotation: Any) -> list[Any]:
    """The alternatives of an annotation: Annotated and Optional removed, unions split."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _unwrap(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [alt for arg in get_args(annotation) for alt in _unwrap(arg) if alt is not type(None)]
    return [annotation]


def _models(annotation: Any) -> list[type[BaseModel]]:
    return [alt for alt in _unwrap(annotation) if isinstance(alt, type) and issubclass(alt, BaseModel)]


def _step(annotation: Any, part: Any) -> Any:
    """The annotation one location part further down, or None."""
    alternatives = _unwrap(annotation)
    if isinstance(part, int):
        for alt in alternatives:
            if get_origin(alt) in (list, tuple) and get_args(alt):
                return get_args(alt)[0]
        return None
    models = _models(annotation)
    # A tagged union: pydantic puts the tag (`k6_cloud`) in the location.
    tagged = [model for model in models if _tag(model) == part]
    if tagged:
        return tagged[0]
    for model in models:
        if part in model.model_fields:
            return model.model_fields[part].annotation
    for alt in alternatives:
        if get_origin(alt) is dict:
            return get_args(alt)[1]
    return None


def _tag(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("type")
    if field is None or get_origin(field.annotation) is not Literal:
        return None
    values = get_args(field.annotation)
    return values[0] if len(values) == 1 and isinstance(values[0], str) else None
