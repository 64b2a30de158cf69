"""Config keys every `[[sources]]` entry has, whatever its type, and its `http` table.

Each source module defines its own model on top of `SourceConfigBase` (one
module per upstream API); the root settings gather them into a tagged union
on `type`.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, WithJsonSchema, field_validator

from exporter.config.types import Duration, SourceName, StrictModel, WithSecrets

# The loader's check is `url_problem`; the schema says the gist of it.
ApiRoot = Annotated[str, WithJsonSchema({"type": "string", "format": "uri", "pattern": r"^https?://[^\s/?#]+[^\s?#]*$",
                                         "examples": ["https://api.example.com"]})]


class HttpConfig(StrictModel):
    """HTTP behaviour of one source's client (timeouts, retries, limits)."""

    connect_timeout: Duration = Field(default=5.0, description="TCP/TLS connect timeout")
    read_timeout: Duration = Field(default=30.0, description="timeout waiting for response bytes")
    retries: int = Field(default=3, ge=0, le=10,
                         description="retries after the first attempt, on connection errors, timeouts, 5xx, 429")
    backoff: Duration = Field(default=0.5, description="first backoff between retries (exponential, full jitter)")
    max_backoff: Duration = Field(default=30.0, description="longest backoff between retries")
    max_retry_after: Duration = Field(
        default=60.0, description="the longest Retry-After waited for; a longer one fails the poll as rate_limited")
    max_response_bytes: int = Field(default=64 * 1024 * 1024, ge=1024,
                                    description="larger bodies fail the poll as response_too_large")
    # A burst of thousands of polls never queues in the connection pool.
    max_in_flight: int = Field(default=32, ge=1, le=1024,
                               description="requests of this source in flight at once; more wait their turn")


class SourceConfigBase(WithSecrets):
    """Keys every `[[sources]]` entry has, whatever its type."""

    # The keys and values `sample-config TYPE` sets (the rest it shows commented
    # out): values the built-in simulator serves.
    sample: ClassVar[dict[str, Any]] = {}

    type: str = Field(description="the vendor API")
    name: SourceName
    interval: Duration = Field(default=60.0, description="time between polls of each target")
    timeout: Duration | None = Field(
        default=None, examples=["30s"],
        description="deadline of one poll of one target, retries included; default: the interval")
    max_staleness: Duration | None = Field(
        default=None, examples=["5m"],
        description="without a successful poll for this long a target's series are dropped; default: 3 × interval")
    base_url: ApiRoot | None = Field(
        default=None, description="API root, an absolute http(s) URL; default: the vendor's. A source with a "
                                  "base_url or a credential is never served by the built-in simulator")
    max_series: int = Field(default=10_000, ge=1, description="series one target may export; past it new series "
                                                               "are dropped and counted")
    http: HttpConfig = Field(default=HttpConfig(), description="HTTP client: timeouts, retries, size limit")

    @field_validator("base_url")
    @classmethod
    def _absolute_http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        problem = url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

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


def url_problem(value: str) -> str | None:
    """Why `value` is no absolute http(s) URL, or None. The value is quoted
    only when it carries no user information (which may hold a password)."""
    shown = f"{value!r} is" if "@" not in value else "it is"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        return f"{shown} not a valid URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        hint = f"; did you mean 'https://{value}'?" if "://" not in value and "@" not in value else ""
        return f"{shown} not an absolute http(s) URL: give the scheme and host, e.g. https://api.example.com{hint}"
    if any(char.isspace() for char in value) or parts.query or parts.fragment:
        return f"{shown} not usable as an API root: no spaces, query or fragment"
    return None
