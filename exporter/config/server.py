"""`[server]`: where and how the HTTP endpoints listen, with TLS and basic auth
configured like the Prometheus exporter-toolkit web config."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from exporter.config.types import Duration, ListenAddress, StrictModel

TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


class TlsConfig(StrictModel):
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    min_version: Literal["TLS12", "TLS13"] = "TLS12"


class BasicAuthConfig(StrictModel):
    """`users = { name = "<bcrypt hash>" }`."""

    users: dict[str, str] = Field(min_length=1)
    unauthenticated_paths: list[str] = Field(default_factory=lambda: ["/healthz", "/readyz"])

    @field_validator("users")
    @classmethod
    def _bcrypt_hashes(cls, users: dict[str, str]) -> dict[str, str]:
        for name, hashed in users.items():
            if not hashed.startswith(("$2a$", "$2b$", "$2y$")) or len(hashed) != 60:
                raise ValueError(f"user {name!r}: give a bcrypt hash (htpasswd -nBC 10 user), not a password")
        return users


class ServerConfig(StrictModel):
    listen: ListenAddress = "0.0.0.0:9687"
    tls: TlsConfig | None = None
    basic_auth: BasicAuthConfig | None = None
    # POST /-/reload, like Prometheus' --web.enable-lifecycle.
    enable_lifecycle: bool = False
    # Reload when the config file changes, checked every few seconds. Follows
    # symlinks, so a Kubernetes ConfigMap update (an atomic symlink swap) counts.
    watch_config: bool = False
    # What one client can make the server hold. Prometheus' flag names where
    # it has one (--web.max-connections, --web.read-timeout), else Go's
    # http.Server field names (IdleTimeout, MaxHeaderBytes).
    max_connections: int = Field(default=1024, ge=1)
    # TLS handshake plus the request head, from the connection's start (or
    # from the first byte of a later request on a kept-alive connection).
    read_timeout: Duration = 10.0
    # A kept-alive connection with no request in progress is closed after this.
    idle_timeout: Duration = 75.0
    # The answer must be written (read by the client) within this of the head's end.
    write_timeout: Duration = 120.0
    # Request line plus every header, in bytes; and the number of headers.
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    max_headers: int = Field(default=100, ge=1)
