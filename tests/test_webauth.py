"""TLS (with rotation and client certificates) and basic auth, over real sockets."""

from __future__ import annotations

import base64
import datetime as dt
import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry

from exporter.config import ConfigError
from exporter.config.server import BasicAuthConfig, TlsConfig
from exporter.web import ServerLimits, WebServer
from tests.conftest import settings_from
from tests.test_web import running  # noqa: F401 - the running-app fixture

PASSWORD = "s3cret-pass"


def make_cert(path: Path, name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
              ca: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer[0].subject if issuer else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert, key


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, object]:
    ca = make_cert(tmp_path / "ca", "test-ca", None, ca=True)
    server = make_cert(tmp_path / "server", "localhost", ca)
    make_cert(tmp_path / "client", "scraper", ca)
    return {"dir": tmp_path, "ca": ca, "server": server}


@pytest.fixture
def secured(running, pki) -> Iterator[tuple[str, Path]]:  # noqa: F811
    app, _, _ = running
    d: Path = pki["dir"]  # type: ignore[assignment]
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    web = WebServer("127.0.0.1:0", app, tls=TlsConfig(cert_file=d / "server.crt", key_file=d / "server.key"),
                    basic_auth=BasicAuthConfig(users={"prometheus": hashed}))
    web.start()
    yield f"https://localhost:{web.port}", d
    web.stop()


def test_basic_auth_over_tls(secured: tuple[str, Path]) -> None:
    url, d = secured
    with httpx.Client(verify=ssl.create_default_context(cafile=str(d / "ca.crt"))) as client:
        check_basic_auth(client, url)


def check_basic_auth(client: httpx.Client, url: str) -> None:
    anonymous = client.get(f"{url}/metrics")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == 'Basic realm="api-metrics-exporter"'
    assert client.get(f"{url}/metrics", auth=("prometheus", "wrong")).status_code == 401
    assert client.get(f"{url}/metrics", auth=("nobody", PASSWORD)).status_code == 401
    ok = client.get(f"{url}/metrics", auth=("prometheus", PASSWORD))
    assert ok.status_code == 200 and "apimetrics_build_info" in ok.text
    assert client.get(f"{url}/metrics", auth=("prometheus", PASSWORD)).status_code == 200  # cached check
    assert client.get(f"{url}/healthz").status_code == 200  # probes stay open
    assert client.get(f"{url}/", auth=("prometheus", "wrong")).status_code == 401


def peer_serial(port: int, cafile: Path) -> int:
    context = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("localhost", port)) as raw, context.wrap_socket(raw, server_hostname="localhost") as tls:
        der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


def test_certificate_rotation_needs_no_restart(secured: tuple[str, Path], pki: dict[str, object]) -> None:
    url, d = secured
    port = int(url.rsplit(":", 1)[1])
    first = peer_serial(port, d / "ca.crt")
    time.sleep(0.01)
    rotated, _ = make_cert(d / "server", "localhost", pki["ca"])  # type: ignore[arg-type]
    os.utime(d / "server.crt")
    assert first != rotated.serial_number
    assert peer_serial(port, d / "ca.crt") == rotated.serial_number


def test_client_certificates_are_verified(running, pki) -> None:  # noqa: F811
    app, _, _ = running
    d: Path = pki["dir"]  # type: ignore[assignment]
    web = WebServer("127.0.0.1:0", app, tls=TlsConfig(cert_file=d / "server.crt", key_file=d / "server.key",
                                                      client_ca_file=d / "ca.crt", min_version="TLS13"))
    web.start()
    try:
        url = f"https://localhost:{web.port}/metrics"
        context = ssl.create_default_context(cafile=str(d / "ca.crt"))
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, verify=context)
        context.load_cert_chain(d / "client.crt", d / "client.key")
        assert httpx.get(url, verify=context).status_code == 200
    finally:
        web.stop()


def test_plain_passwords_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from(tmp_path, '[server.basic_auth]\nusers = { prometheus = "hunter2" }\n')
    assert caught.value.lines() == [
        "server.basic_auth.users: user 'prometheus': give a bcrypt hash (htpasswd -nBC 10 user), not a password"
    ]


def test_tls_clients_that_stall_are_closed_by_the_read_deadline(running, pki) -> None:  # noqa: F811
    app, _, _ = running
    d: Path = pki["dir"]  # type: ignore[assignment]
    registry = CollectorRegistry()
    web = WebServer("127.0.0.1:0", app, tls=TlsConfig(cert_file=d / "server.crt", key_file=d / "server.key"),
                    limits=ServerLimits(read_timeout=1), registry=registry)
    web.start()
    context = ssl.create_default_context(cafile=str(d / "ca.crt"))
    try:
        with socket.create_connection(("localhost", web.port)) as silent:  # never starts the handshake
            silent.settimeout(30)
            assert silent.recv(1) == b""
        with socket.create_connection(("localhost", web.port)) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as idle:  # handshakes, never asks
            idle.settimeout(30)
            assert idle.recv(1) == b""
        # The deadline spares a scraper.
        assert httpx.get(f"https://localhost:{web.port}/healthz", verify=context).status_code == 200
    finally:
        web.stop()
    assert registry.get_sample_value("apimetrics_http_connections_rejected_total", {"reason": "read_timeout"}) == 2


LONG = "p" * 72  # bcrypt reads 72 bytes: htpasswd hashed any longer password by these


@pytest.fixture
def guarded(running) -> Iterator[str]:  # noqa: F811
    app, _, _ = running
    hashed = bcrypt.hashpw(LONG.encode(), bcrypt.gensalt(rounds=4)).decode()  # as htpasswd hashes LONG + "12345678"
    web = WebServer("127.0.0.1:0", app, basic_auth=BasicAuthConfig(users={"prometheus": hashed}))
    web.start()
    yield f"http://127.0.0.1:{web.port}/metrics"
    web.stop()


def test_passwords_over_72_bytes_get_an_answer(guarded: str) -> None:
    # pyca/bcrypt raises on them, which used to drop the connection unanswered.
    assert httpx.get(guarded, auth=("prometheus", LONG + "12345678")).status_code == 200  # 80 bytes, as hashed
    assert httpx.get(guarded, auth=("prometheus", LONG + "anything")).status_code == 200  # bytes past 72: unread
    assert httpx.get(guarded, auth=("prometheus", "q" + LONG[1:] + "12345678")).status_code == 401
    assert httpx.get(guarded, auth=("prometheus", "x" * 4000)).status_code == 401
    assert httpx.get(guarded, auth=("nobody", "x" * 80)).status_code == 401


def test_the_basic_scheme_is_case_insensitive(guarded: str) -> None:
    token = base64.b64encode(f"prometheus:{LONG}".encode()).decode()
    for scheme in ("basic", "BASIC", "bAsIc"):
        assert httpx.get(guarded, headers={"Authorization": f"{scheme} {token}"}).status_code == 200
    assert httpx.get(guarded, headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert httpx.get(guarded, headers={"Authorization": "Basic not-base64!"}).status_code == 401


def test_authentication_is_decided_before_any_body(guarded: str) -> None:
    port = int(guarded.split(":")[2].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # A 100 MB body announced and never sent: the 401 must not wait for it.
        sock.sendall(b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 401 ")
