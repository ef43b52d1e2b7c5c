"""The Signaling gRPC service: protobuf in and out, the SIP core does the work."""

from __future__ import annotations

from typing import Any

import grpc

from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.message import Response, parse_message
from quietwire.rpc.signaling.v1 import signaling_pb2, signaling_pb2_grpc
from quietwire.signaling.flows import FlowTable
from quietwire.signaling.locations import LocationStore
from quietwire.signaling.migration import CallMover, MoveOutcome, MoveResult
from quietwire.signaling.proxy import Proxy

Outcome = signaling_pb2.DeliverResponse.Outcome
Moved = signaling_pb2.MoveCallResponse.Outcome
MOVE_OUTCOMES = {
    MoveOutcome.MOVED: Moved.OUTCOME_MOVED,
    MoveOutcome.NO_SUCH_CALL: Moved.OUTCOME_NO_SUCH_CALL,
    MoveOutcome.REFUSED: Moved.OUTCOME_REFUSED,
    MoveOutcome.NO_ANSWER: Moved.OUTCOME_NO_ANSWER,
}


class SignalingServicer(signaling_pb2_grpc.SignalingServicer):
    def __init__(
        self, flows: FlowTable, proxy: Proxy, locations: LocationStore, mover: CallMover
    ) -> None:
        self.flows = flows
        self.proxy = proxy
        self.locations = locations
        self.mover = mover

    async def Deliver(
        self, request: signaling_pb2.DeliverRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> signaling_pb2.DeliverResponse:
        if request.kind == signaling_pb2.DeliverRequest.KIND_RECEIVE:
            try:
                message = parse_message(request.message, datagram=False)
            except ParseError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.reason)
            if not isinstance(message, Response):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "only responses are handed over"
                )
            await self.proxy.response(message)
            return signaling_pb2.DeliverResponse(outcome=Outcome.OUTCOME_WRITTEN)
        flow = self.flows.get(request.flow_id)
        if flow is None:
            return signaling_pb2.DeliverResponse(outcome=Outcome.OUTCOME_NO_SUCH_FLOW)
        written = flow.send(request.message)
        return signaling_pb2.DeliverResponse(
            outcome=Outcome.OUTCOME_WRITTEN if written else Outcome.OUTCOME_QUEUE_FULL
        )

    async def ListRegistrations(
        self,
        request: signaling_pb2.ListRegistrationsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> signaling_pb2.ListRegistrationsResponse:
        bindings = await self.locations.bindings(request.aor)
        return signaling_pb2.ListRegistrationsResponse(registrations=bindings)

    async def TerminateCall(
        self,
        request: signaling_pb2.TerminateCallRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> signaling_pb2.TerminateCallResponse:
        if not request.call_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "call_id is required")
        found = await self.proxy.terminate(request.call_id, request.reason or "terminated")
        return signaling_pb2.TerminateCallResponse(found=found)

    async def MoveCall(
        self,
        request: signaling_pb2.MoveCallRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> signaling_pb2.MoveCallResponse:
        if not request.call_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "call_id is required")
        if not request.media:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "media is required")
        moved = await self.mover.move(request.call_id, request.media, request.relay_id)
        return move_response(moved)


def move_response(result: MoveResult) -> signaling_pb2.MoveCallResponse:
    return signaling_pb2.MoveCallResponse(
        outcome=MOVE_OUTCOMES[result.outcome],
        caller_media=result.caller_media,
        callee_media=result.callee_media,
        sip_status=result.sip_status,
        detail=result.detail,
    )
