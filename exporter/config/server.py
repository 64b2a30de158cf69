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
    """`[server.tls]`: serve HTTPS (as the exporter-toolkit's tls_server_config)."""

    cert_file: Path = Field(description="certificate (chain), PEM; re-read when it or the key changes on disk")
    key_file: Path = Field(description="its private key, PEM")
    client_ca_file: Path | None = Field(default=None, description="require and verify client certificates "
                                                                  "signed by this CA")
    min_version: Literal["TLS12", "TLS13"] = Field(default="TLS12", description="oldest TLS version accepted")


class BasicAuthConfig(StrictModel):
    """`users = { name = "<bcrypt hash>" }`."""

    users: dict[str, str] = Field(min_length=1, description="user name = bcrypt hash (htpasswd -nBC 10 user)")
    unauthenticated_paths: list[str] = Field(default_factory=lambda: ["/healthz", "/readyz"],
                                             description="paths answered without credentials (probes)")

    @field_validator("users")
    @classmethod
    def _bcrypt_hashes(cls, users: dict[str, str]) -> dict[str, str]:
        for name, hashed in users.items():
            if not hashed.startswith(("$2a$", "$2b$", "$2y$")) or len(hashed) != 60:
                raise ValueError(f"user {name!r}: give a bcrypt hash (htpasswd -nBC 10 user), not a password")
        return users


class ServerConfig(StrictModel):
    """`[server]`: where /metrics, /healthz, /readyz and / are served."""

    listen: ListenAddress = Field(default="0.0.0.0:9687", description="host:port (IPv6 as [::]:9687)")
    tls: TlsConfig | None = Field(default=None, description="serve HTTPS")
    basic_auth: BasicAuthConfig | None = Field(default=None, description="require HTTP basic authentication")
    # POST /-/reload, like Prometheus' --web.enable-lifecycle.
    enable_lifecycle: bool = Field(default=False, description="accept POST /-/reload")
    # Follows symlinks, so a Kubernetes ConfigMap update (an atomic symlink swap) counts.
    watch_config: bool = Field(default=False, description="reload when the config file changes (checked every 5s)")
    # What one client can make the server hold. Prometheus' flag names where
    # it has one (--web.max-connections, --web.read-timeout), else Go's
    # http.Server field names (IdleTimeout, MaxHeaderBytes).
    max_connections: int = Field(default=1024, ge=1, description="concurrent connections, TLS handshakes included; "
                                 "past it new connections are closed and counted")
    # From the connection's start (or the first byte of a later request on a kept-alive connection).
    read_timeout: Duration = Field(default=10.0, description="deadline for the TLS handshake and the request head")
    idle_timeout: Duration = Field(default=75.0, description="a kept-alive connection with no request is closed "
                                   "after this")
    write_timeout: Duration = Field(default=120.0, description="the answer must be read by the client within this "
                                    "of the request head's end")
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, description="request line plus every header, bytes")
    max_headers: int = Field(default=100, ge=1, description="headers per request")
