"""Reading vendor bodies: shared by every source, so each failure reads alike.

- `parse_payload`: a pydantic model at the edge, or `InvalidResponse` naming
  the first field that did not fit;
- `read_body`: the same straight from the response bytes, for the bulky
  answers (series, data points). pydantic-core decodes and validates in one
  pass into TypedDicts; that costs about 1.2x a bare `json.loads`, where
  `json.loads` + BaseModel instances cost 4-5x (benchmarks/bench.py poll);
- `list_field`: a list under a key of an object, or `InvalidResponse`;
- `json_or_none`: an error body decoded if it is JSON (proxies send HTML);
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
        raise _invalid(exc, what) from None


def _invalid(exc: ValidationError, what: str) -> InvalidResponse:
    first = exc.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return InvalidResponse(f"{what}: body is not JSON ({first['msg']})")
    where = ".".join(str(part) for part in first["loc"])
    return InvalidResponse(f"{what}: {where}: {first['msg']}")


def list_field(payload: Any, key: str, what: str) -> list[Any]:
    if not isinstance(payload, dict) or not isinstance(payload.get(key), list):
        raise InvalidResponse(f"{what}: expected an object with a list {key!r}")
    return payload[key]


def json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def coded_error(body: bytes) -> dict[str, Any] | None:
    payload = json_or_none(body)
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return None
    code = error.get("code")
    return error if isinstance(code, int) and not isinstance(code, bool) else None
