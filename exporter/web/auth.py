"""Protection of the HTTP endpoints: TLS and basic auth, like the Prometheus
exporter-toolkit web config.

- `[server.tls]`: certificate and key files, re-read when either changes on
  disk (cert-manager rotates them in place), optional client-certificate
  verification against a CA file, a minimum TLS version.
- `[server.basic_auth]`: users with **bcrypt** hashes, never plain passwords.
  The check is constant-time: an unknown user is checked against a dummy hash
  so the answer takes as long, and a successful check is cached (bcrypt is
  slow by design) under a keyed digest compared with `hmac.compare_digest`.
  `/healthz` and `/readyz` stay open by default so kubelet probes work.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import ssl
import threading
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from exporter.configtypes import StrictModel

log = logging.getLogger(__name__)

_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


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


class TlsContext:
    """An SSLContext rebuilt whenever the certificate or key file changes."""

    def __init__(self, config: TlsConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._stamp: tuple[float, float] | None = None
        self._context = self._build()

    def _stamps(self) -> tuple[float, float]:
        return (os.stat(self.config.cert_file).st_mtime_ns, os.stat(self.config.key_file).st_mtime_ns)

    def _build(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = _TLS_VERSIONS[self.config.min_version]
        context.load_cert_chain(self.config.cert_file, self.config.key_file)
        if self.config.client_ca_file is not None:
            context.load_verify_locations(self.config.client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
        self._stamp = self._stamps()
        return context

    def current(self) -> ssl.SSLContext:
        with self._lock:
            try:
                if self._stamps() != self._stamp:
                    self._context = self._build()
                    log.info("TLS certificate reloaded from %s", self.config.cert_file)
            except (OSError, ssl.SSLError) as exc:
                # A half-written rotation: keep serving with the previous pair.
                log.warning("TLS certificate not reloaded, keeping the previous one: %s", exc)
            return self._context


class BasicAuth:
    def __init__(self, config: BasicAuthConfig) -> None:
        import bcrypt

        self.config = config
        self._key = os.urandom(32)
        # Unknown users are checked against this, at the configured cost, so a
        # wrong name takes as long as a wrong password.
        cost = int(next(iter(config.users.values()))[4:6])
        self._dummy = bcrypt.hashpw(os.urandom(16), bcrypt.gensalt(rounds=cost))
        self._verified: set[bytes] = set()
        self._lock = threading.Lock()

    def required(self, path: str) -> bool:
        return path not in self.config.unauthenticated_paths

    def check(self, header: str | None) -> bool:
        import bcrypt

        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        digest = hmac.new(self._key, f"{user}\x00{password}".encode(), hashlib.sha256).digest()
        with self._lock:
            cached = any(hmac.compare_digest(digest, known) for known in self._verified)
        if cached:
            return True
        hashed = self.config.users.get(user)
        ok = bcrypt.checkpw(password.encode(), hashed.encode() if hashed else self._dummy)
        if ok and hashed is not None:
            with self._lock:
                self._verified.add(digest)
        return ok and hashed is not None
