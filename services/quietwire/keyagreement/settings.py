"""Settings of ``quietwire keyagreement``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from quietwire.runtime.settings import AnyPort, OptionalPort, ServiceSettings


class KeyAgreementSettings(ServiceSettings):
    grpc_port: AnyPort = 50052
    metrics_port: OptionalPort = 9102
    #: secure_only (default: ZRTP, DTLS-SRTP or SDES-SRTP, never plain RTP),
    #: e2e_only (ZRTP or DTLS-SRTP), allow_plain (testing only).
    media_policy: Literal["secure_only", "e2e_only", "allow_plain"] = "secure_only"
    #: Seconds between reconciliations of call records with the relays' sessions.
    reconcile_every: Annotated[float, Field(ge=1, le=3600)] = 30.0
