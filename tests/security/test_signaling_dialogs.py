"""Strangers and other users against the proxy's dialogs (issue 12: findings 1, 3, 10).

Each test attacks a real replica (TLS, Redis, UDP sockets) or the whole platform
(`quietwire up`: keyagreement and a relay behind signaling) and asserts the
refusal and that nothing leaked: nothing delivered, no call ended, no live
transaction left behind.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
from pathlib import Path

import grpc
import pytest
import redis.asyncio as redis
import yaml
from prometheus_client import REGISTRY
from quietwire.embedded.pki import Pki
from quietwire.keyagreement.calls import CALL_KEY
from quietwire.phone.useragent import Dialog, UserAgent
from quietwire.protocols.sip.digest import client_credentials, format_credentials, parse_challenge
from quietwire.protocols.sip.message import Request
from quietwire.rpc.keyagreement.v1.keyagreement_pb2 import DialogTags
from quietwire.rpc.relay.v1 import relay_pb2, relay_pb2_grpc
from quietwire.runtime.channels import open_channel
from quietwire.runtime.tls import TlsFiles
from quietwire.signaling.builders import cancel_for
from quietwire.signaling.dialogs import DIALOG_KEY
from quietwire.signaling.media import Offer, Refusal

from tests.conftest import Platform, agent, free_port
from tests.integration.signaling_harness import (
    DOMAIN,
    PASSWORDS,
    Replica,
    add_users,
    establish,
    next_request,
    phone,
    replica,
)
from tests.interop.test_relay_calls import sdp
from tests.support.wait import until

SDP = "application/sdp"


async def registered(pki: Pki, port: int, user: str) -> UserAgent:
    ua = await phone(pki, port, user)
    assert (await ua.register()).status == 200
    return ua


async def established(
    alice: UserAgent,
    bob: UserAgent,
    callee: str = "bob",
    from_tag: str | None = None,
    media: bool = False,
) -> tuple[Dialog, Dialog]:
    """alice calls ``callee`` (bob's phone answers, alice ACKs): both sides' dialogs."""
    invite = alice.build(
        "INVITE",
        f"sip:{callee}@{DOMAIN}",
        from_tag=from_tag,
        body=sdp("alice", 40000, True) if media else b"",
        content_type=SDP if media else None,
    )
    return await establish(alice, bob, invite, sdp(callee, 40002, True) if media else b"")


async def first_request(ua: UserAgent, timeout: float = 5.0) -> Request:
    return await asyncio.wait_for(ua.requests.get(), timeout)


async def delivered_next(sender: UserAgent, receiver: UserAgent, request: Request) -> None:
    """``request`` (authenticated) is the next thing ``receiver``'s phone gets:
    nothing forged came before it."""
    sending = asyncio.create_task(sender.send(request))
    got = await first_request(receiver)
    assert (got.method, got.call_id) == (request.method, request.call_id)
    await receiver.connection.send(receiver.answer(got, 200, "OK"))
    exchange = await sending
    assert exchange.final is not None and exchange.final.status == 200


# -- finding 1: in-dialog requests from strangers -------------------------------------


@pytest.mark.parametrize("method", ["MESSAGE", "INVITE"])
async def test_stranger_with_a_made_up_to_tag_reaches_no_phone(
    pki: Pki, one: Replica, method: str
) -> None:
    """No credentials, a To tag of its own making, bob's GRUU and a forged
    "Your Bank" From: challenged, and bob's phone never sees it."""
    bob = await registered(pki, one.port, "bob")
    alice = await registered(pki, one.port, "alice")
    stranger = await phone(pki, one.port, "carol", "no password sent")
    assert bob.gruu is not None
    forged = stranger.build(method, bob.gruu, to=f"<{bob.gruu}>;tag=anything")
    forged.headers.set("From", '"Your Bank" <sip:bank@127.0.0.1>;tag=forged')
    exchange = await stranger._send_once(forged, 5)
    assert exchange.final is not None and exchange.final.status == 407
    await delivered_next(alice, bob, alice.build("MESSAGE", f"sip:bob@{DOMAIN}"))
    await until(lambda: not one.service.proxy.servers, 5, "no transaction left")
    for ua in (alice, bob, stranger):
        await ua.close()


async def test_a_user_cannot_speak_in_anothers_dialog(pki: Pki, one: Replica) -> None:
    """carol, authenticated, sends a BYE with the tags of alice's call with bob:
    403, the call goes on, and alice's own BYE still ends it."""
    alice = await registered(pki, one.port, "alice")
    bob = await registered(pki, one.port, "bob")
    carol = await registered(pki, one.port, "carol")
    caller, _ = await established(alice, bob)
    posing = dataclasses.replace(caller, local_uri=f"sip:carol@{DOMAIN}")
    exchange = await carol.send(carol.in_dialog(posing, "BYE"))
    assert exchange.final is not None and exchange.final.status == 403
    assert await one.service.proxy.dialogs.get(caller.call_id) is not None
    await delivered_next(alice, bob, alice.in_dialog(caller, "BYE"))
    assert await one.service.proxy.dialogs.get(caller.call_id) is None
    for ua in (alice, bob, carol):
        await ua.close()


async def test_party_on_another_connection_is_authenticated_then_heard(
    pki: Pki, one: Replica
) -> None:
    """alice's phone reconnected: her BYE on the new connection matches the dialog
    but not its flow, so it is challenged; answered with her credentials, it ends
    the call as her own BYE."""
    alice = await registered(pki, one.port, "alice")
    bob = await registered(pki, one.port, "bob")
    caller, _ = await established(alice, bob)
    reconnected = await phone(pki, one.port, "alice")
    bye = reconnected.in_dialog(caller, "BYE")
    unauthenticated = await reconnected._send_once(bye, 5)
    assert unauthenticated.final is not None and unauthenticated.final.status == 407
    await delivered_next(reconnected, bob, bye)
    assert await one.service.proxy.dialogs.get(caller.call_id) is None
    for ua in (alice, bob, reconnected):
        await ua.close()


async def test_route_token_of_one_dialog_routes_nothing_in_another(pki: Pki, one: Replica) -> None:
    """alice holds calls with bob and with carol (the same From tag in both) and
    puts the bob call's Record-Route in a MESSAGE of the carol call: it goes to
    carol (by her GRUU), never down bob's flow."""
    alice = await registered(pki, one.port, "alice")
    bob = await registered(pki, one.port, "bob")
    carol = await registered(pki, one.port, "carol")
    with_bob, _ = await established(alice, bob)
    with_carol, _ = await established(alice, carol, "carol", from_tag=with_bob.local_tag)
    message = alice.in_dialog(with_carol, "MESSAGE")
    message.headers.remove("Route")
    for route in with_bob.route_set:
        message.headers.add("Route", route)
    sending = asyncio.create_task(alice.send(message))
    got = await first_request(carol)
    assert (got.method, got.call_id) == ("MESSAGE", with_carol.call_id)
    await carol.connection.send(carol.answer(got, 200, "OK"))
    await sending
    assert bob.requests.empty()
    for ua in (alice, bob, carol):
        await ua.close()


async def test_stranger_cannot_cancel_a_ringing_call(pki: Pki, one: Replica) -> None:
    """A CANCEL copied from alice's ringing INVITE (branch and all) but sent on
    another connection: 481, bob keeps ringing; alice's own CANCEL still works."""
    alice = await registered(pki, one.port, "alice")
    bob = await registered(pki, one.port, "bob")
    stranger = await phone(pki, one.port, "carol", "no password sent")
    invite = alice.build("INVITE", f"sip:bob@{DOMAIN}")
    sending = asyncio.create_task(alice.send(invite))
    incoming = await next_request(bob, "INVITE")
    await bob.connection.send(bob.answer(incoming, 180, "Ringing"))
    await until(lambda: invite.call_id in alice.inviting, 5, "alice's INVITE sent")
    cancel = cancel_for(alice.inviting[invite.call_id], "forged")
    refused = await stranger._send_once(cancel, 5)
    assert refused.final is not None and refused.final.status == 481
    await alice.cancel(invite.call_id)
    got = await first_request(bob)
    assert got.method == "CANCEL" and 'text="caller cancelled"' in (got.headers.get("Reason") or "")
    await bob.connection.send(bob.answer(got, 200, "OK"))
    await bob.connection.send(bob.answer(incoming, 487, "Request Terminated"))
    exchange = await sending
    assert exchange.final is not None and exchange.final.status == 487
    for ua in (alice, bob, stranger):
        await ua.close()


async def test_stranger_bye_does_not_end_the_call(platform: Platform) -> None:
    """A stranger who knows everything about a call (Call-ID, both tags, even the
    Record-Route) sends bob a BYE as if from alice: challenged; bob's phone gets
    no BYE, the dialog record and the relay session stay; alice's BYE still works."""
    config = yaml.safe_load(platform.config.read_text())
    store = redis.from_url(config["redis_url"], password=config.get("redis_password"))
    tls = TlsFiles(
        Path(config["grpc_tls_cert"]), Path(config["grpc_tls_key"]), Path(config["grpc_tls_ca"])
    )

    alice = await agent(platform, "alice")
    bob = await agent(platform, "bob")
    stranger = await agent(platform, "alice", "not alice's password")
    try:
        assert (await alice.register()).status == 200
        assert (await bob.register()).status == 200
        caller, _ = await established(alice, bob, media=True)
        call_id = caller.call_id
        relay = (await store.hget(CALL_KEY.format(call_id=call_id), "relay_grpc")).decode()
        async with open_channel(relay, tls) as channel:
            sessions = relay_pb2_grpc.RelayStub(channel)
            query = relay_pb2.QueryRequest(call_id=f"{call_id}#0")
            assert (await sessions.Query(query, timeout=5)).legs

            forged = await stranger._send_once(stranger.in_dialog(caller, "BYE"), 5)
            assert forged.final is not None and forged.final.status == 407
            await delivered_next(alice, bob, alice.in_dialog(caller, "INFO"))
            assert await store.exists(DIALOG_KEY.format(call_id=call_id))
            assert (await sessions.Query(query, timeout=5)).legs

            await delivered_next(alice, bob, alice.in_dialog(caller, "BYE"))
            with pytest.raises(grpc.aio.AioRpcError) as gone:
                await sessions.Query(query, timeout=5)
            assert gone.value.code() is grpc.StatusCode.NOT_FOUND
    finally:
        for ua in (alice, bob, stranger):
            await ua.close()
        await store.aclose()


async def test_the_callers_copy_of_the_dialog_serves_no_one_else(pki: Pki, one: Replica) -> None:
    """Between bob's 200 and alice's ACK, a stranger on another connection sends
    an ACK and a BYE with the call's Call-ID, both tags and its Record-Route:
    neither is routed from the replica's copy of the dialog (the copy waits for
    alice's ACK on her own connection), the BYE is challenged and takes nothing."""
    alice = await registered(pki, one.port, "alice")
    bob = await registered(pki, one.port, "bob")
    stranger = await phone(pki, one.port, "carol", "no password sent")
    copies = one.service.proxy.dialogs.copies
    invite = alice.build("INVITE", f"sip:bob@{DOMAIN}")
    sending = asyncio.create_task(alice.send(invite))
    incoming = await next_request(bob, "INVITE")
    ok = bob.answer(incoming, 200, "OK")
    ok.headers.set("Record-Route", ", ".join(incoming.headers.get_all("Record-Route")))
    await bob.connection.send(ok)
    exchange = await sending
    assert exchange.final is not None and exchange.final.status == 200
    caller = alice.dialog_from_response(invite, exchange.final)
    cseq = exchange.final.cseq.number
    assert len(copies) == 1

    forged = await stranger._send_once(alice.in_dialog(caller, "BYE"), 5)
    assert forged.final is not None and forged.final.status == 407
    assert await one.service.proxy.dialogs.get(caller.call_id) is not None
    # An ACK cannot be challenged: with the call's token it goes on as before,
    # read from Redis; the copy is not spent on it.
    await stranger.connection.send(alice.in_dialog(caller, "ACK", cseq=cseq))
    await next_request(bob, "ACK")
    assert len(copies) == 1

    await alice.connection.send(alice.in_dialog(caller, "ACK", cseq=cseq))
    await next_request(bob, "ACK")
    assert len(copies) == 0
    await delivered_next(alice, bob, alice.in_dialog(caller, "BYE"))
    assert await one.service.proxy.dialogs.get(caller.call_id) is None
    for ua in (alice, bob, stranger):
        await ua.close()


# -- finding 3: a request whose handling raises ---------------------------------------


def handler_errors(where: str, exception: str) -> float:
    labels = {"where": where, "exception": exception}
    return REGISTRY.get_sample_value("quietwire_sip_handler_errors_total", labels) or 0.0


async def test_huge_nonce_count_gets_a_final_answer_and_leaves_nothing(
    pki: Pki, one: Replica
) -> None:
    """Proxy-Authorization with an nc of 4000 hex digits (it made the nonce-count
    update raise): the INVITE is answered, its transaction is gone."""
    alice = await phone(pki, one.port, "alice")
    bob = await registered(pki, one.port, "bob")
    invite = alice.build("INVITE", f"sip:bob@{DOMAIN}")
    challenged = await alice._send_once(invite, 5)
    assert challenged.final is not None and challenged.final.status == 407
    challenge = parse_challenge(challenged.final.headers.get_all("Proxy-Authenticate")[0])
    credentials = client_credentials(
        challenge, "alice", PASSWORDS["alice"], "INVITE", invite.uri, 1, "0a4f113b"
    )
    header = re.sub(r"nc=[0-9a-f]+", "nc=" + "f" * 4000, format_credentials(credentials))
    attack = alice.build("INVITE", f"sip:bob@{DOMAIN}", call_id=invite.call_id)
    attack.headers.set("Proxy-Authorization", header)
    exchange = await alice._send_once(attack, 5)
    assert exchange.final is not None and exchange.final.status >= 400
    await until(lambda: not one.service.proxy.servers, 5, "no transaction left")
    assert bob.requests.empty()
    await alice.close()
    await bob.close()


class FailingPlanner:
    """A media planner that breaks at the offer or at the answer (a bug, a lost
    dependency raising); it remembers the calls whose media it was told to end."""

    def __init__(self, at: str) -> None:
        self.at = at
        self.ended: list[str] = []

    async def offer(self, offer: Offer) -> bytes | Refusal:
        if self.at == "offer":
            raise RuntimeError("planner broke")
        return offer.sdp

    async def answer(
        self,
        call_id: str,
        sdp: bytes,
        from_caller: bool = False,
        *,
        tags: DialogTags,
        provisional: bool = False,
    ) -> bytes:
        raise RuntimeError("planner broke")

    async def end(self, call_id: str, tags: DialogTags) -> None:
        self.ended.append(call_id)


async def test_handler_exception_ends_the_transaction_with_500(pki: Pki, one: Replica) -> None:
    """Whatever raises while a request is handled: 500 to the caller, the server
    transaction freed, the exception counted (and logged at most once a minute)."""
    alice = await registered(pki, one.port, "alice")
    bob = await registered(pki, one.port, "bob")
    one.plan_with(FailingPlanner("offer"))
    before = handler_errors("request", "RuntimeError")
    for _ in range(3):
        invite = alice.build("INVITE", f"sip:bob@{DOMAIN}", body=sdp("alice", 40000, True))
        invite.headers.add("Content-Type", SDP)
        exchange = await alice.send(invite)
        assert exchange.final is not None and exchange.final.status == 500
    assert handler_errors("request", "RuntimeError") == before + 3
    await until(lambda: not one.service.proxy.servers, 5, "no transaction left")
    assert bob.requests.empty()
    await alice.close()
    await bob.close()


async def test_exception_on_the_answer_ends_the_call_attempt(pki: Pki, one: Replica) -> None:
    """The callee's 2xx breaks the planner: the caller gets 500, the planned media
    is released, nothing stays live."""
    alice = await registered(pki, one.port, "alice")
    bob = await registered(pki, one.port, "bob")
    planner = FailingPlanner("answer")
    one.plan_with(planner)
    before = handler_errors("response", "RuntimeError")
    invite = alice.build("INVITE", f"sip:bob@{DOMAIN}", body=sdp("alice", 40000, True))
    invite.headers.add("Content-Type", SDP)
    sending = asyncio.create_task(alice.send(invite))
    incoming = await next_request(bob, "INVITE")
    await bob.connection.send(bob.answer(incoming, 200, "OK", body=sdp("bob", 40002, True)))
    exchange = await sending
    assert exchange.final is not None and exchange.final.status == 500
    assert handler_errors("response", "RuntimeError") == before + 1
    await until(lambda: planner.ended == [invite.call_id], 5, "the call ended")
    await until(lambda: not one.service.proxy.servers, 5, "no transaction left")
    assert not one.service.proxy.tx.clients
    await alice.close()
    await bob.close()


async def test_live_transactions_are_capped_per_source(pki: Pki, redis_url: str) -> None:
    """Two INVITEs ringing from one source with a cap of two: the third request is
    refused at once with 503 and Retry-After, before any other work."""
    await add_users(redis_url)
    async with replica(
        pki, redis_url, sip_max_transactions_per_source=2, sip_max_transactions=100
    ) as small:
        alice = await registered(pki, small.port, "alice")
        bob = await registered(pki, small.port, "bob")
        ringing = []
        for _ in range(2):
            ringing.append(asyncio.create_task(alice.send(alice.build("INVITE", bob.aor))))
            await next_request(bob, "INVITE")
        assert small.service.proxy.servers.from_source("127.0.0.1") == 2
        refused = await alice._send_once(alice.build("OPTIONS", f"sip:{DOMAIN}"), 5)
        assert refused.final is not None and refused.final.status == 503
        assert refused.final.headers.get("Retry-After") == "5"
        for task in ringing:
            task.cancel()
        await alice.close()
        await bob.close()


# -- finding 10: challenges over UDP ----------------------------------------------------


@pytest.mark.parametrize(("user", "status"), [("bob@", b"407"), ("", b"404")])
async def test_udp_answer_to_a_stranger_is_sent_once_and_kept_nowhere(
    pki: Pki, redis_url: str, user: str, status: bytes
) -> None:
    """A raw UDP INVITE never ACKed gets exactly one datagram back, a 407 (or a
    404 for the domain itself; Timer G would have resent it at 0.5, 1.5 and
    3.5 s), and leaves no transaction."""
    udp_port = free_port()
    await add_users(redis_url)
    async with replica(pki, redis_url, sip_udp_port=udp_port) as r:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        local = sock.getsockname()[1]
        invite = (
            f"INVITE sip:{user}{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bKamp1;rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:alice@{DOMAIN}>;tag=a1\r\nTo: <sip:bob@{DOMAIN}>\r\n"
            "Call-ID: udp-amplification\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:alice@127.0.0.1:{local}>\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        await loop.sock_sendto(sock, invite, ("127.0.0.1", udp_port))
        answer = await asyncio.wait_for(loop.sock_recv(sock, 4096), 3)
        assert answer.startswith(b"SIP/2.0 " + status)
        assert len(r.service.proxy.servers) == 0
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(loop.sock_recv(sock, 4096), 4.0)
        sock.close()
