"""The signaling service with real phones' behaviour over TLS: register, call, cancel,
fork, refuse, and survive bad input."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

import grpc
import pytest
from quietwire.embedded.pki import Pki
from quietwire.keyagreement.teardown import CallTerminator
from quietwire.phone.connection import SipConnection
from quietwire.phone.useragent import Exchange, UserAgent
from quietwire.protocols.sip.digest import client_credentials, format_credentials, parse_challenge
from quietwire.protocols.sip.message import Request, Response, parse_message
from quietwire.rpc.signaling.v1 import signaling_pb2_grpc
from quietwire.rpc.signaling.v1.signaling_pb2 import Registration, TerminateCallRequest
from quietwire.runtime.channels import ChannelPool
from quietwire.runtime.registry import ReplicaRegistry
from quietwire.signaling.flows import flow_transport
from quietwire.signaling.locations import OutOfOrder

from tests.conftest import free_port
from tests.integration.signaling_harness import (
    DOMAIN,
    PASSWORDS,
    Replica,
    add_users,
    next_request,
    phone,
    replica,
)
from tests.support.wait import eventually


async def registered(pki: Pki, port: int, user: str) -> UserAgent:
    ua = await phone(pki, port, user)
    response = await ua.register()
    assert response.status == 200, response.status
    return ua


async def ringing(alice: UserAgent, bob: UserAgent) -> tuple[str, asyncio.Task[Exchange], Request]:
    """alice calls bob, whose phone rings: the call id, alice's exchange, bob's INVITE."""
    invite = alice.build("INVITE", f"sip:bob@{DOMAIN}")
    sending = asyncio.create_task(alice.send(invite))
    incoming = await next_request(bob, "INVITE")
    await bob.connection.send(bob.answer(incoming, 180, "Ringing"))
    return invite.call_id, sending, incoming


async def cancelled(bob: UserAgent, incoming: Request) -> Request:
    """bob's phone takes the CANCEL of ``incoming``: 200 to it, 487 to the INVITE."""
    cancel = await next_request(bob, "CANCEL")
    await bob.connection.send(bob.answer(cancel, 200, "OK"))
    await bob.connection.send(bob.answer(incoming, 487, "Request Terminated"))
    return cancel


async def test_options_to_the_proxy(pki: Pki, one: Replica) -> None:
    ua = await phone(pki, one.port, "alice")
    exchange = await ua.send(ua.build("OPTIONS", f"sip:{DOMAIN}"))
    assert exchange.final is not None and exchange.final.status == 200
    assert "INVITE" in (exchange.final.headers.get("Allow") or "")
    await ua.close()


async def test_register_challenge_and_binding(pki: Pki, one: Replica) -> None:
    ua = await phone(pki, one.port, "alice")
    first = await ua._send_once(ua.build("REGISTER", f"sip:{DOMAIN}", to=f"<{ua.aor}>"), 5)
    assert first.final is not None and first.final.status == 401
    challenges = first.final.headers.get_all("WWW-Authenticate")
    assert [c.split("algorithm=")[1].split(",")[0] for c in challenges] == ["SHA-256", "MD5"]
    response = await ua.register()
    assert response.status == 200
    assert ua.gruu is not None and ua.gruu.startswith(f"sip:alice@{DOMAIN};gr=urn:uuid:")
    (binding,) = await one.service.locations.bindings(f"sip:alice@{DOMAIN}")
    assert binding.replica == one.service.replica
    assert one.service.flows.get(binding.flow_id) is not None
    assert (await ua.register(expires=0)).status == 200
    assert await one.service.locations.bindings(f"sip:alice@{DOMAIN}") == []
    await one.service.redis.script_flush()  # a restarted Redis: the nonce script is loaded again
    assert (await ua.register()).status == 200
    await ua.close()


async def test_wrong_password_and_foreign_aor_refused(pki: Pki, one: Replica) -> None:
    wrong = await phone(pki, one.port, "alice", "not-the-password")
    assert (await wrong.register()).status == 403
    await wrong.close()
    mallory = await phone(pki, one.port, "carol")
    request = mallory.build("REGISTER", f"sip:{DOMAIN}", to=f"<sip:alice@{DOMAIN}>")
    request.headers.add("Expires", "600")
    exchange = await mallory.send(request)
    assert exchange.final is not None and exchange.final.status == 403
    await mallory.close()


async def test_too_brief_expires(pki: Pki, one: Replica) -> None:
    ua = await phone(pki, one.port, "alice")
    response = await ua.register(expires=10)
    assert response.status == 423
    assert response.headers.get("Min-Expires") == "60"
    await ua.close()


async def call(alice: UserAgent, bob: UserAgent, callee: str = "bob") -> tuple[Request, Response]:
    invite = alice.build(
        "INVITE", f"sip:{callee}@{DOMAIN}", body=b"v=0\r\n", content_type="application/sdp"
    )
    sending = asyncio.create_task(alice.send(invite))
    incoming = await next_request(bob, "INVITE")
    assert incoming.headers.get_all("Record-Route")
    await bob.connection.send(bob.answer(incoming, 180, "Ringing"))
    ok = bob.answer(incoming, 200, "OK", body=b"v=0\r\n")
    ok.headers.set("Record-Route", ", ".join(incoming.headers.get_all("Record-Route")))
    await bob.connection.send(ok)
    exchange = await sending
    assert exchange.final is not None and exchange.final.status == 200
    assert [r.status for r in exchange.provisional] == [100, 180]
    return incoming, exchange.final


async def bob_hangs_up(alice: UserAgent, bob: UserAgent, incoming: Request, ok: Response) -> None:
    """Bob's BYE reaches Alice through the proxy, and her 200 reaches Bob."""
    bye = asyncio.create_task(bob.send(bob.in_dialog(bob.dialog_from_request(incoming, ok), "BYE")))
    got_bye = await next_request(alice, "BYE")
    await alice.connection.send(alice.answer(got_bye, 200, "OK"))
    done = await bye
    assert done.final is not None and done.final.status == 200


async def test_call_ack_bye(pki: Pki, one: Replica) -> None:
    alice = await registered(pki, one.port, "alice")
    bob = await registered(pki, one.port, "bob")
    unauthenticated = await alice._send_once(alice.build("INVITE", f"sip:bob@{DOMAIN}"), 5)
    assert unauthenticated.final is not None and unauthenticated.final.status == 407

    incoming, ok = await call(alice, bob)
    invite_cseq = ok.cseq.number
    dialog = alice.dialog_from_response(
        Request(ok.headers.copy(), b"", "INVITE", f"sip:bob@{DOMAIN}"), ok
    )
    await alice.connection.send(alice.in_dialog(dialog, "ACK", cseq=invite_cseq))
    ack = await next_request(bob, "ACK")
    assert ack.call_id == incoming.call_id

    await bob_hangs_up(alice, bob, incoming, ok)
    await alice.close()
    await bob.close()


async def test_unknown_and_offline_callees(pki: Pki, one: Replica) -> None:
    alice = await registered(pki, one.port, "alice")
    for callee, status in (("nobody", 404), ("carol", 480)):
        exchange = await alice.send(alice.build("INVITE", f"sip:{callee}@{DOMAIN}"))
        assert exchange.final is not None and exchange.final.status == status
    relay = await alice.send(alice.build("INVITE", "sip:someone@elsewhere.example"))
    assert relay.final is not None and relay.final.status == 403
    await alice.close()


async def test_cancel_while_ringing(pki: Pki, one: Replica) -> None:
    alice = await registered(pki, one.port, "alice")
    bob = await registered(pki, one.port, "bob")
    call_id, sending, incoming = await ringing(alice, bob)
    await alice.cancel(call_id)
    await cancelled(bob, incoming)
    exchange = await sending
    assert exchange.final is not None and exchange.final.status == 487
    await alice.close()
    await bob.close()


async def test_forking_to_two_devices(pki: Pki, one: Replica) -> None:
    alice = await registered(pki, one.port, "alice")
    desk = await registered(pki, one.port, "bob")
    mobile = await registered(pki, one.port, "bob")
    sending = asyncio.create_task(alice.send(alice.build("INVITE", f"sip:bob@{DOMAIN}")))
    at_desk = await next_request(desk, "INVITE")
    at_mobile = await next_request(mobile, "INVITE")
    await desk.connection.send(desk.answer(at_desk, 200, "OK"))
    cancel = await next_request(mobile, "CANCEL")
    assert cancel.call_id == at_mobile.call_id
    await mobile.connection.send(mobile.answer(cancel, 200, "OK"))
    await mobile.connection.send(mobile.answer(at_mobile, 487, "Request Terminated"))
    exchange = await sending
    assert exchange.final is not None and exchange.final.status == 200
    for ua in (alice, desk, mobile):
        await ua.close()


async def test_malformed_input_answered_and_listener_survives(pki: Pki, one: Replica) -> None:
    raw = await SipConnection.open("127.0.0.1", one.port, pki.ca)
    bad = (
        b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 1.2.3.4;branch=z9hG4bKx\r\n"
        b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: m1\r\n"
        b"CSeq: 1 OPTIONS\r\nMax-Forwards: many\r\nContent-Length: 0\r\n\r\n"
    )
    await raw.send_raw(bad)
    answer = await raw.receive()
    assert isinstance(answer, Response) and answer.status == 400
    ua = UserAgent(raw, "alice", "alice-secret", DOMAIN)
    exchange = await ua.send(ua.build("OPTIONS", f"sip:{DOMAIN}"))
    assert exchange.final is not None and exchange.final.status == 200
    garbage = await SipConnection.open("127.0.0.1", one.port, pki.ca)
    await garbage.send_raw(b"\x16\x03" + b"A" * 20000)
    await asyncio.wait_for(garbage.closed.wait(), 5)
    await garbage.close()
    again = await registered(pki, one.port, "bob")
    await again.close()
    await ua.close()


async def test_flood_gets_503(pki: Pki, redis_url: str) -> None:
    await add_users(redis_url)
    async with replica(pki, redis_url, sip_rate_limit=1.0, sip_rate_burst=3) as small:
        ua = await phone(pki, small.port, "alice")
        statuses = []
        for _ in range(6):
            exchange = await ua.send(ua.build("OPTIONS", f"sip:{DOMAIN}"))
            assert exchange.final is not None
            statuses.append(exchange.final.status)
        assert statuses[:3] == [200, 200, 200]
        assert 503 in statuses[3:]
        await ua.close()


async def test_call_across_two_replicas(pki: Pki, redis_url: str) -> None:
    await add_users(redis_url)
    async with replica(pki, redis_url) as first, replica(pki, redis_url) as second:
        alice = await registered(pki, first.port, "alice")
        bob = await registered(pki, second.port, "bob")
        incoming, ok = await call(alice, bob)
        await bob_hangs_up(alice, bob, incoming, ok)
        await alice.close()
        await bob.close()


async def test_terminate_call_hangs_up_both_phones(pki: Pki, redis_url: str) -> None:
    await add_users(redis_url)
    async with replica(pki, redis_url) as first, replica(pki, redis_url) as second:
        alice = await registered(pki, first.port, "alice")
        bob = await registered(pki, second.port, "bob")
        incoming, _ = await call(alice, bob)
        address = f"127.0.0.1:{second.service.settings.grpc_port}"
        async with grpc.aio.insecure_channel(address) as channel:
            stub = signaling_pb2_grpc.SignalingStub(channel)
            request = TerminateCallRequest(call_id=incoming.call_id, reason="zrtp-mismatch")
            answer = await stub.TerminateCall(request, timeout=5)
            assert answer.found
            byes = [await next_request(ua, "BYE") for ua in (alice, bob)]
            for ua, bye in zip((alice, bob), byes, strict=True):
                assert bye.call_id == incoming.call_id
                assert 'text="zrtp-mismatch"' in (bye.headers.get("Reason") or "")
                await ua.connection.send(ua.answer(bye, 200, "OK"))
            assert byes[0].to.tag == incoming.from_.tag  # to alice, as if from bob
            assert byes[1].from_.tag == incoming.from_.tag  # to bob, as if from alice
            again = await stub.TerminateCall(request, timeout=5)
            assert not again.found
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.TerminateCall(TerminateCallRequest(), timeout=5)
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        await alice.close()
        await bob.close()


async def test_terminate_a_ringing_call_cancels_it(pki: Pki, one: Replica) -> None:
    """Ended while it rings (a binding failure on early media, a lost relay):
    the callee gets CANCEL, the caller 488 saying why."""
    alice = await registered(pki, one.port, "alice")
    bob = await registered(pki, one.port, "bob")
    call_id, sending, incoming = await ringing(alice, bob)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{one.service.settings.grpc_port}") as ch:
        stub = signaling_pb2_grpc.SignalingStub(ch)
        request = TerminateCallRequest(call_id=call_id, reason="relay lost")
        assert (await stub.TerminateCall(request, timeout=5)).found
        cancel = await cancelled(bob, incoming)
        assert 'text="relay lost"' in (cancel.headers.get("Reason") or "")
        exchange = await sending
        assert exchange.final is not None and exchange.final.status == 488
        assert "call ended: relay lost" in (exchange.final.headers.get("Warning") or "")
        assert not (await stub.TerminateCall(request, timeout=5)).found
    await alice.close()
    await bob.close()


async def test_keyagreement_ends_a_ringing_call_on_its_replica(pki: Pki, redis_url: str) -> None:
    """The INVITE's transaction lives on the caller's replica: keyagreement's
    terminator goes there, by the replica named in the offer."""
    await add_users(redis_url)
    async with replica(pki, redis_url) as first, replica(pki, redis_url) as second:
        alice = await registered(pki, second.port, "alice")
        bob = await registered(pki, first.port, "bob")
        call_id, sending, incoming = await ringing(alice, bob)
        channels = ChannelPool(None)
        terminator = CallTerminator(ReplicaRegistry(first.service.redis), channels)
        assert await terminator.terminate(call_id, "zrtp-mismatch", second.service.replica)
        await cancelled(bob, incoming)
        exchange = await sending
        assert exchange.final is not None and exchange.final.status == 488
        await channels.close()
        await alice.close()
        await bob.close()


async def test_plain_tcp_phone_calls_a_tls_phone(pki: Pki, redis_url: str) -> None:
    """QW_SIP_TCP_PORT on: a phone over plain TCP registers and calls one over
    TLS; each side's route set starts with the transport it speaks (double
    Record-Route), and in-dialog requests find their way both ways."""
    await add_users(redis_url)
    tcp_port = free_port()
    async with replica(pki, redis_url, sip_tcp_port=tcp_port) as one:
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
        connection = SipConnection(reader, writer)
        alice = UserAgent(connection, "alice", PASSWORDS["alice"], DOMAIN, tcp_port)
        assert (await alice.register()).status == 200
        (binding,) = await one.service.locations.bindings(f"sip:alice@{DOMAIN}")
        assert flow_transport(binding.flow_id) == "TCP"
        bob = await registered(pki, one.port, "bob")
        incoming, ok = await call(alice, bob)
        routes = incoming.headers.get_all("Record-Route")
        assert [r.split(";transport=")[1][:3] for r in routes] == ["tls", "tcp"]
        assert f":{tcp_port};transport=tcp" in routes[1]
        assert incoming.vias[0].transport == "TLS"
        await bob_hangs_up(alice, bob, incoming, ok)
        incoming, ok = await call(bob, alice, callee="alice")
        assert incoming.vias[0].transport == "TCP"
        assert incoming.vias[0].port == tcp_port
        await bob_hangs_up(bob, alice, incoming, ok)
        await alice.close()
        await bob.close()


def udp_phone() -> tuple[socket.socket, int]:
    """A non-blocking UDP socket on loopback standing for a phone, and its port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock, int(sock.getsockname()[1])


async def test_udp_final_response_retransmitted_until_acked(pki: Pki, redis_url: str) -> None:
    """Over UDP the INVITE server transaction resends its final response (Timer G)
    and absorbs the INVITE's retransmissions; the ACK ends it (RFC 3261 17.2.1).
    Here: alice's authenticated INVITE to carol, who is offline (480)."""
    udp_port = free_port()
    await add_users(redis_url)
    async with replica(pki, redis_url, sip_udp_port=udp_port):
        loop = asyncio.get_running_loop()
        sock, local = udp_phone()

        def invite(cseq: int, authorization: str = "") -> bytes:
            return (
                f"INVITE sip:carol@{DOMAIN} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bKudp{cseq};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:alice@{DOMAIN}>;tag=a1\r\nTo: <sip:carol@{DOMAIN}>\r\n"
                f"Call-ID: udp-retransmit\r\nCSeq: {cseq} INVITE\r\n{authorization}"
                f"Contact: <sip:alice@127.0.0.1:{local}>\r\nContent-Length: 0\r\n\r\n"
            ).encode()

        async def final() -> bytes:
            while True:
                data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 3)
                if not data.startswith(b"SIP/2.0 100"):
                    return data

        await loop.sock_sendto(sock, invite(1), ("127.0.0.1", udp_port))
        challenged = parse_message(await final())
        assert isinstance(challenged, Response) and challenged.status == 407
        challenge = parse_challenge(challenged.headers.get_all("Proxy-Authenticate")[0])
        credentials = client_credentials(
            challenge, "alice", PASSWORDS["alice"], "INVITE", f"sip:carol@{DOMAIN}", 1, "c0ffee"
        )
        authenticated = invite(2, f"Proxy-Authorization: {format_credentials(credentials)}\r\n")
        await loop.sock_sendto(sock, authenticated, ("127.0.0.1", udp_port))
        first = await final()
        assert first.startswith(b"SIP/2.0 480")
        assert await final() == first  # resent (Timer G), the same answer
        await loop.sock_sendto(sock, authenticated, ("127.0.0.1", udp_port))  # a retransmission
        assert await final() == first
        to_tag = re.search(rb"\r\nTo: [^\r]*;tag=([^;\r]+)", first)
        assert to_tag is not None, "a final response we make carries a To tag"
        ack = (
            authenticated.replace(b"INVITE sip:", b"ACK sip:", 1)
            .replace(b"2 INVITE", b"2 ACK")
            .replace(b"To: <sip:carol@127.0.0.1>", b"To: <sip:carol@127.0.0.1>;tag=" + to_tag[1])
        )
        await loop.sock_sendto(sock, ack, ("127.0.0.1", udp_port))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(loop.sock_recv(sock, 4096), 1.5)
        sock.close()


async def test_udp_malformed_input_answered_or_dropped(pki: Pki, redis_url: str) -> None:
    """Over UDP too: a request with a bad header gets 400, noise is dropped, and the
    listener goes on answering."""
    udp_port = free_port()
    async with replica(pki, redis_url, sip_udp_port=udp_port):
        loop = asyncio.get_running_loop()
        sock, local = udp_phone()
        bad = (
            f"OPTIONS sip:{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bKbad\r\n"
            "From: <sip:alice@127.0.0.1>;tag=b\r\nTo: <sip:127.0.0.1>\r\n"
            "Call-ID: udp-bad\r\nCSeq: many OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        await loop.sock_sendto(sock, b"\x00\xffnot SIP at all", ("127.0.0.1", udp_port))
        await loop.sock_sendto(sock, bad, ("127.0.0.1", udp_port))
        answer = await asyncio.wait_for(loop.sock_recv(sock, 4096), 3)
        assert answer.startswith(b"SIP/2.0 400")
        good = bad.replace(b"CSeq: many OPTIONS", b"CSeq: 1 OPTIONS")
        await loop.sock_sendto(sock, good, ("127.0.0.1", udp_port))
        answer = await asyncio.wait_for(loop.sock_recv(sock, 4096), 3)
        assert answer.startswith(b"SIP/2.0 ") and not answer.startswith(b"SIP/2.0 400")
        sock.close()


async def test_udp_register_retransmission_gets_the_same_answer(pki: Pki, redis_url: str) -> None:
    """A REGISTER resent over UDP (its answer lost) is answered as before, not
    challenged anew; a new REGISTER gets a new challenge."""
    udp_port = free_port()
    async with replica(pki, redis_url, sip_udp_port=udp_port):
        loop = asyncio.get_running_loop()
        sock, local = udp_phone()

        async def register(branch: str, cseq: int) -> bytes:
            request = (
                f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{branch};rport\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag=r1\r\n"
                f"To: <sip:alice@{DOMAIN}>\r\nCall-ID: udp-register\r\nCSeq: {cseq} REGISTER\r\n"
                f"Contact: <sip:alice@127.0.0.1:{local}>\r\nContent-Length: 0\r\n\r\n"
            ).encode()
            await loop.sock_sendto(sock, request, ("127.0.0.1", udp_port))
            return await asyncio.wait_for(loop.sock_recv(sock, 4096), 3)

        first = await register("reg1", 1)
        assert first.startswith(b"SIP/2.0 401")
        assert await register("reg1", 1) == first
        assert (await register("reg2", 2)) != first  # a new request: a new nonce
        sock.close()


async def test_binding_dies_with_its_flow(pki: Pki, one: Replica) -> None:
    """RFC 5626: a phone whose connection is gone is not called (and not listed)."""
    alice = await registered(pki, one.port, "alice")
    bob = await registered(pki, one.port, "bob")
    await bob.close()

    async def unbound() -> bool:
        return not await one.service.locations.bindings(f"sip:bob@{DOMAIN}")

    await eventually(unbound, 5, "bob's binding gone with his connection")
    exchange = await alice.send(alice.build("INVITE", f"sip:bob@{DOMAIN}"))
    assert exchange.final is not None and exchange.final.status == 480
    assert len(exchange.final.vias) == 1  # our own Via never leaks upstream
    await alice.close()


async def test_certificate_rotated_without_restart(tmp_path: Path, redis_url: str) -> None:
    """New connections get the new certificate once its files change (cert-manager style)."""
    import ssl

    from quietwire.embedded.pki import ensure_pki

    first = ensure_pki(tmp_path / "one", DOMAIN)
    second = ensure_pki(tmp_path / "two", DOMAIN)
    live_cert, live_key = tmp_path / "live.pem", tmp_path / "live.key"
    live_cert.write_bytes(first.sip_cert.read_bytes())
    live_key.write_bytes(first.sip_key.read_bytes())
    await add_users(redis_url)
    async with replica(
        first, redis_url, sip_tls_cert=live_cert, sip_tls_key=live_key, sip_tls_reload_every=0.1
    ) as r:
        ua = await phone(first, r.port, "alice")
        assert (await ua.register()).status == 200
        await ua.close()
        live_cert.write_bytes(second.sip_cert.read_bytes())
        live_key.write_bytes(second.sip_key.read_bytes())

        async def rotated() -> bool:
            try:
                await (await SipConnection.open("127.0.0.1", r.port, second.ca)).close()
            except ssl.SSLCertVerificationError:
                return False
            return True

        await eventually(rotated, 5, "new connections getting the new certificate")
        with pytest.raises(ssl.SSLCertVerificationError):
            await SipConnection.open("127.0.0.1", r.port, first.ca)
        again = await phone(second, r.port, "alice")
        assert (await again.register()).status == 200
        await again.close()


async def test_wildcard_unregister_and_out_of_order(pki: Pki, one: Replica) -> None:
    ua = await registered(pki, one.port, "alice")
    aor = f"sip:alice@{DOMAIN}"
    assert len(await one.service.locations.bindings(aor)) == 1
    (binding,) = await one.service.locations.bindings(aor)
    older = Registration()
    older.CopyFrom(binding)
    older.cseq = binding.cseq - 1
    with pytest.raises(OutOfOrder):
        await one.service.locations.put(older)
    wildcard = ua.build("REGISTER", f"sip:{DOMAIN}", to=f"<{ua.aor}>")
    wildcard.headers.set("Contact", "*")
    wildcard.headers.add("Expires", "0")
    cleared = await ua.send(wildcard)
    assert cleared.final is not None and cleared.final.status == 200
    assert await one.service.locations.bindings(aor) == []
    await ua.close()
