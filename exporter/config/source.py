"""Config keys every `[[sources]]` entry has, whatever its type, and its `http` table.

Each source module defines its own model on top of `SourceConfigBase` (one
module per upstream API); the root settings gather them into a tagged union
on `type`.
"""

from __future__ import annotations

from pydantic import Field, SecretStr

from exporter.config.types import Duration, SourceName, StrictModel, WithSecrets


class HttpConfig(StrictModel):
    """HTTP behaviour of one source's client (timeouts, retries, limits)."""

    connect_timeout: Duration = 5.0
    read_timeout: Duration = 30.0
    retries: int = Field(default=3, ge=0, le=10)
    backoff: Duration = 0.5
    max_backoff: Duration = 30.0
    max_retry_after: Duration = 60.0
    max_response_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # Requests of this source in flight at once; more wait their turn (a
    # burst of thousands of polls never queues in the connection pool).
    max_in_flight: int = Field(default=32, ge=1, le=1024)


class SourceConfigBase(WithSecrets):
    """Keys every `[[sources]]` entry has, whatever its type."""

    type: str
    name: SourceName
    interval: Duration = 60.0
    timeout: Duration | None = None
    max_staleness: Duration | None = None
    base_url: str | None = None
    # Series one target may export; past it new series are dropped and counted.
    max_series: int = Field(default=10_000, ge=1)
    http: HttpConfig = HttpConfig()

    @property
    def poll_timeout(self) -> float:
        """Deadline of one poll: explicit, else the interval (a poll must end
        before the next is due)."""
        return self.timeout if self.timeout is not None else self.interval

    @property
    def staleness_limit(self) -> float:
        return self.max_staleness if self.max_staleness is not None else 3 * self.interval

    def target_ids(self) -> list[str]:  # pragma: no cover - every source overrides
        raise NotImplementedError

    def secret(self) -> SecretStr | None:
        """The source's credential, whatever the field is called."""
        for name in self.secret_fields:
            value: SecretStr | None = getattr(self, name)
            if value is not None:
                return value
        return None
