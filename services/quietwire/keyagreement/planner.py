"""Plans for calls: policy, a relay for the media, and what signaling writes in SDP.

Each audio/video stream of a call gets one relay session (``runtime.streams``)
with a caller leg and a callee leg. The caller's offer tells the relay where
the caller is and which ``a=zrtp-hash`` its Hello must have; the callee's
answer does the same for the callee. The SDP each side receives names the
relay leg facing it.

A new call's offer goes decide (policy, a relay) → claim its Call-ID → allocate
(every relay session, all released if one fails) → record the plan. The plan
is bound to the dialog of its INVITE: an initial INVITE reusing a planned
Call-ID is refused, and re-offers, answers and ends must come from that dialog.
An answer in an 18x (early media) is planned like a 2xx's, but binds an early
dialog only: when the INVITE forked, the relay's callee leg follows the latest
early answer, and the 2xx that wins takes it over for good.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

import grpc
from prometheus_client import Counter

from quietwire.keyagreement.calls import CallRecord, CallStore
from quietwire.keyagreement.model import (
    Answer,
    Dialog,
    Endpoint,
    Media,
    Mode,
    Offer,
    Plan,
    PlanningError,
    Refusal,
    Relay,
    Side,
    StreamPlan,
    Tags,
)
from quietwire.keyagreement.outcome import Binding, Outcome
from quietwire.keyagreement.policy import Policy, downgrade, judge, mode_of
from quietwire.keyagreement.userpolicies import UserPolicies
from quietwire.rpc.relay.v1 import relay_pb2, relay_pb2_grpc
from quietwire.runtime.channels import ChannelPool
from quietwire.runtime.registry import RelayEntry, RelayRegistry
from quietwire.runtime.streams import stream_id

log = logging.getLogger(__name__)
#: Relays an offer is tried on before it is refused (each unreachable one skipped).
RELAY_ATTEMPTS = 3
RELAY_TIMEOUT = 3.0
LEG_SIDES = {Side.CALLER: relay_pb2.LEG_SIDE_CALLER, Side.CALLEE: relay_pb2.LEG_SIDE_CALLEE}
NOT_THE_DIALOG = Counter(
    "quietwire_plan_dialog_mismatches",
    "Requests refused because their dialog is not the one the call's plan is bound to",
    ["request"],
)
TAKEN = Refusal(403, "quietwire: this Call-ID belongs to another call")
NO_PLAN = Refusal(481, "quietwire: no plan for this call")
OTHER_DIALOG = Refusal(481, "quietwire: not the dialog of this call")


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


def first_hash(media: Sequence[Media]) -> str:
    """The a=zrtp-hash of the first active stream ("" when none)."""
    return next((m.zrtp_hash for m in media if m.zrtp_hash and m.port), "")


def _remote(m: Media) -> tuple[relay_pb2.Address, relay_pb2.Address]:
    rtcp_port = m.port if m.rtcp_mux else (m.rtcp_port or m.port + 1)
    return (
        relay_pb2.Address(host=m.connection_address, port=m.port),
        relay_pb2.Address(host=m.connection_address, port=rtcp_port),
    )


def _endpoint(leg: relay_pb2.Leg) -> Endpoint:
    return Endpoint(leg.rtp.host, leg.rtp.port, leg.rtcp.port)


def stream_plan(allocated: relay_pb2.AllocateResponse) -> StreamPlan:
    """The relay legs facing each side, as a relay allocated them (KeyError: one missing)."""
    legs = {leg.side: leg for leg in allocated.legs}
    return StreamPlan(
        _endpoint(legs[relay_pb2.LEG_SIDE_CALLER]), _endpoint(legs[relay_pb2.LEG_SIDE_CALLEE])
    )


def replaceable(existing: CallRecord, offer: Offer) -> bool:
    """An ended call's Call-ID may get a new plan from the same caller and dialog
    (a retried INVITE after 407, 422 or a 3xx keeps its Call-ID, RFC 3261 section
    8.1.3.5); nothing else may take a planned Call-ID."""
    d = existing.dialog
    return bool(existing.ended) and (d.caller, d.caller_tag) == (offer.caller, offer.tags.from_tag)


class Planner:
    def __init__(
        self,
        store: CallStore,
        registry: RelayRegistry,
        relays: RelayClients,
        policy: Policy,
        users: UserPolicies,
        selector: RelaySelector | None = None,
        on_relay: Callable[[Relay], None] = lambda relay: None,
    ) -> None:
        self.store, self.registry, self.relays = store, registry, relays
        #: The deployment's policy; users may have their own (:class:`UserPolicies`).
        self.policy, self.users = policy, users
        self.selector = selector or LeastLoaded()
        #: Told about a relay before a call's media can flow through it (event streams).
        self.on_relay = on_relay

    # -- offers ----------------------------------------------------------------------------

    async def offer(self, offer: Offer) -> Plan | Refusal:
        existing = await self.store.get(offer.call_id)
        if offer.reoffer and existing is not None:
            return await self._reoffer(existing, offer)
        if existing is not None and not replaceable(existing, offer):
            NOT_THE_DIALOG.labels("initial-offer").inc()
            return TAKEN
        # A new call (or a re-offer for a call this service does not know: planned anew).
        decision = await self._decide(offer)
        if isinstance(decision, Refusal):
            return decision
        record, relay = decision
        claim = await self.store.create(record, replacing=existing)
        if claim is None:  # another offer took this Call-ID meanwhile
            NOT_THE_DIALOG.labels("initial-offer").inc()
            return TAKEN
        try:
            relay, streams = await self._place(relay, offer)
        except BaseException:
            await self.store.delete(claim)
            raise
        plan = Plan(record.mode, record.end_to_end, relay, streams)
        if await self.store.change(offer.call_id, _planned(plan)) is None:
            # Ended while its sessions were being allocated: give them back.
            await self.release(relay, offer.call_id, len(offer.media))
            return Refusal(487, "quietwire: the call ended while it was being planned")
        log.info("call planned", extra={"mode": str(plan.mode), "streams": len(streams)})
        return plan

    async def _decide(self, offer: Offer) -> tuple[CallRecord, Relay] | Refusal:
        """A new call's record before its relay sessions exist (no plan yet), and the
        relay for them; or why the offer is refused."""
        policy = await self.users.for_call(offer.caller, offer.callee, self.policy)
        verdict = judge(offer.media, policy)
        if not verdict.accepted:
            return Refusal(488, verdict.warning, verdict.mode)
        entry = self.selector.choose(await self.registry.alive())
        if entry is None:
            return Refusal(503, "quietwire: no media relay available")
        # An initial offer comes in the INVITE (no To tag yet) or, after an INVITE
        # without SDP, in the callee's 2xx, whose To tag fixes the callee's side.
        dialog = Dialog(offer.caller, offer.callee, offer.tags.from_tag, offer.tags.to_tag)
        if offer.reoffer:  # the tags of a request from ``side`` inside the dialog
            dialog = _dialog_of_reoffer(offer)
        signaled = first_hash(offer.media)
        record = CallRecord(
            call_id=offer.call_id,
            dialog=dialog,
            policy=policy,
            mode=verdict.mode,
            end_to_end=verdict.end_to_end,
            replica=offer.replica,
            hash_caller=signaled if offer.side is Side.CALLER else "",
            hash_callee=signaled if offer.side is Side.CALLEE else "",
            binding=Binding(Outcome.WAITING if verdict.mode is Mode.ZRTP else Outcome.NOT_ZRTP),
        )
        return record, Relay(entry.relay_id, entry.grpc)

    async def _place(
        self, relay: Relay, offer: Offer
    ) -> tuple[Relay, tuple[StreamPlan | None, ...]]:
        """The offer's sessions on ``relay``, or, when it cannot be reached (one just
        restarted, or dead and still in the registry), on the next relay the
        selector picks: RELAY_ATTEMPTS relays at most, each asked at once. When none
        could be reached, the selector's pick is asked once more, waiting up to
        RELAY_TIMEOUT for a connection: a relay back from a restart on its old address
        is in the registry again while the channel to it still waits out its
        reconnection backoff (up to a second), and asked at once it fails."""
        tried: set[str] = set()
        patient = False
        while True:
            self.on_relay(relay)
            try:
                return relay, await self._allocate(relay, offer, patient)
            except PlanningError as exc:
                tried.add(relay.relay_id)
                alive = await self.registry.alive()
                others = [e for e in alive if e.relay_id not in tried]
                entry = self.selector.choose(others) if len(tried) < RELAY_ATTEMPTS else None
                if entry is None and not patient and _unreachable(exc):
                    entry, patient = self.selector.choose(alive), True
                if entry is None:
                    raise
                log.warning(
                    "relay allocation failed: "
                    + ("waiting for a connection" if patient else "trying another"),
                    extra={"relay": relay.relay_id, "error": str(exc)},
                )
                relay = Relay(entry.relay_id, entry.grpc)

    async def _allocate(
        self, relay: Relay, offer: Offer, patient: bool = False
    ) -> tuple[StreamPlan | None, ...]:
        """A relay session per active stream, facing the offerer at its SDP address
        (``patient``: waiting for a connection to the relay within the deadline, not
        failing at once without one); on any failure every session asked for is
        released and the error raised."""
        stub = self.relays.stub(relay.grpc)
        side = LEG_SIDES[offer.side]
        streams: list[StreamPlan | None] = []
        try:
            for index, m in enumerate(offer.media):
                if not m.port:
                    streams.append(None)
                    continue
                session = stream_id(offer.call_id, index)
                allocated = await stub.Allocate(
                    relay_pb2.AllocateRequest(
                        call_id=session,
                        legs=[
                            relay_pb2.LegSpec(
                                side=relay_pb2.LEG_SIDE_CALLER,
                                rtcp_mux=m.rtcp_mux,
                                zrtp_hash=m.zrtp_hash if side == relay_pb2.LEG_SIDE_CALLER else "",
                            ),
                            relay_pb2.LegSpec(side=relay_pb2.LEG_SIDE_CALLEE, rtcp_mux=m.rtcp_mux),
                        ],
                    ),
                    timeout=RELAY_TIMEOUT,
                    wait_for_ready=patient,
                )
                await self._update_stream(stub, session, side, m)
                streams.append(stream_plan(allocated))
        except BaseException as exc:
            await asyncio.shield(self.release(relay, offer.call_id, len(streams) + 1))
            if isinstance(exc, grpc.aio.AioRpcError | KeyError):
                raise PlanningError(f"relay allocation failed: {_why(exc)}") from exc
            raise
        return tuple(streams)

    async def _reoffer(self, record: CallRecord, offer: Offer) -> Plan | Refusal:
        if record.ended:
            return NO_PLAN
        if record.plan is None:
            return Refusal(491, "quietwire: the call's plan is still being made")
        if record.dialog.bound and record.dialog.sender(offer.tags) is not offer.side:
            NOT_THE_DIALOG.labels("reoffer").inc()
            return OTHER_DIALOG
        verdict = judge(offer.media, record.policy)  # what the call was planned under
        if not verdict.accepted:
            return Refusal(488, verdict.warning, verdict.mode)
        if downgrade(record.mode, verdict.mode):
            return Refusal(
                488, "quietwire: re-INVITE would weaken media security; refused", verdict.mode
            )
        await self.update_legs(record.plan.relay, offer.call_id, offer.side, offer.media)
        return record.plan

    # -- answers and ends --------------------------------------------------------------------

    async def answer(self, answer: Answer) -> Plan | Refusal:
        record = await self.store.get(answer.call_id)
        if record is None or record.plan is None or record.ended:
            return NO_PLAN
        if not _answers(record.dialog, answer):
            NOT_THE_DIALOG.labels("answer").inc()
            return OTHER_DIALOG
        if record.binding.outcome is Outcome.MISMATCH:
            return Refusal(488, f"quietwire: zrtp-mismatch: {record.binding.detail}")
        if not answer.media:
            return await self._confirm(record, answer)
        verdict = judge(answer.media, record.policy)
        if not verdict.accepted:
            return Refusal(488, verdict.warning, verdict.mode)
        weaker = downgrade(record.mode, mode_of(answer.media))

        def answered(current: CallRecord) -> CallRecord | None:
            if not _answers(current.dialog, answer):
                return None  # another 2xx fixed the callee's tag first
            dialog = current.dialog.answered(answer.tags, answer.provisional)
            after = replace(current, dialog=dialog)
            if _took_over(current.dialog, dialog):
                after = another_callee(after)
            if answer.side is Side.CALLEE:
                after = replace(after, hash_callee=first_hash(answer.media))
            elif not after.hash_caller:  # the caller answers in its ACK (offer in the 2xx)
                after = replace(after, hash_caller=first_hash(answer.media))
            if weaker:
                detail = "the answer dropped ZRTP: not end-to-end"
                after = replace(
                    after, end_to_end=False, binding=replace(after.binding, detail=detail)
                )
            return after

        if await self.store.change(answer.call_id, answered) is None:
            NOT_THE_DIALOG.labels("answer").inc()
            return OTHER_DIALOG
        await self.update_legs(record.plan.relay, answer.call_id, answer.side, answer.media)
        return record.plan

    async def _confirm(self, record: CallRecord, answer: Answer) -> Plan | Refusal:
        """An answer without media: the 2xx (no SDP) of the fork whose answer came in
        a reliable 18x (RFC 3262 section 5) or in a PRACK or UPDATE exchange since.
        It confirms that early dialog; the relay already points at its media."""
        if answer.provisional or answer.side is not Side.CALLEE:
            return Refusal(488, "quietwire: an answer without SDP")
        tags = answer.tags

        def confirmed(current: CallRecord) -> CallRecord | None:
            d = current.dialog
            if not d.bound:
                return current
            if (d.caller_tag, d.callee_tag) != (tags.from_tag, tags.to_tag):
                return None  # not the fork whose answer the relay holds
            return replace(current, dialog=replace(d, early=False))

        if await self.store.change(record.call_id, confirmed) is None or record.plan is None:
            NOT_THE_DIALOG.labels("answer").inc()
            return OTHER_DIALOG
        return record.plan

    async def end(self, call_id: str, reason: str, tags: Tags) -> bool:
        """End a call for a request of its own dialog (False: not its dialog, or none)."""
        record = await self.store.get(call_id)
        if record is None or record.ended:
            return False
        if record.dialog.bound and record.dialog.sender(tags) is None:
            NOT_THE_DIALOG.labels("end").inc()
            log.warning("end refused: another dialog", extra={"call_id": call_id})
            return False
        if record.plan is not None:
            await self.release(record.plan.relay, call_id, len(record.plan.streams))
        ended = await self.store.change(
            call_id, lambda r: None if r.ended else replace(r, ended=reason or "ended")
        )
        if ended is not None:
            log.info("call ended", extra={"reason": reason or "ended"})
        return ended is not None

    # -- relay sessions ----------------------------------------------------------------------

    async def update_legs(
        self, relay: Relay, call_id: str, side: Side, media: Sequence[Media]
    ) -> None:
        stub = self.relays.stub(relay.grpc)
        try:
            for index, m in enumerate(media):
                if m.port:
                    await self._update_stream(stub, stream_id(call_id, index), LEG_SIDES[side], m)
        except grpc.aio.AioRpcError as exc:
            raise PlanningError(f"relay update failed: {_why(exc)}") from exc

    @staticmethod
    async def _update_stream(
        stub: relay_pb2_grpc.RelayAsyncStub, session: str, side: int, m: Media
    ) -> None:
        rtp, rtcp = _remote(m)
        await stub.Update(
            relay_pb2.UpdateRequest(
                call_id=session,
                side=relay_pb2.LegSide.ValueType(side),
                remote_rtp=rtp,
                remote_rtcp=rtcp,
                zrtp_hash=m.zrtp_hash,
                # The relay keys the checks this leg's phone sends with the *other*
                # phone's ice-pwd (RFC 8445 section 7.2.2): it pairs both legs' credentials.
                ice_ufrag=m.ice.ufrag if m.ice else "",
                ice_pwd=m.ice.pwd if m.ice else "",
            ),
            timeout=RELAY_TIMEOUT,
        )

    async def release(self, relay: Relay, call_id: str, count: int) -> None:
        """Release the first ``count`` relay sessions of a call (missing ones are fine)."""
        stub = self.relays.stub(relay.grpc)
        for index in range(count):
            try:
                await stub.Release(
                    relay_pb2.ReleaseRequest(call_id=stream_id(call_id, index)),
                    timeout=RELAY_TIMEOUT,
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    log.warning("relay release failed", extra={"code": exc.code().name})


def _planned(plan: Plan) -> Callable[[CallRecord], CallRecord | None]:
    """Record the plan on the claim, unless the call ended meanwhile."""

    def step(record: CallRecord) -> CallRecord | None:
        if record.ended or record.plan is not None:
            return None
        return replace(record, plan=plan)

    return step


def _answers(dialog: Dialog, answer: Answer) -> bool:
    """Whether a response with these tags answers within this dialog (or takes an
    early one over, :meth:`Dialog.answered`), from the side it claims."""
    if not dialog.bound:
        return True
    return dialog.answered(answer.tags, answer.provisional).responder(answer.tags) is answer.side


def _took_over(before: Dialog, after: Dialog) -> bool:
    """Another fork's callee answered in place of the early dialog's."""
    return bool(before.callee_tag) and after.callee_tag != before.callee_tag


def another_callee(record: CallRecord) -> CallRecord:
    """The call once another fork's callee took its callee side over: what the
    relay showed of the first one's ZRTP (RFC 6189 section 8.1 binding) and its
    answer's weakening no longer hold; the caller's Hello still does."""
    binding = record.binding
    if binding.outcome not in (Outcome.NOT_ZRTP, Outcome.MISMATCH):
        progress = Outcome.HANDSHAKING if binding.seen_caller else Outcome.WAITING
        binding = Binding(progress, seen_caller=binding.seen_caller)
    end_to_end = record.plan.end_to_end if record.plan is not None else record.end_to_end
    return replace(record, binding=binding, end_to_end=end_to_end, hash_callee="")


def _dialog_of_reoffer(offer: Offer) -> Dialog:
    """The dialog a re-offer names (its From tag is the offerer's, its To tag the other's)."""
    if offer.side is Side.CALLER:
        return Dialog("", "", offer.tags.from_tag, offer.tags.to_tag)
    return Dialog("", "", offer.tags.to_tag, offer.tags.from_tag)


def _unreachable(exc: PlanningError) -> bool:
    """The relay was not reached (no connection to it), as opposed to refusing."""
    cause = exc.__cause__
    return isinstance(cause, grpc.aio.AioRpcError) and cause.code() is grpc.StatusCode.UNAVAILABLE


def _why(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return type(exc).__name__
