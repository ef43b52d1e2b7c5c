"""Asking signaling to point a call's phones at another relay (``Signaling.MoveCall``).

Keyagreement holds no SIP: signaling re-INVITEs both phones of the dialog from
the platform, each with the last SDP it received, only the relay's address and
ports changed (RFC 3264 section 8), and answers with each phone's new SDP,
parsed. Any live replica can do it (the dialog is in Redis); the replica of the
call's INVITE is asked first.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from quietwire.keyagreement.model import Media, StreamPlan
from quietwire.keyagreement.servicer import media_of, media_plans
from quietwire.keyagreement.teardown import replica_address
from quietwire.rpc.signaling.v1 import signaling_pb2, signaling_pb2_grpc
from quietwire.runtime.channels import ChannelPool
from quietwire.runtime.registry import ReplicaRegistry

log = logging.getLogger(__name__)
#: Seconds signaling gets for both re-INVITEs (glare retries included).
MOVE_TIMEOUT = 20.0


class MoveOutcome(enum.Enum):
    MOVED = "moved"
    NO_SUCH_CALL = "no dialog to move"
    REFUSED = "move refused"
    NO_ANSWER = "move not answered"
    #: No signaling replica answered MoveCall.
    NO_SIGNALING = "no signaling replica to move it"


OUTCOMES = {
    signaling_pb2.MoveCallResponse.OUTCOME_MOVED: MoveOutcome.MOVED,
    signaling_pb2.MoveCallResponse.OUTCOME_NO_SUCH_CALL: MoveOutcome.NO_SUCH_CALL,
    signaling_pb2.MoveCallResponse.OUTCOME_REFUSED: MoveOutcome.REFUSED,
    signaling_pb2.MoveCallResponse.OUTCOME_NO_ANSWER: MoveOutcome.NO_ANSWER,
}


@dataclass(frozen=True, slots=True)
class MoveAnswer:
    """What signaling answered: each phone's new media (empty when it did not accept)."""

    outcome: MoveOutcome
    caller_media: tuple[Media, ...] = ()
    callee_media: tuple[Media, ...] = ()
    sip_status: int = 0
    detail: str = ""

    @property
    def split(self) -> bool:
        """One phone accepted the move and the other did not: they now send to
        different relays, so the call cannot go on as it was. Signaling says so in
        ``detail`` (signaling.proto: "the caller accepted; the callee refused: 488")."""
        if self.outcome is MoveOutcome.MOVED:
            return False
        return bool(self.caller_media) != bool(self.callee_media) or " accepted" in self.detail

    @property
    def why(self) -> str:
        """The failure in a few words, for a Reason and the operator."""
        status = f" ({self.sip_status})" if self.sip_status else ""
        return f"{self.outcome.value}{status}"


class CallMover:
    def __init__(self, replicas: ReplicaRegistry, channels: ChannelPool) -> None:
        self.replicas, self.channels = replicas, channels

    async def move(
        self, call_id: str, relay_id: str, streams: Sequence[StreamPlan | None], replica: str = ""
    ) -> MoveAnswer:
        address = await replica_address(self.replicas, replica)
        if address is None:
            return MoveAnswer(MoveOutcome.NO_SIGNALING)
        stub = signaling_pb2_grpc.SignalingStub(self.channels.channel(address))
        request = signaling_pb2.MoveCallRequest(
            call_id=call_id, media=media_plans(streams), relay_id=relay_id
        )
        try:
            answer = await stub.MoveCall(request, timeout=MOVE_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            log.warning("MoveCall failed", extra={"call_id": call_id, "code": exc.code().name})
            return MoveAnswer(MoveOutcome.NO_SIGNALING, detail=exc.code().name)
        return MoveAnswer(
            OUTCOMES.get(answer.outcome, MoveOutcome.NO_ANSWER),
            media_of(answer.caller_media),
            media_of(answer.callee_media),
            answer.sip_status,
            answer.detail,
        )
