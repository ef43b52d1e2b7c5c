"""The KeyAgreement gRPC service: protobuf in and out, the domain (``model.py``) behind.

Domain errors become gRPC status codes in one place, :func:`_status_of`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from quietwire.keyagreement.calls import CallRecord, CallStore
from quietwire.keyagreement.model import (
    Answer,
    Endpoint,
    Media,
    Mode,
    Offer,
    Plan,
    PlanningError,
    Refusal,
    StreamPlan,
    Tags,
)
from quietwire.keyagreement.outcome import Outcome
from quietwire.keyagreement.planner import Planner
from quietwire.protocols.rtp.stun import IceCredentials
from quietwire.rpc.keyagreement.v1 import keyagreement_pb2 as pb
from quietwire.rpc.keyagreement.v1 import keyagreement_pb2_grpc

if TYPE_CHECKING:  # migration converts through this module (moves.py)
    from quietwire.keyagreement.migration import Migrator

Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")

MODES: dict[Mode, pb.SecurityMode.ValueType] = {
    Mode.ZRTP: pb.SECURITY_MODE_ZRTP,
    Mode.DTLS_SRTP: pb.SECURITY_MODE_DTLS_SRTP,
    Mode.SDES_SRTP: pb.SECURITY_MODE_SDES_SRTP,
    Mode.PLAIN_RTP: pb.SECURITY_MODE_PLAIN_RTP,
}
OUTCOMES: dict[Outcome, pb.ZrtpState.ValueType] = {
    Outcome.NOT_ZRTP: pb.ZRTP_STATE_UNSPECIFIED,
    Outcome.WAITING: pb.ZRTP_STATE_WAITING,
    Outcome.HANDSHAKING: pb.ZRTP_STATE_HANDSHAKING,
    Outcome.SECURED: pb.ZRTP_STATE_SECURED,
    Outcome.FAILED: pb.ZRTP_STATE_FAILED,
    Outcome.MISMATCH: pb.ZRTP_STATE_BINDING_MISMATCH,
    Outcome.CLEAR: pb.ZRTP_STATE_CLEAR,
}


def media_of(described: Sequence[pb.MediaDescription]) -> tuple[Media, ...]:
    return tuple(
        Media(
            port=m.port,
            protocol=m.protocol,
            connection_address=m.connection_address,
            rtcp_port=m.rtcp_port,
            rtcp_mux=m.rtcp_mux,
            zrtp_hash=m.zrtp_hash,
            sdes=bool(m.crypto),
            dtls=bool(m.fingerprints),
            ice=IceCredentials(m.ice_ufrag, m.ice_pwd) if m.ice_ufrag and m.ice_pwd else None,
        )
        for m in described
    )


def tags_of(tags: pb.DialogTags) -> Tags:
    return Tags(tags.from_tag, tags.to_tag)


def offer_of(r: pb.PlanOfferRequest) -> Offer:
    return Offer(
        call_id=r.call_id,
        media=media_of(r.media),
        tags=tags_of(r.tags),
        reoffer=r.reoffer,
        from_callee=r.from_callee,
        caller=r.caller,
        callee=r.callee,
        replica=r.replica,
    )


def answer_of(r: pb.PlanAnswerRequest) -> Answer:
    return Answer(r.call_id, media_of(r.media), tags_of(r.tags), r.from_caller, r.provisional)


def _endpoint(e: Endpoint) -> pb.RelayEndpoint:
    return pb.RelayEndpoint(host=e.host, rtp_port=e.rtp_port, rtcp_port=e.rtcp_port)


def media_plans(streams: Sequence[StreamPlan | None]) -> list[pb.MediaPlan]:
    """Where each side sends, per m= line (an empty MediaPlan for a disabled one)."""
    return [
        pb.MediaPlan(
            toward_caller=_endpoint(s.toward_caller), toward_callee=_endpoint(s.toward_callee)
        )
        if s is not None
        else pb.MediaPlan()
        for s in streams
    ]


def plan_message(call_id: str, result: Plan | Refusal) -> pb.Plan:
    if isinstance(result, Refusal):
        return pb.Plan(
            call_id=call_id,
            accepted=False,
            mode=MODES[result.mode] if result.mode else pb.SECURITY_MODE_UNSPECIFIED,
            sip_status=result.status,
            warning=result.warning,
        )
    return pb.Plan(
        call_id=call_id,
        accepted=True,
        mode=MODES[result.mode],
        relay_id=result.relay.relay_id,
        media=media_plans(result.streams),
        end_to_end=result.end_to_end,
    )


def security_message(record: CallRecord) -> pb.CallSecurity:
    return pb.CallSecurity(
        call_id=record.call_id,
        mode=MODES[record.mode],
        end_to_end=record.end_to_end,
        zrtp_state=OUTCOMES[record.binding.outcome],
        detail=record.binding.detail,
        secured_at_unix=record.binding.secured_at,
        replica=record.replica,
        relay_id=record.plan.relay.relay_id if record.plan is not None else "",
    )


def _status_of(exc: Exception) -> tuple[grpc.StatusCode, str] | None:
    """The gRPC status a domain error answers with (None: not a domain error)."""
    if isinstance(exc, PlanningError):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    return None


async def _answering(context: Context, work: Awaitable[T]) -> T:
    try:
        return await work
    except Exception as exc:
        status = _status_of(exc)
        if status is None:
            raise
        await context.abort(*status)
        raise


class KeyAgreementServicer(keyagreement_pb2_grpc.KeyAgreementServicer):
    def __init__(
        self, planner: Planner, store: CallStore, migrator: Migrator | None = None
    ) -> None:
        self.planner = planner
        self.store = store
        self.migrator = migrator

    async def PlanOffer(self, request: pb.PlanOfferRequest, context: Context) -> pb.Plan:
        result = await _answering(context, self.planner.offer(offer_of(request)))
        return plan_message(request.call_id, result)

    async def PlanAnswer(self, request: pb.PlanAnswerRequest, context: Context) -> pb.Plan:
        result = await _answering(context, self.planner.answer(answer_of(request)))
        return plan_message(request.call_id, result)

    async def EndCall(self, request: pb.EndCallRequest, context: Context) -> pb.EndCallResponse:
        end = self.planner.end(request.call_id, request.reason, tags_of(request.tags))
        await _answering(context, end)
        return pb.EndCallResponse()

    async def GetCallSecurity(
        self, request: pb.GetCallSecurityRequest, context: Context
    ) -> pb.CallSecurity:
        record = await self.store.get(request.call_id)
        if record is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such call")
        return security_message(record)

    async def ListCalls(
        self, request: pb.ListCallsRequest, context: Context
    ) -> pb.ListCallsResponse:
        records = await self.store.live(request.limit or 100)
        return pb.ListCallsResponse(calls=[security_message(r) for r in records])

    async def MigrateCall(
        self, request: pb.MigrateCallRequest, context: Context
    ) -> pb.MigrateCallResponse:
        if self.migrator is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "call migration is off here")
        done = await self.migrator.migrate(
            request.call_id, request.to_relay, request.reason or "operator"
        )
        if not done.found:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such call")
        return pb.MigrateCallResponse(
            moved=done.moved,
            from_relay=done.from_relay,
            to_relay=done.to_relay,
            detail=done.detail,
            ended=done.ended,
        )

    async def MigrateRelay(
        self, request: pb.MigrateRelayRequest, context: Context
    ) -> pb.MigrateRelayResponse:
        if self.migrator is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "call migration is off here")
        if not request.relay_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "relay_id is required")
        done = await self.migrator.migrate_relay(
            request.relay_id, request.to_relay, request.reason or "drain"
        )
        return pb.MigrateRelayResponse(moved=done.moved, ended=done.ended, failed=done.failed)
