"""Settings of ``quietwire signaling``."""

from __future__ import annotations

from pydantic import FilePath

from quietwire.runtime.settings import (
    CommonSettings,
    OptionalPort,
    Port,
    ServiceSettings,
    SipDomainSettings,
)


class SignalingSettings(ServiceSettings, SipDomainSettings):
    grpc_port: Port = 50051
    metrics_port: OptionalPort = 9101
    #: SIP over TLS (RFC 5630): where phones connect.
    sip_bind: str = "0.0.0.0"  # noqa: S104 - the front door listens on every interface
    sip_port: Port = 5061
    #: PEM certificate chain and key for SIP TLS; the host must be in a DNS
    #: SAN or the CN (Linphone ignores IP SANs).
    sip_tls_cert: FilePath
    sip_tls_key: FilePath
    keyagreement_target: str = "127.0.0.1:50052"


class UserAdminSettings(CommonSettings, SipDomainSettings):
    """Settings of ``quietwire user``: where users live and their realm."""
