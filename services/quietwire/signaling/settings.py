"""Settings of ``quietwire signaling``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, FilePath, SecretStr, field_validator

from quietwire.protocols.sip.digest import DigestAlgorithm
from quietwire.runtime.settings import (
    AnyPort,
    CommonSettings,
    OptionalPort,
    Port,
    ServiceSettings,
    SipDomainSettings,
)


class SignalingSettings(ServiceSettings, SipDomainSettings):
    grpc_port: AnyPort = 50051
    metrics_port: OptionalPort = 9101
    #: SIP over TLS (RFC 5630): where phones connect.
    sip_bind: str = "0.0.0.0"  # noqa: S104 - the front door listens on every interface
    sip_port: Port = 5061
    #: PEM certificate chain and key for SIP TLS; the host must be in a DNS
    #: SAN or the CN (Linphone ignores IP SANs).
    #: Plain SIP over TCP for phones that cannot do TLS; 0 (the default) is off.
    #: Signaling and a=zrtp-hash then travel in the clear: ZRTP's binding to the
    #: signaling protects nothing on such calls (the SAS still does).
    sip_tcp_port: OptionalPort = 0
    #: Plain SIP over UDP, likewise; 0 (the default) is off.
    sip_udp_port: OptionalPort = 0
    sip_tls_cert: FilePath
    sip_tls_key: FilePath
    #: Seconds between checks of the certificate files; a change is loaded
    #: without a restart (rotation by cert-manager and the like).
    sip_tls_reload_every: Annotated[float, Field(gt=0)] = 5.0
    keyagreement_target: str = "127.0.0.1:50052"
    #: relay: media goes through keyagreement's plans and relays (the default);
    #: passthrough: SDP untouched, media flows between the phones.
    sip_media: Literal["relay", "passthrough"] = "relay"
    #: This replica's name in Redis and in flow ids; default: host name and a random suffix.
    replica_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,63}$")] | None = None
    #: Key for digest nonces and Record-Route tokens, the same on every replica
    #: (otherwise a phone that moves replica is challenged again).
    sip_secret: SecretStr | None = None
    #: Per source address: requests per second, burst, and failed logins before a block.
    sip_rate_limit: Annotated[float, Field(gt=0)] = 50.0
    sip_rate_burst: Annotated[float, Field(ge=1)] = 200.0
    sip_max_auth_failures: Annotated[int, Field(ge=1)] = 10
    #: Digest algorithms challenged, most preferred first (RFC 8760). Some
    #: clients (sipp) answer only the first challenge and know only MD5.
    sip_digest_algorithms: str = "SHA-256,MD5"

    @field_validator("sip_digest_algorithms")
    @classmethod
    def _algorithms(cls, value: str) -> str:
        names = [n.strip().upper() for n in value.split(",") if n.strip()]
        known = {a.value for a in DigestAlgorithm}
        if not names or any(n not in known for n in names):
            raise ValueError(f"must be a comma-separated list of {', '.join(sorted(known))}")
        return ",".join(names)

    @property
    def digest_algorithms(self) -> tuple[DigestAlgorithm, ...]:
        return tuple(DigestAlgorithm(n) for n in self.sip_digest_algorithms.split(","))


class UserAdminSettings(CommonSettings, SipDomainSettings):
    """Settings of ``quietwire user``: where users live and their realm."""
