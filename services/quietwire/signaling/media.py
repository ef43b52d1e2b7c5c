"""The seam where calls get their media plan: keyagreement and its relays.

At an offer the proxy asks :class:`KeyAgreementPlanner` for a plan (policy,
a relay) and forwards the SDP rewritten toward the relay leg that faces the
receiver; at the answer, the same the other way. A refusal becomes a SIP
error with a Warning that says why (488 for policy). :class:`Passthrough`
leaves SDP alone (tests of signaling alone; a deployment without relays).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Protocol

import grpc

from quietwire.protocols.sdp import ice
from quietwire.protocols.sdp.session import Connection, ParseError, SessionDescription
from quietwire.protocols.sip.headers import NameAddr
from quietwire.protocols.sip.message import Message
from quietwire.rpc.keyagreement.v1 import keyagreement_pb2 as pb
from quietwire.rpc.keyagreement.v1 import keyagreement_pb2_grpc
from quietwire.runtime.channels import open_channel
from quietwire.runtime.outbox import EndOutbox
from quietwire.runtime.tls import TlsFiles

log = logging.getLogger(__name__)
PLAN_TIMEOUT = 5.0
#: What an ``o=`` line names in place of the phone's address, per address type.
ORIGIN_PLACEHOLDER = {"IP4": "127.0.0.1", "IP6": "::1"}


class OfferKind(enum.Enum):
    """Which SDP offer the planner sees (RFC 3264)."""

    #: The INVITE that starts a call: caller and callee are known.
    INITIAL = "initial"
    #: Mid-call, in the call's own dialog: a re-INVITE or an UPDATE (RFC 3311).
    REOFFER = "reoffer"


@dataclass(frozen=True, slots=True)
class Offer:
    """An SDP offer for the planner to see, and where it stands in its call."""

    call_id: str
    kind: OfferKind
    sdp: bytes
    #: The dialog it belongs to (keyagreement binds the plan to it).
    tags: pb.DialogTags
    #: Made by the callee (a re-offer from the called phone).
    from_callee: bool = False
    #: The call's users, for an initial offer (each may have a stricter policy).
    caller: str = ""
    callee: str = ""


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    warning: str

    @property
    def reason(self) -> str:
        return {488: "Not Acceptable Here", 503: "Service Unavailable"}.get(
            self.status, "Server Internal Error"
        )


def message_tags(message: Message) -> pb.DialogTags:
    """A SIP message's From and To tags: keyagreement binds a plan to its dialog."""
    return pb.DialogTags(from_tag=message.from_.tag or "", to_tag=message.to.tag or "")


def reversed_tags(message: Message) -> pb.DialogTags:
    """A message's tags as the dialog's other party sends them: those of the offer
    in a 2xx (made by the responder) or of the answer in an ACK (keyagreement reads
    an offer's tags as its sender's, an answer's as a response's)."""
    return pb.DialogTags(from_tag=message.to.tag or "", to_tag=message.from_.tag or "")


def dialog_tags(caller: str, callee: str) -> pb.DialogTags:
    """The tags of an established dialog (its tagged From and To values), as the caller sends."""
    return pb.DialogTags(
        from_tag=NameAddr.parse(caller).tag or "", to_tag=NameAddr.parse(callee).tag or ""
    )


class MediaPlanner(Protocol):
    async def offer(self, offer: Offer) -> bytes | Refusal:
        """The SDP to forward for an offer, or why the call is refused."""
        ...

    async def answer(
        self,
        call_id: str,
        sdp: bytes,
        from_caller: bool = False,
        *,
        tags: pb.DialogTags,
        provisional: bool = False,
    ) -> bytes | Refusal:
        """The SDP to forward for an answer (``provisional``: in an 18x, early media)."""
        ...

    async def end(self, call_id: str, tags: pb.DialogTags) -> None: ...


class Passthrough:
    async def offer(self, offer: Offer) -> bytes | Refusal:
        return offer.sdp

    async def answer(
        self,
        call_id: str,
        sdp: bytes,
        from_caller: bool = False,
        *,
        tags: pb.DialogTags,
        provisional: bool = False,
    ) -> bytes | Refusal:
        return sdp

    async def end(self, call_id: str, tags: pb.DialogTags) -> None:
        return None


def describe(sdp: SessionDescription) -> list[pb.MediaDescription]:
    """The SDP's streams as keyagreement reads them (never SDP text over gRPC)."""
    out = []
    for m in sdp.media:
        connection = sdp.media_connection(m)
        credentials = ice.credentials(sdp, m)
        out.append(
            pb.MediaDescription(
                media=m.media,
                connection_address=connection.address if connection else "",
                port=m.port,
                protocol=m.protocol,
                formats=m.formats,
                rtcp_port=m.rtcp_port or 0,
                rtcp_mux=m.rtcp_mux,
                zrtp_hash=m.zrtp_hash or "",
                crypto=[pb.Crypto(tag=c.tag, suite=c.suite) for c in m.crypto],
                fingerprints=[
                    pb.Fingerprint(hash_function=f.hash_function, value=f.value)
                    for f in m.fingerprints
                ],
                ice_ufrag=credentials.ufrag if credentials else "",
                ice_pwd=credentials.pwd if credentials else "",
            )
        )
    return out


def rewrite(sdp: SessionDescription, plan: pb.Plan, toward_caller: bool) -> bytes:
    """Point every planned stream at the relay leg that faces the receiver (its
    ICE candidates too; the ICE credentials pass unchanged, see ``sdp.ice``)."""
    for m, media_plan in zip(sdp.media, plan.media, strict=False):
        endpoint = media_plan.toward_caller if toward_caller else media_plan.toward_callee
        if not m.port or not endpoint.rtp_port:
            continue
        m.port = endpoint.rtp_port
        m.set_connection(Connection(endpoint.host))
        if not m.rtcp_mux:
            m.set_attribute("rtcp", str(endpoint.rtcp_port))
        rtcp = None if m.rtcp_mux else endpoint.rtcp_port
        ice.point_candidates_at(m, endpoint.host, endpoint.rtp_port, rtcp)
    relay = str(Connection(_relay_host(plan)))
    sdp.lines = [
        (k, relay if k == "c" else hidden_origin(v) if k == "o" else v) for k, v in sdp.lines
    ]
    return sdp.serialize()


def hidden_origin(value: str) -> str:
    """An ``o=`` value without the phone's address (RFC 8866 section 5.2: it must
    not leave the scope where it means something): a fixed placeholder, the same
    in every SDP of the session as RFC 3264 section 8 needs, as RFC 8829 section
    5.2.1 writes it."""
    parts = value.split()
    if len(parts) != 6 or parts[4] not in ORIGIN_PLACEHOLDER:
        return value
    return " ".join([*parts[:5], ORIGIN_PLACEHOLDER[parts[4]]])


def _relay_host(plan: pb.Plan) -> str:
    return next((m.toward_caller.host for m in plan.media if m.toward_caller.host), "0.0.0.0")  # noqa: S104


class KeyAgreementPlanner:
    def __init__(
        self,
        target: str,
        tls: TlsFiles | None,
        replica: str = "",
        outbox: EndOutbox | None = None,
    ) -> None:
        """``replica``: this signaling replica, named in offers so that a call ended
        while it rings is cancelled where its INVITE transaction lives; ``outbox``:
        where an EndCall waits for keyagreement when it is away."""
        self.target, self.tls, self.replica = target, tls, replica
        self.outbox = outbox
        self.channel: grpc.aio.Channel | None = None

    @property
    def stub(self) -> keyagreement_pb2_grpc.KeyAgreementAsyncStub:
        """Opened on first use: a grpc.aio channel belongs to the loop that creates it."""
        if self.channel is None:
            self.channel = open_channel(self.target, self.tls)
        return keyagreement_pb2_grpc.KeyAgreementStub(self.channel)

    async def offer(self, offer: Offer) -> bytes | Refusal:
        try:
            session = SessionDescription.parse(offer.sdp)
        except ParseError:
            return Refusal(488, "quietwire: the SDP offer does not parse")
        request = pb.PlanOfferRequest(
            call_id=offer.call_id,
            caller=offer.caller,
            callee=offer.callee,
            media=describe(session),
            reoffer=offer.kind is OfferKind.REOFFER,
            from_callee=offer.from_callee,
            replica=self.replica,
            tags=offer.tags,
        )
        try:
            plan = await self.stub.PlanOffer(request, timeout=PLAN_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            log.warning("no media plan", extra={"code": exc.code().name})
            return Refusal(503, "quietwire: media planning unavailable")
        if not plan.accepted:
            return Refusal(plan.sip_status or 488, plan.warning)
        return rewrite(session, plan, toward_caller=offer.from_callee)

    async def answer(
        self,
        call_id: str,
        sdp: bytes,
        from_caller: bool = False,
        *,
        tags: pb.DialogTags,
        provisional: bool = False,
    ) -> bytes | Refusal:
        try:
            # No SDP: a 2xx confirming the answer its fork gave before (see .early).
            session = SessionDescription.parse(sdp) if sdp else None
        except ParseError:
            return Refusal(488, "quietwire: the SDP answer does not parse")
        if session is not None and not session.media:
            return Refusal(488, "quietwire: the SDP answer has no media")
        request = pb.PlanAnswerRequest(
            call_id=call_id,
            media=describe(session) if session is not None else [],
            from_caller=from_caller,
            tags=tags,
            provisional=provisional,
        )
        try:
            plan = await self.stub.PlanAnswer(request, timeout=PLAN_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            log.warning("no media plan for the answer", extra={"code": exc.code().name})
            return Refusal(503, "quietwire: media planning unavailable")
        if not plan.accepted:
            return Refusal(plan.sip_status or 488, plan.warning)
        return rewrite(session, plan, toward_caller=not from_caller) if session else b""

    async def end(self, call_id: str, tags: pb.DialogTags) -> None:
        request = pb.EndCallRequest(call_id=call_id, tags=tags)
        try:
            await self.stub.EndCall(request, timeout=PLAN_TIMEOUT)
            return
        except grpc.aio.AioRpcError as exc:
            log.warning("EndCall failed", extra={"code": exc.code().name})
        await self._queue(request)  # after the handler (runtime/aio.py says why)

    async def _queue(self, request: pb.EndCallRequest) -> None:
        """Keep an undelivered EndCall for keyagreement's return (it ends the call then)."""
        if self.outbox is None:
            return
        try:
            await self.outbox.put(request)
        except Exception as exc:  # Redis away too: the relay's media timeout frees the ports
            log.warning("EndCall not queued", extra={"error": type(exc).__name__})
            return
        log.info("EndCall queued for keyagreement", extra={"call_id": request.call_id})

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close(None)
