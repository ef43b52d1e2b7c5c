"""Settings of ``quietwire signaling``."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Literal, Self

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator

from quietwire.protocols.sip.digest import DigestAlgorithm
from quietwire.protocols.sip.framing import MAX_BODY_BYTES, PREAUTH_BODY_BYTES
from quietwire.runtime.settings import (
    AnyPort,
    CommonSettings,
    OptionalPort,
    Port,
    QuietwireSettings,
    Seconds,
    ServiceSettings,
    SipDomainSettings,
    env_name,
)
from quietwire.signaling.admission import MAX_CONNECTIONS, MAX_CONNECTIONS_PER_SOURCE
from quietwire.signaling.flows import MESSAGE_TIMEOUT
from quietwire.signaling.lockout import LockoutPolicy, check_policy, one_source_most


class DigestSettings(QuietwireSettings):
    #: Digest algorithms challenged and accepted, most preferred first (RFC 8760);
    #: users get an HA1 stored for these only. Some clients (sipp) answer only
    #: the first challenge and know only MD5.
    sip_digest_algorithms: str = "SHA-256,MD5"

    @field_validator("sip_digest_algorithms")
    @classmethod
    def _algorithms(cls, value: str) -> str:
        names = [n.strip().upper() for n in value.split(",") if n.strip()]
        known = {a.value for a in DigestAlgorithm}
        if not names or any(n not in known for n in names) or len(set(names)) != len(names):
            raise ValueError(f"must be a comma-separated list of {', '.join(sorted(known))}")
        return ",".join(names)

    @property
    def digest_algorithms(self) -> tuple[DigestAlgorithm, ...]:
        return tuple(DigestAlgorithm(n) for n in self.sip_digest_algorithms.split(","))


class SignalingSettings(ServiceSettings, SipDomainSettings, DigestSettings):
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
    #: Live proxy server transactions, per source address and in total (over: 503
    #: with Retry-After): what one stranger, and everyone together, can make us hold.
    sip_max_transactions: Annotated[int, Field(ge=1, le=10_000_000)] = 20_000
    sip_max_transactions_per_source: Annotated[int, Field(ge=1, le=10_000_000)] = 500
    #: This replica's name in Redis and in flow ids; default: host name and a random suffix.
    replica_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,63}$")] | None = None
    #: Key for digest nonces and Record-Route tokens, the same on every replica
    #: (otherwise a phone that moves replica is challenged again).
    sip_secret: SecretStr | None = None
    #: Per source address: requests per second, burst, and failed logins before a block.
    sip_rate_limit: Annotated[float, Field(gt=0)] = 50.0
    sip_rate_burst: Annotated[float, Field(ge=1)] = 200.0
    sip_max_auth_failures: Annotated[int, Field(ge=1)] = 10
    #: Per source (IPv4 address, IPv6 /64): failed digest answers within the
    #: window before a block, and the block's length (see signaling/lockout.py).
    sip_auth_failure_window: Seconds = 600.0
    sip_auth_block: Seconds = 600.0
    #: Per user, from all sources: failures within the window before the
    #: user's credentials are refused for the block. Must be above what one
    #: source can make in the window, so one address cannot lock a user out;
    #: default: twice that.
    sip_user_max_auth_failures: Annotated[int, Field(ge=1)] | None = None
    sip_user_auth_failure_window: Seconds = 3600.0
    sip_user_auth_block: Seconds = 900.0
    #: Open SIP connections (TLS and TCP) per replica, in total and per source
    #: address (an IPv6 source is its /64); over either, a connection is closed
    #: before its TLS handshake. UDP peers are capped alike (apart).
    sip_max_connections: Annotated[int, Field(ge=1)] = MAX_CONNECTIONS
    sip_max_connections_per_source: Annotated[int, Field(ge=1)] = MAX_CONNECTIONS_PER_SOURCE
    #: Body bytes of a message on a connection nobody has authenticated on
    #: yet (over: 413 and the connection closes).
    sip_preauth_body_bytes: Annotated[int, Field(ge=0, le=MAX_BODY_BYTES)] = PREAUTH_BODY_BYTES
    #: Seconds a message may take from its first byte to its last, however the
    #: bytes trickle in (over: the connection closes).
    sip_message_timeout: Annotated[float, Field(gt=0, le=300)] = MESSAGE_TIMEOUT
    #: Share the SIP port (TLS and TCP) with other replicas on this host
    #: (SO_REUSEPORT): one replica per core, the kernel spreads the connections.
    sip_reuse_port: bool = False

    @model_validator(mode="after")
    def _lockout(self) -> Self:
        try:
            check_policy(self.lockout_policy)
        except ValueError as exc:
            raise ValueError(f"{env_name('sip_user_max_auth_failures')}: {exc}") from exc
        return self

    @model_validator(mode="after")
    def _connection_caps(self) -> SignalingSettings:
        if self.sip_max_connections_per_source > self.sip_max_connections:
            raise ValueError("sip_max_connections_per_source exceeds sip_max_connections")
        return self

    @property
    def lockout_policy(self) -> LockoutPolicy:
        policy = LockoutPolicy(
            self.sip_max_auth_failures,
            self.sip_auth_failure_window,
            self.sip_auth_block,
            self.sip_user_max_auth_failures or 0,
            self.sip_user_auth_failure_window,
            self.sip_user_auth_block,
        )
        if self.sip_user_max_auth_failures is None:
            return replace(policy, user_failures=2 * one_source_most(policy))
        return policy


class UserAdminSettings(CommonSettings, SipDomainSettings, DigestSettings):
    """Settings of ``quietwire user``: where users live and their realm."""
