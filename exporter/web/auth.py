"""Protection of the HTTP endpoints: TLS and basic auth, like the Prometheus
exporter-toolkit web config.

- `[server.tls]`: certificate and key files, re-read when either changes on
  disk (cert-manager rotates them in place), optional client-certificate
  verification against a CA file, a minimum TLS version.
- `[server.basic_auth]`: users with **bcrypt** hashes, never plain passwords.
  The check is constant-time: an unknown user is checked against a dummy hash
  so the answer takes as long, and a successful check is cached (bcrypt is
  slow by design) under a keyed digest compared with `hmac.compare_digest`.
  Passwords longer than bcrypt's 72 bytes are compared by their first 72
  bytes, as htpasswd hashed them; the scheme name is case-insensitive.
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

from exporter.config.server import TLS_VERSIONS, BasicAuthConfig, TlsConfig

log = logging.getLogger(__name__)

BCRYPT_MAX_PASSWORD = 72


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
        context.minimum_version = TLS_VERSIONS[self.config.min_version]
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
    """`Authorization: Basic` checked against bcrypt hashes, constant-time.

    `cached()` is the fast path the server runs inline: credentials that
    passed bcrypt once are remembered as a keyed digest. `check()` runs
    bcrypt (milliseconds to a tenth of a second by cost), so the server calls
    it off its event loop."""

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

    def cached(self, header: str | None) -> bool:
        """True when these exact credentials passed `check` before."""
        credentials = parse_basic(header)
        if credentials is None:
            return False
        digest = self._digest(*credentials)
        with self._lock:
            return any(hmac.compare_digest(digest, known) for known in self._verified)

    def check(self, header: str | None) -> bool:
        """The full check: bcrypt, slow by design. Never raises on client input."""
        import bcrypt

        credentials = parse_basic(header)
        if credentials is None:
            return False
        user, password = credentials
        digest = self._digest(user, password)
        with self._lock:
            if any(hmac.compare_digest(digest, known) for known in self._verified):
                return True
        hashed = self.config.users.get(user)
        # bcrypt reads at most 72 bytes of a password: htpasswd and OpenBSD's
        # bcrypt hash a longer one by its first 72 bytes, so a longer password
        # is compared the same way, truncated (pyca/bcrypt 5 raises instead,
        # which used to drop the connection without an answer).
        try:
            ok = bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], hashed.encode() if hashed else self._dummy)
        except ValueError:  # a malformed stored hash cannot pass the config check; be safe anyway
            ok = False
        if ok and hashed is not None:
            with self._lock:
                self._verified.add(digest)
        return ok and hashed is not None

    def _digest(self, user: str, password: bytes) -> bytes:
        return hmac.new(self._key, user.encode() + b"\x00" + password, hashlib.sha256).digest()


def parse_basic(header: str | None) -> tuple[str, bytes] | None:
    """(user, password) from `Basic <base64>`; the scheme is case-insensitive
    (RFC 7617 via RFC 9110 11.1). None when the header is not usable."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).partition(b":")
        if not sep:
            return None
        return user.decode(), password
    except (ValueError, UnicodeDecodeError):
        return None
