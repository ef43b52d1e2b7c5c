"""The development PKI: names Linphone accepts, reuse across runs, real TLS handshakes."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from quietwire.embedded.pki import Pki, ensure_pki


def names(path: Path) -> tuple[str, list[str]]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return str(cn), san.get_values_for_type(x509.DNSName)


@pytest.mark.parametrize("host", ["127.0.0.1", "sip.example.test"])
def test_sip_host_in_cn_and_dns_san(tmp_path: Path, host: str) -> None:
    pki = ensure_pki(tmp_path, host)
    assert names(pki.sip_cert) == (host, [host])


def test_keys_private_and_reused(tmp_path: Path) -> None:
    first = ensure_pki(tmp_path, "127.0.0.1")
    for key in (first.sip_key, first.grpc_key, tmp_path / "ca.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = {p: p.read_bytes() for p in (first.ca, first.sip_cert, first.grpc_cert)}
    again = ensure_pki(tmp_path, "127.0.0.1")
    assert {p: p.read_bytes() for p in (again.ca, again.sip_cert, again.grpc_cert)} == before


def test_new_host_new_sip_cert_same_ca(tmp_path: Path) -> None:
    first = ensure_pki(tmp_path, "127.0.0.1")
    ca = first.ca.read_bytes()
    second = ensure_pki(tmp_path, "sip.example.test")
    assert second.ca.read_bytes() == ca
    assert names(second.sip_cert) == ("sip.example.test", ["sip.example.test"])


def handshake(pki: Pki, server_name: str, cert: Path, key: Path) -> str:
    """A TLS handshake on loopback, verifying the server against the dev CA."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(pki.ca))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except ssl.SSLError:
            conn.close()  # the client refused us: what test_wrong_name_is_refused wants

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            client_ctx.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            version = str(tls.version())
            tls.send(b"x")
    finally:
        thread.join(5)
        listener.close()
    return version


def test_sip_certificate_verifies(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path, "127.0.0.1")
    assert handshake(pki, "127.0.0.1", pki.sip_cert, pki.sip_key).startswith("TLSv1.")


def test_grpc_certificate_verifies_for_localhost(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path, "127.0.0.1")
    assert handshake(pki, "localhost", pki.grpc_cert, pki.grpc_key)


def test_wrong_name_is_refused(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path, "127.0.0.1")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(pki, "other.example.test", pki.sip_cert, pki.sip_key)


def test_pki_command_adds_container_names(tmp_path: Path) -> None:
    from tests.conftest import run_quietwire

    result = run_quietwire(
        "pki",
        "--dir",
        str(tmp_path),
        "--sip-host",
        "sip.example.test",
        "--grpc-name",
        "relay",
        "--grpc-name",
        "keyagreement",
    )
    assert result.returncode == 0, result.stderr
    assert names(tmp_path / "sip.pem") == ("sip.example.test", ["sip.example.test"])
    _, grpc_names = names(tmp_path / "grpc.pem")
    assert {"localhost", "relay", "keyagreement"} <= set(grpc_names)
