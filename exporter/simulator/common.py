"""What the simulator's server and its vendor fakes share: requests, responses, faults, the clock."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

SIMULATOR_TOKEN = "simulator-token"


@dataclass(frozen=True)
class SimRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    received_at: float

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class SimResponse:
    status: int
    body: Any = None  # JSON-serialisable, or bytes sent as is
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body, ensure_ascii=False).encode()


@dataclass
class Fault:
    """Applied to the next `times` requests whose `path?query` matches `path` (a regex)."""

    path: str = ".*"
    kind: str = "status"
    times: int = 1
    status: int = 503
    retry_after: float | None = None
    delay: float = 0.0
    key: str | None = None  # lone_surrogate: the JSON key whose string values are cut; set: the key to set
    value: Any = None  # set: the new value of every `key` in the answer
    size: int = 0  # padding: the answer's size in bytes

    # lone_surrogate: the string values of `key` in the real answer (all of
    # them without a key) end with the escape of half a UTF-16 pair
    # (`"...\\ud800"`), as a JavaScript string cut mid-character serialises.
    # set: every `key` at any depth of the real JSON answer gets `value`, so a
    # test breaks a vendor's data, not its protocol (a failing k6 threshold:
    # key "tainted", value true; a NaN Pluto point: key "valueFlag", "NaN").
    # padding: the real answer followed by spaces up to `size` bytes (still
    # valid JSON), for the memory bounds on large answers.
    KINDS = ("status", "rate_limit", "latency", "malformed", "truncated", "lone_surrogate", "set", "padding")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(self.KINDS)}")
        if self.kind == "set" and not self.key:
            raise ValueError("a 'set' fault needs the 'key' whose values it sets")
        re.compile(self.path)


class Vendor(Protocol):
    """One fake API. `handle` sees paths with the vendor prefix removed."""

    prefix: str

    def handle(self, request: SimRequest) -> SimResponse: ...


class Clock:
    """Wall time, or a frozen instant tests and demos can set."""

    def __init__(self, frozen: float | None = None) -> None:
        self.frozen = frozen

    def __call__(self) -> float:
        return self.frozen if self.frozen is not None else time.time()


def is_sim_token(value: str) -> bool:
    return value.endswith(SIMULATOR_TOKEN)


def bearer_token(request: SimRequest, scheme: str) -> str | None:
    """The credential after `scheme` in the Authorization header, if any."""
    header = request.headers.get("authorization", "")
    expected = f"{scheme} "
    return header[len(expected):] if header.startswith(expected) else None


def deterministic(seed: int, *parts: object) -> float:
    """A stable pseudo-random number in [0, 1) from the seed and the parts."""
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


Handler = Callable[[SimRequest, re.Match[str]], SimResponse]
