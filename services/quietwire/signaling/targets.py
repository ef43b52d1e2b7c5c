"""Where a SIP message goes: a flow on this replica or on another (over gRPC).

Flow ids are ``<replica>.<n>``; a :class:`Target` is resolved here, so the
proxy never cares which replica holds a phone's connection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter

from quietwire.protocols.sip.message import Message
from quietwire.signaling.flows import FlowTable

log = logging.getLogger(__name__)

HANDOVERS = Counter("quietwire_sip_handovers", "Messages handed to another replica", ["kind"])


@dataclass(frozen=True, slots=True)
class Target:
    replica: str
    flow_id: str

    @classmethod
    def of_flow(cls, flow_id: str) -> Target:
        return cls(flow_id.rsplit(".", 1)[0], flow_id)


class Peers(Protocol):
    """The other replicas, reached over gRPC (``Signaling.Deliver``)."""

    async def write(self, target: Target, data: bytes) -> bool: ...

    async def receive(self, replica: str, data: bytes) -> bool: ...


class Router:
    def __init__(self, replica: str, flows: FlowTable, peers: Peers) -> None:
        self.replica = replica
        self.flows = flows
        self.peers = peers

    async def send(self, target: Target, message: Message) -> bool:
        """Write ``message`` on the target flow; False if it is gone or full."""
        if target.replica == self.replica:
            flow = self.flows.get(target.flow_id)
            return flow is not None and flow.send_message(message)
        HANDOVERS.labels("write").inc()
        return await self.peers.write(target, message.serialize())

    async def hand_over(self, replica: str, message: Message) -> bool:
        """Give a response to the replica whose transaction it belongs to."""
        HANDOVERS.labels("receive").inc()
        return await self.peers.receive(replica, message.serialize())
