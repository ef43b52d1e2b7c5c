"""Ending a call from the platform: any signaling replica sends the BYEs.

Keyagreement decides a call must end (its media died, or its ZRTP binding
failed) but holds no SIP; it asks one live signaling replica, which finds the
dialog in Redis and hangs up both phones.
"""

from __future__ import annotations

import logging

import grpc
from prometheus_client import Counter

from quietwire.rpc.signaling.v1 import signaling_pb2, signaling_pb2_grpc
from quietwire.runtime.channels import ChannelPool
from quietwire.runtime.registry import ReplicaRegistry

log = logging.getLogger(__name__)
TERMINATE_TIMEOUT = 5.0
TERMINATIONS = Counter(
    "quietwire_calls_terminated", "Calls the platform ended, by reason", ["reason"]
)


async def replica_address(replicas: ReplicaRegistry, replica: str = "") -> str | None:
    """The gRPC address of ``replica`` if it is alive, else of any live replica
    (None: none is): an established call's dialog is in Redis, any replica can act on it."""
    return (await replicas.address(replica) if replica else None) or (await replicas.any_address())


class CallTerminator:
    def __init__(self, replicas: ReplicaRegistry, channels: ChannelPool) -> None:
        self.replicas, self.channels = replicas, channels

    async def terminate(self, call_id: str, reason: str, replica: str = "") -> bool:
        """True if a replica found the call and ended it.

        An established call can be ended by any replica (its dialog is in Redis);
        one still ringing only by ``replica``, which holds its INVITE transaction.
        """
        return bool(await self.ask(call_id, reason, replica))

    async def ask(self, call_id: str, reason: str, replica: str = "") -> bool | None:
        """Like :meth:`terminate`, but None when no replica answered (try again later)."""
        address = await replica_address(self.replicas, replica)
        if address is None:
            log.warning("no signaling replica to end a call", extra={"call_id": call_id})
            return None
        stub = signaling_pb2_grpc.SignalingStub(self.channels.channel(address))
        try:
            answer = await stub.TerminateCall(
                signaling_pb2.TerminateCallRequest(call_id=call_id, reason=reason),
                timeout=TERMINATE_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("TerminateCall failed", extra={"call_id": call_id, "code": exc.code().name})
            return None
        if answer.found:
            TERMINATIONS.labels(reason).inc()
        return bool(answer.found)
