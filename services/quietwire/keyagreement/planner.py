"""Plans for calls: policy, a relay for the media, and what signaling writes in SDP.

Each audio/video stream of a call gets one relay session (``<call-id>#<n>``)
with a caller leg and a callee leg. The caller's offer tells the relay where
the caller is and which ``a=zrtp-hash`` its Hello must have; the callee's
answer does the same for the callee. The SDP each side receives names the
relay leg facing it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import grpc

from quietwire.keyagreement.calls import (
    ENDED_TTL,
    CallRecord,
    CallStore,
    answer_downgrades,
    call_policy,
    decide_offer,
    first_hash,
)
from quietwire.keyagreement.policy import Policy, judge
from quietwire.keyagreement.userpolicies import UserPolicies
from quietwire.rpc.keyagreement.v1 import keyagreement_pb2 as pb
from quietwire.rpc.relay.v1 import relay_pb2, relay_pb2_grpc
from quietwire.runtime.channels import ChannelPool
from quietwire.runtime.registry import RelayEntry, RelayRegistry

log = logging.getLogger(__name__)
RELAY_TIMEOUT = 3.0
CALLER, CALLEE = relay_pb2.LEG_SIDE_CALLER, relay_pb2.LEG_SIDE_CALLEE


class RelaySelector(Protocol):
    def choose(self, relays: Sequence[RelayEntry]) -> RelayEntry | None: ...


class LeastLoaded:
    """The alive relay with the lowest active/capacity that is not draining and not full."""

    def choose(self, relays: Sequence[RelayEntry]) -> RelayEntry | None:
        usable = [r for r in relays if not r.draining and r.active < r.capacity]
        return min(usable, key=lambda r: (r.load, r.relay_id), default=None)


class RelayClients(ChannelPool):
    def stub(self, address: str) -> relay_pb2_grpc.RelayAsyncStub:
        return relay_pb2_grpc.RelayStub(self.channel(address))


def _remote(m: pb.MediaDescription) -> tuple[relay_pb2.Address, relay_pb2.Address]:
    rtcp_port = m.port if m.rtcp_mux else (m.rtcp_port or m.port + 1)
    return (
        relay_pb2.Address(host=m.connection_address, port=m.port),
        relay_pb2.Address(host=m.connection_address, port=rtcp_port),
    )


def _endpoint(leg: relay_pb2.Leg) -> pb.RelayEndpoint:
    return pb.RelayEndpoint(host=leg.rtp.host, rtp_port=leg.rtp.port, rtcp_port=leg.rtcp.port)


class Planner:
    def __init__(
        self,
        store: CallStore,
        registry: RelayRegistry,
        relays: RelayClients,
        policy: Policy,
        users: UserPolicies,
        selector: RelaySelector | None = None,
        on_relay: Callable[[str], None] = lambda address: None,
    ) -> None:
        self.store, self.registry, self.relays = store, registry, relays
        #: The deployment's policy; users may have their own (:class:`UserPolicies`).
        self.policy, self.users = policy, users
        self.selector = selector or LeastLoaded()
        #: Told about a relay before a call's media can flow through it (event streams).
        self.on_relay = on_relay

    async def offer(self, request: pb.PlanOfferRequest) -> pb.Plan:
        existing = await self.store.get(request.call_id)
        if request.reoffer and existing is not None:
            policy = call_policy(existing, self.policy)  # what the call was planned under
        else:  # a new call follows the stricter of its users
            policy = await self.users.for_call(request.caller, request.callee, self.policy)
        decision = decide_offer(existing, request, policy)
        if not decision.verdict_accepted:
            return pb.Plan(
                call_id=request.call_id,
                accepted=False,
                mode=decision.mode,
                sip_status=488,
                warning=decision.warning,
            )
        if existing is not None and existing.values.get("plan"):
            plan = pb.Plan.FromString(bytes.fromhex(existing.values["plan"]))
            side = CALLEE if request.from_callee else CALLER
            await self._update(existing.values["relay_grpc"], request.call_id, side, request.media)
            return plan
        relay = self.selector.choose(await self.registry.alive())
        if relay is None:
            return pb.Plan(
                call_id=request.call_id,
                accepted=False,
                sip_status=503,
                warning="quietwire: no media relay available",
            )
        self.on_relay(relay.grpc)
        stub = self.relays.stub(relay.grpc)
        media: list[pb.MediaPlan] = []
        for index, m in enumerate(request.media):
            if not m.port:
                media.append(pb.MediaPlan())
                continue
            session = f"{request.call_id}#{index}"
            allocated = await stub.Allocate(
                relay_pb2.AllocateRequest(
                    call_id=session,
                    legs=[
                        relay_pb2.LegSpec(side=CALLER, rtcp_mux=m.rtcp_mux, zrtp_hash=m.zrtp_hash),
                        relay_pb2.LegSpec(side=CALLEE, rtcp_mux=m.rtcp_mux),
                    ],
                ),
                timeout=RELAY_TIMEOUT,
            )
            legs = {leg.side: leg for leg in allocated.legs}
            rtp, rtcp = _remote(m)
            await stub.Update(
                relay_pb2.UpdateRequest(
                    call_id=session,
                    side=CALLER,
                    remote_rtp=rtp,
                    remote_rtcp=rtcp,
                    zrtp_hash=m.zrtp_hash,
                ),
                timeout=RELAY_TIMEOUT,
            )
            media.append(
                pb.MediaPlan(
                    toward_caller=_endpoint(legs[CALLER]), toward_callee=_endpoint(legs[CALLEE])
                )
            )
        plan = pb.Plan(
            call_id=request.call_id,
            accepted=True,
            mode=decision.mode,
            relay_id=relay.relay_id,
            media=media,
            end_to_end=decision.end_to_end,
        )
        zrtp = decision.mode == pb.SECURITY_MODE_ZRTP
        await self.store.put(
            request.call_id,
            {
                "mode": int(decision.mode),
                "end_to_end": int(decision.end_to_end),
                "relay_id": relay.relay_id,
                "relay_grpc": relay.grpc,
                "hash_caller": first_hash(request.media),
                "state": int(pb.ZRTP_STATE_WAITING if zrtp else pb.ZRTP_STATE_UNSPECIFIED),
                "policy": policy.value,
                "plan": plan.SerializeToString().hex(),
                "replica": request.replica,
            },
        )
        return plan

    async def answer(self, request: pb.PlanAnswerRequest) -> pb.Plan:
        record = await self.store.get(request.call_id)
        if record is None or not record.values.get("plan"):
            return pb.Plan(
                call_id=request.call_id,
                accepted=False,
                sip_status=481,
                warning="quietwire: no plan for this call",
            )
        refusal = self._answer_refusal(record, request.media)
        if refusal:
            return pb.Plan(call_id=request.call_id, accepted=False, sip_status=488, warning=refusal)
        plan = pb.Plan.FromString(bytes.fromhex(record.values["plan"]))
        side = CALLER if request.from_caller else CALLEE
        await self._update(record.values["relay_grpc"], request.call_id, side, request.media)
        fields: dict[str, str | int] = {}
        if side == CALLEE:
            fields["hash_callee"] = first_hash(request.media)
        if answer_downgrades(record, request.media):
            fields.update(end_to_end=0, detail="the answer dropped ZRTP: not end-to-end")
        if fields:
            await self.store.put(request.call_id, fields)
        return plan

    def _answer_refusal(self, record: CallRecord, media: Sequence[pb.MediaDescription]) -> str:
        """Why an answer may not set up the call ("" when it may): the policy, or a
        ZRTP binding already failed while the callee was ringing."""
        if record.state == pb.ZRTP_STATE_BINDING_MISMATCH:
            return f"quietwire: zrtp-mismatch: {record.values.get('detail', '')}"
        verdict = judge(media, call_policy(record, self.policy))
        return "" if verdict.accepted else verdict.warning

    async def _update(
        self, relay_grpc: str, call_id: str, side: int, media: Sequence[pb.MediaDescription]
    ) -> None:
        stub = self.relays.stub(relay_grpc)
        for index, m in enumerate(media):
            if not m.port:
                continue
            rtp, rtcp = _remote(m)
            await stub.Update(
                relay_pb2.UpdateRequest(
                    call_id=f"{call_id}#{index}",
                    side=relay_pb2.LegSide.ValueType(side),
                    remote_rtp=rtp,
                    remote_rtcp=rtcp,
                    zrtp_hash=m.zrtp_hash,
                ),
                timeout=RELAY_TIMEOUT,
            )

    async def end(self, call_id: str, reason: str) -> None:
        record = await self.store.get(call_id)
        if record is None:
            return
        plan = pb.Plan.FromString(bytes.fromhex(record.values.get("plan", "")))
        stub = self.relays.stub(record.values["relay_grpc"])
        for index, _ in enumerate(plan.media):
            try:
                await stub.Release(
                    relay_pb2.ReleaseRequest(call_id=f"{call_id}#{index}"), timeout=RELAY_TIMEOUT
                )
            except grpc.aio.AioRpcError as exc:
                log.warning("relay release failed", extra={"code": exc.code().name})
        await self.store.put(call_id, {"ended": reason or "ended"}, ttl=ENDED_TTL)
