"""The other signaling replicas, over gRPC: hand a message to the one that holds a flow."""

from __future__ import annotations

import logging

import grpc

from quietwire.rpc.signaling.v1 import signaling_pb2, signaling_pb2_grpc
from quietwire.runtime.channels import open_channel
from quietwire.runtime.registry import ReplicaRegistry
from quietwire.runtime.tls import TlsFiles
from quietwire.signaling.targets import Target

log = logging.getLogger(__name__)
DELIVER_TIMEOUT = 2.0
Kind = signaling_pb2.DeliverRequest.Kind


class GrpcPeers:
    def __init__(self, registry: ReplicaRegistry, tls: TlsFiles | None) -> None:
        self.registry = registry
        self.tls = tls
        self._channels: dict[str, tuple[str, grpc.aio.Channel]] = {}

    async def _stub(self, replica: str) -> signaling_pb2_grpc.SignalingAsyncStub | None:
        address = await self.registry.address(replica)
        if address is None:
            return None
        cached = self._channels.get(replica)
        if cached is None or cached[0] != address:
            if cached is not None:
                await cached[1].close(None)
            cached = (address, open_channel(address, self.tls))
            self._channels[replica] = cached
        return signaling_pb2_grpc.SignalingStub(cached[1])

    async def _deliver(self, replica: str, request: signaling_pb2.DeliverRequest) -> bool:
        stub = await self._stub(replica)
        if stub is None:
            return False
        try:
            answer = await stub.Deliver(request, timeout=DELIVER_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            log.warning("handover failed", extra={"replica": replica, "code": exc.code().name})
            return False
        return bool(answer.outcome == signaling_pb2.DeliverResponse.OUTCOME_WRITTEN)

    async def write(self, target: Target, data: bytes) -> bool:
        return await self._deliver(
            target.replica,
            signaling_pb2.DeliverRequest(
                flow_id=target.flow_id, message=data, kind=Kind.KIND_WRITE
            ),
        )

    async def receive(self, replica: str, data: bytes) -> bool:
        return await self._deliver(
            replica, signaling_pb2.DeliverRequest(message=data, kind=Kind.KIND_RECEIVE)
        )

    async def close(self) -> None:
        for _, channel in self._channels.values():
            await channel.close(None)
        self._channels.clear()
