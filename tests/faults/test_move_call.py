"""MoveCall (issue 15): signaling re-INVITEs both phones of an established call
toward another relay, as the other party, each with the SDP it was last sent
re-pointed; the phones' own requests afterwards (re-INVITE, BYE) still reach
the other side with a CSeq above the platform's, and their answers come back
with the phone's own. A phone that refuses the move makes it REFUSED.

Every service is its own process (tests/faults/cluster.py) with two relays: the
test allocates the new legs on the relay that does not carry the call, as
keyagreement's MigrateCall will. No test here stops a service, and each makes its
own call between its own phones: they share one cluster (started once, in this
module's event loop)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from quietwire.phone.useragent import Dialog, UserAgent
from quietwire.protocols.sdp.session import SessionDescription
from quietwire.protocols.sip.message import Message, Request
from quietwire.rpc.keyagreement.v1 import keyagreement_pb2 as ka
from quietwire.rpc.relay.v1 import relay_pb2, relay_pb2_grpc
from quietwire.rpc.signaling.v1 import signaling_pb2, signaling_pb2_grpc
from quietwire.runtime.channels import open_channel
from quietwire.runtime.streams import stream_id

from tests.faults.cluster import DOMAIN, Cluster, cluster_files, start_all
from tests.integration.signaling_harness import establish, next_request
from tests.security.test_early_answer import acked, progress, respond, ringing
from tests.support.moves import SDP, WITHIN, offer, take_move
from tests.support.wait import eventually

Moved = signaling_pb2.MoveCallResponse.Outcome


@dataclass
class Call:
    alice: UserAgent
    bob: UserAgent
    #: Each phone's own dialog.
    caller: Dialog
    callee: Dialog
    #: The INVITE bob received and the 200 alice received (their SDP as forwarded).
    offered: Request
    answered: bytes


pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    with cluster_files(tmp_path_factory.mktemp("cluster"), relays=2) as files:
        yield await start_all(files)


@pytest_asyncio.fixture(loop_scope="module")
async def call(cluster: Cluster) -> AsyncIterator[Call]:
    """alice calls bob through the platform; both phones closed afterwards."""
    alice, bob = await cluster.agent("alice"), await cluster.agent("bob")
    try:
        for phone in (alice, bob):
            assert (await phone.register()).status == 200
        invite = alice.build(
            "INVITE", f"sip:bob@{DOMAIN}", body=offer("alice", 40000), content_type=SDP
        )
        seen: list[Message] = []
        caller, callee = await establish(alice, bob, invite, offer("bob", 40002), seen)
        offered, answered = seen
        assert isinstance(offered, Request)
        yield Call(alice, bob, caller, callee, offered, answered.body)
    finally:
        await alice.close()
        await bob.close()


async def new_relay_legs(cluster: Cluster, call_id: str, again: bool = False) -> list[ka.MediaPlan]:
    """Legs for the call's stream on the relay that does not carry it (``again``:
    more legs there, for a second move)."""
    stream = stream_id(call_id, 0)
    carrying = [n for n in cluster.relay_names if stream in await cluster.relay_sessions(n)]
    if again:
        other = cluster.relay_names[-1]
        stream = f"{call_id}#again"
    else:
        assert len(carrying) == 1, carrying
        other = next(n for n in cluster.relay_names if n not in carrying)
    legs = [
        relay_pb2.LegSpec(side=side)
        for side in (relay_pb2.LEG_SIDE_CALLER, relay_pb2.LEG_SIDE_CALLEE)
    ]
    async with open_channel(cluster.address(other), cluster.grpc_tls) as channel:
        allocated = await relay_pb2_grpc.RelayStub(channel).Allocate(
            relay_pb2.AllocateRequest(call_id=stream, legs=legs), timeout=5
        )
    ends = {
        leg.side: ka.RelayEndpoint(
            host=leg.rtp.host, rtp_port=leg.rtp.port, rtcp_port=leg.rtcp.port
        )
        for leg in allocated.legs
    }
    return [
        ka.MediaPlan(
            toward_caller=ends[relay_pb2.LEG_SIDE_CALLER],
            toward_callee=ends[relay_pb2.LEG_SIDE_CALLEE],
        )
    ]


async def move_call(
    cluster: Cluster, call_id: str, media: list[ka.MediaPlan]
) -> signaling_pb2.MoveCallResponse:
    async with open_channel(cluster.address("signaling"), cluster.grpc_tls) as channel:
        return await signaling_pb2_grpc.SignalingStub(channel).MoveCall(
            signaling_pb2.MoveCallRequest(call_id=call_id, media=media), timeout=30
        )


async def moved(cluster: Cluster, call: Call) -> tuple[list[ka.MediaPlan], Request, Request]:
    """The call moved to the other relay, both phones answering 200 with new ports:
    the new legs, and the re-INVITEs alice and bob received."""
    media = await new_relay_legs(cluster, call.caller.call_id)
    moving = asyncio.create_task(move_call(cluster, call.caller.call_id, media))
    (to_alice, ack_alice), (to_bob, ack_bob) = await asyncio.gather(
        take_move(call.alice, offer("alice", 40010)), take_move(call.bob, offer("bob", 40012))
    )
    result = await moving
    assert result.outcome == Moved.OUTCOME_MOVED, result
    assert [m.port for m in result.caller_media] == [40010]
    assert [m.port for m in result.callee_media] == [40012]
    assert [m.zrtp_hash for m in result.callee_media] == [f"1.10 {b'bo'.hex() * 16}"]
    for invite, ack in ((to_alice, ack_alice), (to_bob, ack_bob)):
        assert ack.cseq.number == invite.cseq.number
        assert ack.to.tag == invite.to.tag
    return media, to_alice, to_bob


def origin_version(sdp: bytes) -> int:
    return int(dict(SessionDescription.parse(sdp).lines)["o"].split()[2])


def repointed(before: bytes, after: bytes, endpoint: ka.RelayEndpoint) -> None:
    """``after`` is ``before`` aimed at ``endpoint``, its o= version one higher."""
    old, new = SessionDescription.parse(before), SessionDescription.parse(after)
    assert new.connection is not None and new.connection.address == endpoint.host
    (was,), (now,) = old.media, new.media
    assert (now.port, now.rtcp_port) == (endpoint.rtp_port, endpoint.rtcp_port)
    assert was.port != now.port
    assert (now.formats, now.zrtp_hash) == (was.formats, was.zrtp_hash)
    assert now.attributes("rtpmap") == was.attributes("rtpmap")
    origin_old, origin_new = dict(old.lines)["o"].split(), dict(new.lines)["o"].split()
    assert origin_new[:2] + origin_new[3:] == origin_old[:2] + origin_old[3:]
    assert int(origin_new[2]) == int(origin_old[2]) + 1


async def test_both_phones_are_reinvited_as_the_other_party_with_their_sdp_repointed(
    cluster: Cluster, call: Call
) -> None:
    media, to_alice, to_bob = await moved(cluster, call)
    # Each as if from the other phone: its tags, its Contact.
    assert (to_alice.from_.tag, to_alice.to.tag) == (call.caller.remote_tag, call.caller.local_tag)
    assert (to_bob.from_.tag, to_bob.to.tag) == (call.callee.remote_tag, call.callee.local_tag)
    assert to_bob.cseq.number > call.offered.cseq.number
    repointed(call.answered, to_alice.body, media[0].toward_caller)
    repointed(call.offered.body, to_bob.body, media[0].toward_callee)

    # A second move starts from what the first sent: the version climbs again.
    again = await new_relay_legs(cluster, call.caller.call_id, again=True)
    moving = asyncio.create_task(move_call(cluster, call.caller.call_id, again))
    (second, _), _ = await asyncio.gather(
        take_move(call.alice, offer("alice", 40010)), take_move(call.bob, offer("bob", 40012))
    )
    assert (await moving).outcome == Moved.OUTCOME_MOVED
    repointed(to_alice.body, second.body, again[0].toward_caller)


async def reinvite(sender: UserAgent, dialog: Dialog, receiver: UserAgent, body: bytes) -> Request:
    """A re-INVITE from ``sender`` answered 200 by ``receiver`` and ACKed: the
    re-INVITE as ``receiver`` saw it (its CSeq renumbered by the platform)."""
    request = sender.in_dialog(dialog, "INVITE")
    request.headers.add("Content-Type", SDP)
    request.body = body
    sending = asyncio.create_task(sender.send(request, timeout=WITHIN))
    seen = await next_request(receiver, "INVITE", WITHIN)
    await receiver.connection.send(
        receiver.answer(seen, 200, "OK", body=offer(receiver.user, 40020))
    )
    exchange = await sending
    assert exchange.final is not None and exchange.final.status == 200
    # The sender's own number back (its transaction and dialog know no other).
    assert exchange.final.cseq.number == request.cseq.number
    await sender.connection.send(sender.in_dialog(dialog, "ACK", cseq=request.cseq.number))
    ack = await next_request(receiver, "ACK", WITHIN)
    assert ack.cseq.number == seen.cseq.number
    return seen


async def bye(sender: UserAgent, dialog: Dialog, receiver: UserAgent) -> Request:
    """A BYE from ``sender`` answered by ``receiver``: the BYE as ``receiver`` saw it."""
    request = sender.in_dialog(dialog, "BYE")
    sending = asyncio.create_task(sender.send(request, timeout=WITHIN))
    seen = await next_request(receiver, "BYE", WITHIN)
    await receiver.connection.send(receiver.answer(seen, 200, "OK"))
    exchange = await sending
    assert exchange.final is not None and exchange.final.status == 200
    assert exchange.final.cseq.number == request.cseq.number
    return seen


async def test_after_a_move_each_phone_reinvites_then_the_caller_hangs_up(
    cluster: Cluster, call: Call
) -> None:
    _, to_alice, to_bob = await moved(cluster, call)
    # alice's re-INVITE reaches bob above the number the platform used as alice,
    # its SDP above the version the move sent him (alice's own is still 1)...
    from_alice = await reinvite(call.alice, call.caller, call.bob, offer("alice", 40030))
    assert from_alice.cseq.number > to_bob.cseq.number
    assert origin_version(from_alice.body) == origin_version(to_bob.body) + 1
    # ...and bob's reaches alice above the number it used as bob.
    from_bob = await reinvite(call.bob, call.callee, call.alice, offer("bob", 40032))
    assert from_bob.cseq.number > to_alice.cseq.number
    hung_up = await bye(call.alice, call.caller, call.bob)
    assert hung_up.cseq.number > from_alice.cseq.number

    async def gone() -> bool:
        return call.caller.call_id not in await cluster.calls()

    await eventually(gone, WITHIN, "the call gone from `quietwire calls`")


async def test_after_a_move_the_callee_hangs_up(cluster: Cluster, call: Call) -> None:
    _, to_alice, _ = await moved(cluster, call)
    hung_up = await bye(call.bob, call.callee, call.alice)
    assert hung_up.cseq.number > to_alice.cseq.number


async def test_a_phone_refusing_the_move_makes_it_refused(cluster: Cluster, call: Call) -> None:
    media = await new_relay_legs(cluster, call.caller.call_id)
    moving = asyncio.create_task(move_call(cluster, call.caller.call_id, media))
    await asyncio.gather(
        take_move(call.alice, offer("alice", 40010)), take_move(call.bob, b"", status=488)
    )
    result = await moving
    assert result.outcome == Moved.OUTCOME_REFUSED
    assert result.sip_status == 488
    assert "the caller accepted" in result.detail
    assert "the callee refused: 488" in result.detail
    # The call itself goes on: bob can still hang up, alice hears it.
    await bye(call.bob, call.callee, call.alice)


async def test_glare_is_retried_with_a_higher_cseq(cluster: Cluster, call: Call) -> None:
    """bob has a re-INVITE of his own in flight and answers 491 (RFC 3261 section
    14.1): the platform tries again after a short wait, and the move succeeds."""
    media = await new_relay_legs(cluster, call.caller.call_id)
    moving = asyncio.create_task(move_call(cluster, call.caller.call_id, media))
    first = await next_request(call.bob, "INVITE", WITHIN)
    await call.bob.connection.send(call.bob.answer(first, 491, "Request Pending"))
    (_, _), (retried, _) = await asyncio.gather(
        take_move(call.alice, offer("alice", 40010)), take_move(call.bob, offer("bob", 40012))
    )
    assert retried.cseq.number > first.cseq.number
    assert retried.body == first.body
    result = await moving
    assert result.outcome == Moved.OUTCOME_MOVED, result


async def test_a_phone_whose_connection_is_gone_makes_it_no_answer(
    cluster: Cluster, call: Call
) -> None:
    await call.bob.connection.close()
    media = await new_relay_legs(cluster, call.caller.call_id)
    moving = asyncio.create_task(move_call(cluster, call.caller.call_id, media))
    await take_move(call.alice, offer("alice", 40010))
    result = await moving
    assert result.outcome == Moved.OUTCOME_NO_ANSWER
    assert result.detail == "the caller accepted; the callee did not answer"


async def test_an_unknown_call_is_no_such_call(cluster: Cluster) -> None:
    media = [ka.MediaPlan(toward_caller=ka.RelayEndpoint(host="127.0.0.1", rtp_port=4000))]
    result = await move_call(cluster, "no-such-call", media)
    assert result.outcome == Moved.OUTCOME_NO_SUCH_CALL


async def test_a_call_answered_in_a_183_moves_with_the_sdp_of_its_183(cluster: Cluster) -> None:
    """bob answers in a 183 (early media) and his 200 carries no SDP (RFC 3262,
    RFC 6337 section 3.1): what alice was last sent is the 183's SDP, and the
    move re-points that one."""
    alice, bob = await cluster.agent("alice"), await cluster.agent("bob")
    try:
        invite, sending, [incoming] = await ringing(alice, bob, offer=offer("alice", 40000))
        early = respond(bob, incoming, 183, "Session Progress", offer("bob", 40002), None)
        await bob.connection.send(early)
        [got] = await progress(alice, invite.call_id)
        await bob.connection.send(respond(bob, incoming, 200, "OK", b"", early))
        exchange = await sending
        assert exchange.final is not None and not exchange.final.body
        await acked(alice, bob, invite, exchange.final)

        media = await new_relay_legs(cluster, invite.call_id)
        moving = asyncio.create_task(move_call(cluster, invite.call_id, media))
        (to_alice, _), (to_bob, _) = await asyncio.gather(
            take_move(alice, offer("alice", 40010)), take_move(bob, offer("bob", 40012))
        )
        assert (await moving).outcome == Moved.OUTCOME_MOVED
        repointed(got.body, to_alice.body, media[0].toward_caller)
        repointed(incoming.body, to_bob.body, media[0].toward_callee)
    finally:
        await alice.close()
        await bob.close()
