"""RFC 3261 section 17 transactions with a fake clock: retransmissions, timeouts, ACKs."""

from __future__ import annotations

from quietwire.protocols.sip.message import Request, Response, parse_message, reply
from quietwire.protocols.sip.transaction import (
    T1,
    T2,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ServerInviteTransaction,
    ServerKey,
    ServerNonInviteTransaction,
    State,
    Timeout,
    Timer,
)

from tests.support.clock import FakeClock as Clock

INVITE = (
    b"INVITE sip:bob@example.org SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:alice@example.org>;tag=a\r\n"
    b"To: <sip:bob@example.org>\r\n"
    b"Call-ID: tx1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def request(method: str = "INVITE") -> Request:
    message = parse_message(INVITE.replace(b"INVITE", method.encode()))
    assert isinstance(message, Request)
    return message


def response(status: int, req: Request) -> Response:
    return reply(req, status, "X")


def run_until(
    tx: ClientInviteTransaction
    | ClientNonInviteTransaction
    | ServerInviteTransaction
    | ServerNonInviteTransaction,
    clock: Clock,
    until: float,
) -> list[float]:
    """Advance time to ``until``, firing timers; returns when messages were sent."""
    sent_at: list[float] = []
    while (deadline := tx.next_timer) is not None and deadline <= until:
        clock.t = deadline
        before = len(tx.to_send)
        tx.poll()
        sent_at += [clock.t] * (len(tx.to_send) - before)
    clock.t = until
    return sent_at


def test_invite_client_over_udp_retransmits_then_times_out() -> None:
    clock = Clock()
    tx = ClientInviteTransaction(request(), reliable=False, clock=clock)
    assert len(tx.to_send) == 1
    sent = run_until(tx, clock, 64 * T1)
    assert sent == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]  # Timer A: T1, doubling
    assert tx.to_tu == [Timeout(Timer.TIMER_B)]
    assert tx.terminated


def test_invite_client_provisional_stops_a_final_is_acked() -> None:
    clock = Clock()
    req = request()
    tx = ClientInviteTransaction(req, reliable=False, clock=clock)
    tx.receive(response(180, req))
    assert tx.state is State.PROCEEDING
    assert run_until(tx, clock, 10) == []
    tx.receive(response(486, req))
    assert tx.state is State.COMPLETED
    ack = tx.to_send[-1]
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.cseq.number == 1 and ack.vias[0].branch == "z9hG4bKabc"
    tx.receive(response(486, req))  # retransmitted final: ACK again
    assert [m.method for m in tx.to_send if isinstance(m, Request)].count("ACK") == 2
    run_until(tx, clock, 10 + 32)
    assert tx.terminated


def test_invite_client_2xx_accepted_then_m() -> None:
    clock = Clock()
    req = request()
    tx = ClientInviteTransaction(req, reliable=True, clock=clock)
    tx.receive(response(200, req))
    tx.receive(response(200, req))
    assert tx.state is State.ACCEPTED
    assert [r.status for r in tx.to_tu if isinstance(r, Response)] == [200, 200]
    run_until(tx, clock, 64 * T1)
    assert tx.terminated


def test_reliable_transports_never_retransmit() -> None:
    clock = Clock()
    req = request()
    tx = ClientInviteTransaction(req, reliable=True, clock=clock)
    tx.receive(response(404, req))
    assert tx.terminated  # Timer D is zero on TLS/TCP
    nict = ClientNonInviteTransaction(request("OPTIONS"), reliable=True, clock=clock)
    assert run_until(nict, clock, clock.t + 64 * T1) == []
    assert nict.to_tu == [Timeout(Timer.TIMER_F)]


def test_non_invite_client_retransmission_caps_at_t2() -> None:
    clock = Clock()
    tx = ClientNonInviteTransaction(request("REGISTER"), reliable=False, clock=clock)
    sent = run_until(tx, clock, 64 * T1)
    gaps = [b - a for a, b in zip([0.0, *sent], sent, strict=False)]
    assert gaps[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(gaps) == T2
    assert tx.to_tu == [Timeout(Timer.TIMER_F)]


def test_invite_server_retransmits_final_until_ack() -> None:
    clock = Clock()
    req = request()
    tx = ServerInviteTransaction(req, reliable=False, clock=clock)
    tx.respond(response(100, req))
    tx.receive(req)  # the client retransmits: we repeat our last response
    assert [r.status for r in tx.to_send if isinstance(r, Response)] == [100, 100]
    tx.respond(response(486, req))
    sent = run_until(tx, clock, 3.0)
    assert sent == [0.5, 1.5]  # Timer G
    ack = request("ACK")
    assert ServerKey.of(ack) == tx.key
    tx.receive(ack)
    assert tx.state is State.CONFIRMED
    run_until(tx, clock, 20)
    assert tx.terminated


def test_invite_server_without_ack_times_out() -> None:
    clock = Clock()
    req = request()
    tx = ServerInviteTransaction(req, reliable=True, clock=clock)
    tx.respond(response(500, req))
    run_until(tx, clock, 64 * T1)
    assert tx.to_tu == [Timeout(Timer.TIMER_H)]


def test_non_invite_server_absorbs_retransmissions() -> None:
    clock = Clock()
    req = request("REGISTER")
    tx = ServerNonInviteTransaction(req, reliable=False, clock=clock)
    tx.receive(req)
    assert tx.to_send == []
    tx.respond(response(200, req))
    tx.receive(req)
    assert [r.status for r in tx.to_send if isinstance(r, Response)] == [200, 200]
    run_until(tx, clock, 64 * T1)
    assert tx.terminated
