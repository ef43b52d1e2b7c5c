"""What the proxy asks the media planner about SDP outside the 2xx (signaling/early.py):
which answers and offers it plans, with which flags, and what it forwards. The
planner here only records its calls; keyagreement's side is tests/security."""

from __future__ import annotations

from dataclasses import dataclass, field

from quietwire.protocols.sip.message import Response, reply
from quietwire.protocols.sip.transaction import ServerInviteTransaction, ServerKey
from quietwire.rpc.keyagreement.v1.keyagreement_pb2 import DialogTags
from quietwire.signaling.contexts import Context
from quietwire.signaling.dialogs import Party
from quietwire.signaling.early import (
    CHANGED_OFFER,
    MAX_EARLY_DIALOGS,
    SECOND_OFFER,
    early_party,
    final_sdp,
    provisional_sdp,
)
from quietwire.signaling.flows import Flow
from quietwire.signaling.media import Offer, OfferKind, Refusal, hidden_origin
from quietwire.signaling.tokens import RouteToken

from tests.unit.test_signaling_proxy import request
from tests.unit.test_sip_transactions import Clock

SDP_A, SDP_B = b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n", b"v=0\r\nm=audio 5000 RTP/AVP 0\r\n"


@dataclass
class Recorder:
    """A media planner that plans everything (``planned:`` + the SDP), or gives
    ``refusal``, and notes each call."""

    calls: list[tuple[str, bytes, bool, bool]] = field(default_factory=list)
    offers: list[Offer] = field(default_factory=list)
    refusal: Refusal | None = None
    ended: list[str] = field(default_factory=list)

    async def offer(self, offer: Offer) -> bytes | Refusal:
        self.offers.append(offer)
        return self.refusal or b"planned:" + offer.sdp

    async def answer(
        self,
        call_id: str,
        sdp: bytes,
        from_caller: bool = False,
        *,
        tags: DialogTags,
        provisional: bool = False,
    ) -> bytes | Refusal:
        self.calls.append((tags.to_tag, sdp, from_caller, provisional))
        return self.refusal or b"planned:" + sdp

    async def end(self, call_id: str, tags: DialogTags) -> None:
        self.ended.append(call_id)


def ringing(with_offer: bool = True) -> Context:
    """An initial INVITE being forwarded (its offer planned, or none in it)."""
    invite = request("INVITE", body=SDP_A if with_offer else b"")
    server = ServerInviteTransaction(invite, True, Clock())
    flow = Flow("r1.1", "TLS", ("192.0.2.1", 5061), None)
    context = Context(invite, server, flow, ServerKey.of(invite), "192.0.2.1")
    context.initial_invite = True
    if with_offer:
        context.offer_from_callee = False
    else:
        context.offer_in_2xx_from_callee = True
    return context


def response(context: Context, status: int, to_tag: str, body: bytes) -> Response:
    out = reply(context.request, status, "x", to_tag=to_tag)
    out.body = body
    return out


async def test_an_early_answer_is_planned_once_per_fork_and_sdp() -> None:
    planner, context = Recorder(), ringing()
    first = await provisional_sdp(planner, context, response(context, 183, "b1", SDP_B))
    again = await provisional_sdp(planner, context, response(context, 183, "b1", SDP_B))
    assert first == again == b"planned:" + SDP_B
    assert planner.calls == [("b1", SDP_B, False, True)]  # provisional: an early dialog
    await provisional_sdp(planner, context, response(context, 183, "b2", SDP_A))
    assert context.early.holder == "b2"


async def test_forks_past_the_cap_go_on_without_sdp() -> None:
    planner, context = Recorder(), ringing()
    for n in range(MAX_EARLY_DIALOGS):
        await provisional_sdp(planner, context, response(context, 183, f"b{n}", SDP_B))
    assert await provisional_sdp(planner, context, response(context, 183, "late", SDP_B)) is None
    assert len(planner.calls) == MAX_EARLY_DIALOGS


async def test_an_18x_without_a_to_tag_is_planned_nowhere() -> None:
    planner, context = Recorder(), ringing()
    untagged = reply(context.request, 183, "x")
    untagged.body = SDP_B
    assert await provisional_sdp(planner, context, untagged) is None
    assert not planner.calls


async def test_the_2xx_after_early_answers() -> None:
    """Same or changed SDP: planned as final. None from the holder: a confirmation
    (no media); none from another fork: its latched answer takes the relay over."""
    planner, context = Recorder(), ringing()
    for tag in ("b1", "b2"):
        await provisional_sdp(planner, context, response(context, 183, tag, SDP_B))
    planner.calls.clear()
    assert await final_sdp(planner, context, response(context, 200, "b2", b"")) is None
    assert await final_sdp(planner, context, response(context, 200, "b1", b"")) is None
    changed = await final_sdp(planner, context, response(context, 200, "b1", SDP_A))
    assert changed == b"planned:" + SDP_A
    assert planner.calls == [
        ("b2", b"", False, False),
        ("b1", SDP_B, False, False),
        ("b1", SDP_A, False, False),
    ]
    assert await final_sdp(planner, context, response(context, 200, "b9", b"")) is None


async def test_an_offer_in_a_reliable_18x_is_the_only_one() -> None:
    planner, context = Recorder(), ringing(with_offer=False)
    offered = await provisional_sdp(planner, context, response(context, 183, "b1", SDP_B))
    assert offered == b"planned:" + SDP_B
    [offer] = planner.offers
    assert (offer.kind, offer.from_callee, offer.tags.to_tag) == (OfferKind.INITIAL, True, "b1")
    other_fork = await provisional_sdp(planner, context, response(context, 183, "b2", SDP_B))
    assert other_fork is SECOND_OFFER
    assert await final_sdp(planner, context, response(context, 200, "b1", SDP_B)) == offered
    assert await final_sdp(planner, context, response(context, 200, "b1", SDP_A)) is CHANGED_OFFER
    assert len(planner.offers) == 1


def test_the_route_token_tells_who_sends_in_an_early_dialog() -> None:
    token = RouteToken("r1.1", "r1.2", "at", "c1", 0)
    from_caller = request("UPDATE", to="<sip:bob@example.org>;tag=bt")
    from_callee = request(
        "UPDATE", from_="<sip:bob@example.org>;tag=bt", to="<sip:alice@example.org>;tag=at"
    )
    neither = request("UPDATE", from_="<sip:bob@example.org>;tag=bt", to="<sip:x@y>;tag=zz")
    assert early_party(token, from_caller) is Party.CALLER
    assert early_party(token, from_callee) is Party.CALLEE
    assert early_party(token, neither) is None
    assert early_party(None, from_caller) is None
    assert early_party(token, request("UPDATE")) is None  # no To tag: no dialog


def test_origin_names_no_phone() -> None:
    assert hidden_origin("bob 1 2 IN IP4 192.0.2.7") == "bob 1 2 IN IP4 127.0.0.1"
    assert hidden_origin("- 1 2 IN IP6 2001:db8::7") == "- 1 2 IN IP6 ::1"
    assert hidden_origin("odd") == "odd"
