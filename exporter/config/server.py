"""`[server]`: where and how the HTTP endpoints listen, with TLS and basic auth
configured like the Prometheus exporter-toolkit web config."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from exporter.config.types import ListenAddress, StrictModel

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
