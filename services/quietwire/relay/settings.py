"""Settings of ``quietwire relay``."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator

from quietwire.relay.addresses import AddressPolicy, networks
from quietwire.runtime.settings import AnyPort, OptionalPort, Port, ServiceSettings, env_name


class RelaySettings(ServiceSettings):
    grpc_port: AnyPort = 50053
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
    #: On Kubernetes: advertise this address of the node QW_KUBE_NODE_NAME
    #: (read from its Node object) instead of QW_RELAY_ADVERTISE.
    relay_advertise_from_node: Literal["", "ExternalIP", "InternalIP"] = ""
    #: On Kubernetes: keep this pod's pod-deletion-cost equal to its active
    #: calls, so a scale-down removes idle relays first.
    relay_pod_deletion_cost: bool = False
    #: Settled calls' media forwarded by the kernel (nftables NAT) instead of this
    #: process: needs CAP_NET_ADMIN, libnftables, ip_forward and nf_conntrack_acct,
    #: and a specific IPv4 QW_RELAY_BIND (see quietwire.relay.kernel).
    relay_kernel_forwarding: bool = False
    #: Networks media may go to although refused by default (loopback, link-local,
    #: multicast, unspecified, reserved), comma-separated: e.g. 127.0.0.0/8 for a
    #: platform and its phones on one machine (``quietwire up``).
    relay_peer_allow: str = ""
    #: Networks media never goes to nor latches from, comma-separated: the
    #: platform's own (pod, service, node ranges). Wins over relay_peer_allow.
    relay_peer_deny: str = ""
    #: This pod's node, name and namespace (the chart sets them from the downward API).
    kube_node_name: str | None = None
    kube_pod_name: str | None = None
    kube_namespace: str | None = None

    @field_validator("relay_bind", "relay_advertise")
    @classmethod
    def _address(cls, value: str) -> str:
        ipaddress.ip_address(value)
        return value

    @field_validator("relay_peer_allow", "relay_peer_deny")
    @classmethod
    def _networks(cls, value: str) -> str:
        networks(value)
        return value

    @property
    def peer_policy(self) -> AddressPolicy:
        return AddressPolicy(networks(self.relay_peer_allow), networks(self.relay_peer_deny))

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

    @model_validator(mode="after")
    def _kernel_address(self) -> Self:
        address = ipaddress.ip_address(self.relay_bind)
        if self.relay_kernel_forwarding and (address.version != 4 or address.is_unspecified):
            raise ValueError(
                f"{env_name('relay_kernel_forwarding')} needs {env_name('relay_bind')} to be"
                " one IPv4 address of this host (the source of forwarded packets)"
            )
        return self

    @model_validator(mode="after")
    def _kube_names(self) -> Self:
        needed = {
            "kube_node_name": bool(self.relay_advertise_from_node),
            "kube_pod_name": self.relay_pod_deletion_cost,
            "kube_namespace": self.relay_pod_deletion_cost,
        }
        for name, wanted in needed.items():
            if wanted and not getattr(self, name):
                raise ValueError(
                    f"{env_name(name)} is required with {env_name('relay_advertise_from_node')}"
                    f" or {env_name('relay_pod_deletion_cost')}"
                )
        return self

    @property
    def uses_kube_api(self) -> bool:
        return bool(self.relay_advertise_from_node) or self.relay_pod_deletion_cost
