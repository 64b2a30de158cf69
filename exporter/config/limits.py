"""`[limits]` and `[sharding]`: caps over every target together, and which
share of the targets this replica polls.

Sharding splits targets over N replicas by rendezvous hashing of
`(source name, target id)`: every target has exactly one owner, and growing
from N to N+1 shards moves only the targets the new shard wins (about 1/(N+1)).
"""

from __future__ import annotations

import hashlib
import os
import re

from pydantic import Field, model_validator

from exporter.config.types import StrictModel


def default_response_budget() -> int:
    """256 MiB, or an eighth of the machine's memory when that is less."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 0
    return min(256 * 2**20, memory // 8) if memory > 0 else 256 * 2**20


class LimitsConfig(StrictModel):
    """`[limits]`: caps over every target together."""

    max_series: int = Field(default=100_000, ge=1, description="series all targets together may export")
    max_label_bytes: int = Field(default=1024, ge=16, description="longer label values are cut (UTF-8 safe)")
    max_in_flight_per_host: int = Field(default=64, ge=1, le=4096,
                                        description="requests in flight at once to one upstream host, all sources "
                                                    "together")
    max_response_bytes_in_flight: int = Field(
        default_factory=default_response_budget, ge=1024 * 1024,
        description="response bytes being read at once, all targets together (default 256 MiB, or an eighth of "
                    "the memory when that is less); past it answers wait, or fail as response_too_large")


class ShardingConfig(StrictModel):
    """`[sharding]`: this replica is shard `index` of `total`.

    `index_from_hostname = true` takes the index from the trailing number of
    the host name (a StatefulSet pod `api-metrics-exporter-2` is shard 2)."""

    total: int = Field(default=1, ge=1, description="number of shards")
    index: int = Field(default=0, ge=0, description="this replica's shard, below total")
    index_from_hostname: bool = Field(default=False, description="take the index from the host name's trailing "
                                                                 "number (StatefulSet pod ...-2 is shard 2)")

    @model_validator(mode="after")
    def _index_in_range(self) -> ShardingConfig:
        if not self.index_from_hostname and self.index >= self.total:
            raise ValueError(f"index {self.index} must be below total {self.total}")
        return self

    def resolved_index(self, hostname: str | None = None) -> int:
        if not self.index_from_hostname:
            return self.index
        name = hostname if hostname is not None else os.environ.get("HOSTNAME") or os.uname().nodename
        match = re.search(r"-(\d+)$", name)
        if match is None:
            raise ValueError(f"sharding.index_from_hostname: host name {name!r} does not end in -<number>")
        index = int(match.group(1))
        if index >= self.total:
            raise ValueError(f"sharding: host name {name!r} gives index {index}, not below total {self.total}")
        return index


def shard_of(source: str, target: str, total: int) -> int:
    """Rendezvous (highest random weight) hashing: stable, and minimal moves."""
    if total == 1:
        return 0
    key = f"{source}\x00{target}".encode()
    weights = [hashlib.blake2b(key + shard.to_bytes(4, "big"), digest_size=8).digest() for shard in range(total)]
    return max(range(total), key=weights.__getitem__)
