"""Settings of ``quietwire keyagreement``."""

from __future__ import annotations

from quietwire.runtime.settings import OptionalPort, Port, ServiceSettings


class KeyAgreementSettings(ServiceSettings):
    grpc_port: Port = 50052
    metrics_port: OptionalPort = 9102
