"""Settings of ``quietwire relay``."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Self

from pydantic import Field, field_validator, model_validator

from quietwire.runtime.settings import OptionalPort, Port, ServiceSettings, env_name


class RelaySettings(ServiceSettings):
    grpc_port: Port = 50053
    metrics_port: OptionalPort = 9103
    #: Where media sockets bind, and the address phones are told to send to.
    relay_bind: str = "0.0.0.0"  # noqa: S104 - media comes from anywhere
    relay_advertise: str = "127.0.0.1"
    #: The UDP range for legs; RTP on even ports, RTCP on the odd port above.
    relay_port_min: Port = 30000
    relay_port_max: Port = 39999
    #: Calls this relay takes (keyagreement balances on active/capacity);
    #: 0 means half the port pairs (a call has two legs).
    relay_capacity: Annotated[int, Field(ge=0)] = 0
    #: A call that carried no packet this long is released (its signaling vanished).
    relay_media_timeout: Annotated[float, Field(gt=0)] = 60.0
    #: This relay's name in the registry; default: host name and a random suffix.
    relay_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,63}$")] | None = None

    @field_validator("relay_bind", "relay_advertise")
    @classmethod
    def _address(cls, value: str) -> str:
        ipaddress.ip_address(value)
        return value

    @model_validator(mode="after")
    def _port_range(self) -> Self:
        if self.relay_port_min % 2:
            raise ValueError(f"{env_name('relay_port_min')} must be even (RTP takes even ports)")
        if self.relay_port_max - self.relay_port_min < 3:
            raise ValueError(
                f"{env_name('relay_port_min')}..{env_name('relay_port_max')} must hold"
                " at least two port pairs"
            )
        return self
