"""TLS material for gRPC between services: mutual TLS from PEM files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


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
    return grpc.ssl_server_credentials(
        [(files.key.read_bytes(), files.cert.read_bytes())],
        root_certificates=files.ca.read_bytes(),
        require_client_auth=True,
    )


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """Client side of mutual TLS: verify the server against ``files.ca``, present ours."""
    return grpc.ssl_channel_credentials(
        root_certificates=files.ca.read_bytes(),
        private_key=files.key.read_bytes(),
        certificate_chain=files.cert.read_bytes(),
    )
