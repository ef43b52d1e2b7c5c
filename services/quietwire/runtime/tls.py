"""TLS material for gRPC between services: mutual TLS from PEM files.

Each certificate a service loads to serve with publishes when it expires
(``quietwire_tls_certificate_expiry_timestamp_seconds``), so an alert can
come weeks before phones or peers refuse the handshake.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from prometheus_client import Gauge

CERT_EXPIRY = Gauge(
    "quietwire_tls_certificate_expiry_timestamp_seconds",
    "When the first certificate of a loaded chain (or its CA) expires, Unix time",
    ["cert"],
)


@dataclass(frozen=True, slots=True, repr=False)
class TlsFiles:
    """A certificate chain, its private key, and the CA that peers must chain to."""

    cert: Path
    key: Path
    ca: Path
    #: The name peers' certificates are checked against instead of the dialled address.
    server_name: str | None = None

    def __repr__(self) -> str:
        return f"TlsFiles(cert={self.cert}, ca={self.ca}, server_name={self.server_name})"


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Server side of mutual TLS: clients must present a certificate from ``files.ca``."""
    publish_expiry("grpc", files.cert, files.ca)
    return grpc.ssl_server_credentials(
        [(files.key.read_bytes(), files.cert.read_bytes())],
        root_certificates=files.ca.read_bytes(),
        require_client_auth=True,
    )


def publish_expiry(name: str, *pem_files: Path) -> None:
    """Export when the first certificate in these PEM files expires. Unreadable ones
    are left to the TLS library, which refuses them with a clearer error."""
    try:
        pem = b"\n".join(path.read_bytes() for path in pem_files)
        certificates = x509.load_pem_x509_certificates(pem)
    except (OSError, ValueError):
        return
    expiry = min(c.not_valid_after_utc for c in certificates)
    CERT_EXPIRY.labels(name).set(expiry.timestamp())


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """Client side of mutual TLS: verify the server against ``files.ca``, present ours."""
    return grpc.ssl_channel_credentials(
        root_certificates=files.ca.read_bytes(),
        private_key=files.key.read_bytes(),
        certificate_chain=files.cert.read_bytes(),
    )
