"""Reading vendor bodies: shared by every source, so each failure reads alike.

- `parse_payload`: a pydantic model at the edge, or `InvalidResponse` naming
  the first field that did not fit;
- `read_body`: the same straight from the response bytes, for the bulky
  answers (series, data points). pydantic-core decodes and validates in one
  pass into TypedDicts; that costs about 1.2x a bare `json.loads`, where
  `json.loads` + BaseModel instances cost 4-5x (benchmarks/bench.py poll);
- `list_field`: a list under a key of an object, or `InvalidResponse`;
- `json_or_none`: an error body decoded if it is JSON (proxies send HTML);
- `without_lone_surrogates`: JSON may escape half of a UTF-16 pair
  (`"\ud800"`, what a JavaScript string cut mid-character serialises to; k6
  tags come from JavaScript). Such a string cannot be written as UTF-8, so the
  exposition and OTLP could not carry it: it becomes U+FFFD here, at the
  edge, in both decoding paths;
- `coded_error`: the `{"error": {"code": <int>, ...}}` envelope k6 and the
  Graph API share. Only the vendor's own envelope carries a numeric `code`; a
  proxy's or load balancer's error page must not be read as the vendor speaking.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from exporter.errors import InvalidResponse

ModelT = TypeVar("ModelT", bound=BaseModel)
T = TypeVar("T")


def parse_payload(model: type[ModelT], data: Any, what: str) -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc, what) from None


def read_body(adapter: TypeAdapter[T], body: bytes, what: str) -> T:
    try:
        return adapter.validate_json(body)
    except ValidationError as exc:
        # pydantic-core refuses lone surrogate escapes as invalid JSON; the
        # standard library reads them, and they are cleaned like any other.
        if exc.errors()[0]["type"] != "json_invalid" or not has_surrogate_escapes(body):
            raise _invalid(exc, what) from None
    try:
        data = decode_json(body)
    except ValueError as exc:
        raise InvalidResponse(f"{what}: body is not JSON ({exc})") from None
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        raise _invalid(exc, what) from None


def decode_json(body: bytes) -> Any:
    """`json.loads`, with lone surrogates replaced (see the module docstring).
    Raises ValueError (or UnicodeDecodeError) when the body is not JSON."""
    payload = json.loads(body)
    return without_lone_surrogates(payload) if has_surrogate_escapes(body) else payload


def has_surrogate_escapes(body: bytes) -> bool:
    # Two memchr-speed scans; true for valid escaped pairs (emoji) too, which
    # only costs the walk below.
    return b"\\ud" in body or b"\\uD" in body


def without_lone_surrogates(data: Any) -> Any:
    if isinstance(data, str):
        try:
            data.encode()
        except UnicodeEncodeError:
            return data.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return data
    if isinstance(data, list):
        return [without_lone_surrogates(item) for item in data]
    if isinstance(data, dict):
        return {without_lone_surrogates(key): without_lone_surrogates(value) for key, value in data.items()}
    return data


def _invalid(exc: ValidationError, what: str) -> InvalidResponse:
    first = exc.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return InvalidResponse(f"{what}: body is not JSON ({first['msg']})")
    where = ".".join(str(part) for part in first["loc"])
    return InvalidResponse(f"{what}: {where}: {first['msg']}")


def list_field(payload: Any, key: str, what: str) -> list[Any]:
    if not isinstance(payload, dict) or not isinstance(payload.get(key), list):
        raise InvalidResponse(f"{what}: expected an object with a list {key!r}")
    items: list[Any] = payload[key]
    return items


def json_or_none(body: bytes) -> Any:
    try:
        return decode_json(body)
    except (ValueError, UnicodeDecodeError):
        return None


def coded_error(body: bytes) -> dict[str, Any] | None:
    payload = json_or_none(body)
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return None
    code = error.get("code")
    return error if isinstance(code, int) and not isinstance(code, bool) else None
