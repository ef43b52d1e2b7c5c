"""What a stranger's bytes do to a real signaling replica (real TLS, UDP, Redis).

Issue 12, findings 8, 9 and 13: every RFC 4475 message gets the RFC's treatment
over a real socket; digits are ASCII; single-value headers come once; a bad
message on a stream is answered before anything closes and does not take the
next message with it; connections are capped per source and in total, a
message has a deadline that trickled bytes do not extend, and a message
carries a small body until someone authenticates on the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from quietwire.embedded.pki import Pki
from quietwire.protocols.sip.digest import client_credentials, format_credentials, parse_challenge
from quietwire.protocols.sip.message import parse_message

from tests.conftest import free_port
from tests.integration.signaling_harness import (
    DOMAIN,
    PASSWORDS,
    Replica,
    add_users,
    make_pki,
    replica,
)
from tests.support.wait import until
from tests.vectors.rfc4475 import CASES

_STATUS = re.compile(rb"^SIP/2\.0 (\d{3}) ", re.M)
#: Statuses that mean "your message is broken": never the answer to a valid one.
PARSER_REFUSALS = {400, 413, 416, 420, 505}


def options(call_id: str = "probe", **headers: str) -> bytes:
    lines = [
        f"OPTIONS sip:{DOMAIN} SIP/2.0",
        "Via: SIP/2.0/TLS 192.0.2.1;branch=z9hG4bK" + call_id,
        "Max-Forwards: 70",
        "From: <sip:nobody@192.0.2.1>;tag=1",
        f"To: <sip:{DOMAIN}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
        *(f"{name}: {value}" for name, value in headers.items()),
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class Peer:
    """A raw TLS client: bytes out, status codes of what comes back."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    buffer: bytes = b""
    #: Everything received so far.
    seen: bytes = b""

    @classmethod
    async def open(cls, pki: Pki, port: int, source: str = "127.0.0.1") -> Peer:
        context = ssl.create_default_context(cafile=str(pki.ca))
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                DOMAIN, port, ssl=context, server_hostname=DOMAIN, local_addr=(source, 0)
            ),
            10,
        )
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def statuses(self, count: int, timeout: float = 10.0) -> list[int]:
        """The next ``count`` status codes (fewer if the server closes first)."""
        deadline = time.monotonic() + timeout
        while len(_STATUS.findall(self.buffer)) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                data = await asyncio.wait_for(self.reader.read(65536), left)
            except (TimeoutError, ConnectionError, ssl.SSLError):
                break
            if not data:
                break
            self.buffer += data
            self.seen += data
        found = [int(code) for code in _STATUS.findall(self.buffer)]
        taken = found[:count]
        if len(found) >= count:
            ends = [m.start() for m in _STATUS.finditer(self.buffer)]
            self.buffer = self.buffer[ends[count] :] if len(ends) > count else b""
        else:
            self.buffer = b""
        return taken

    async def final(self, timeout: float = 10.0) -> int | None:
        """The next final (non-1xx) status, None if the server closes first."""
        while status := await self.statuses(1, timeout):
            if status[0] >= 200:
                return status[0]
        return None

    async def closed_by_server(self, timeout: float) -> bool:
        """True when the server ends the connection within ``timeout``."""
        try:
            while data := await asyncio.wait_for(self.reader.read(65536), timeout):
                self.buffer += data
                self.seen += data
        except TimeoutError:
            return False
        except (ConnectionError, ssl.SSLError):
            return True
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(TimeoutError, ConnectionError, ssl.SSLError, OSError):
            await asyncio.wait_for(self.writer.wait_closed(), 5)


async def udp_statuses(port: int, data: bytes, count: int, timeout: float = 5.0) -> list[int]:
    """The final statuses answering one datagram."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.bind(("127.0.0.1", 0))
        await loop.sock_sendto(sock, data, ("127.0.0.1", port))
        found: list[int] = []
        deadline = time.monotonic() + timeout
        while len(found) < count and (left := deadline - time.monotonic()) > 0:
            try:
                reply = await asyncio.wait_for(loop.sock_recv(sock, 65536), left)
            except TimeoutError:
                break
            found += [int(code) for code in _STATUS.findall(reply) if int(code) >= 200]
        return found


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


async def _replica(pki: Pki, redis_url: str, **overrides: Any) -> AsyncIterator[Replica]:
    await add_users(redis_url)
    async with replica(pki, redis_url, **overrides) as r:
        yield r


@pytest.fixture
async def one(pki: Pki, redis_url: str) -> AsyncIterator[Replica]:
    """A replica with UDP on and a short message deadline."""
    async for r in _replica(pki, redis_url, sip_udp_port=free_port(), sip_message_timeout=1.5):
        yield r


def _ours(name: str, data: bytes) -> bytes:
    """REGISTERs go to our registrar (the RFC's treatment is a registrar's)."""
    return data.replace(
        b"REGISTER sip:example.com SIP/2.0", f"REGISTER sip:{DOMAIN} SIP/2.0".encode()
    )


def _is_response(data: bytes) -> bool:
    return data.startswith(b"SIP/2.0 ")


def _expected(name: str) -> tuple[int | None, set[int]]:
    """(exact status or None, statuses that must not be the answer)."""
    case = CASES[name]
    if case.status is not None:
        return case.status, set()
    if case.answer is not None:
        return case.answer, set()
    return None, PARSER_REFUSALS


async def test_every_rfc4475_message_over_tls(one: Replica, pki: Pki) -> None:
    """Each message on its own TLS connection: requests get the RFC's answer,
    responses are dropped and the connection stays; what cannot be framed on a
    stream is answered 400 and then closed; clerr waits for its body, then closes."""
    wrong: dict[str, object] = {}
    for name, case in CASES.items():
        data = _ours(name, case.data)
        peer = await Peer.open(pki, one.port)
        await peer.send(data)
        if name == "dblreq":
            await peer.close()
            continue  # a UDP case: its second message is the stream's next one
        if _is_response(data):
            await peer.send(options(f"after-{name}"))
            got: object = await peer.statuses(1)
            if got == [400] or not got:
                wrong[name] = got
        elif name == "regaut01":
            continue  # test_unknown_authorization_scheme_is_challenged
        elif name == "clerr":  # 9999 bytes before anyone authenticated: over the limit
            got = await peer.statuses(1)
            if got != [413] or not await peer.closed_by_server(5):
                wrong[name] = got
        elif name in ("ncl", "mcl01", "inv2543"):
            got = await peer.statuses(1)
            if got != [400] or not await peer.closed_by_server(5):
                wrong[name] = got
        else:
            status, never = _expected(name)
            final = await peer.final()
            if final is None or (status is not None and final != status) or final in never:
                wrong[name] = final
        await peer.close()
    assert wrong == {}


async def test_every_rfc4475_request_over_udp(one: Replica) -> None:
    port = one.service.settings.sip_udp_port
    wrong: dict[str, object] = {}
    for name, case in CASES.items():
        data = _ours(name, case.data)
        if _is_response(data):
            continue
        got = await udp_statuses(port, data, 2 if name == "dblreq" else 1, timeout=3.0)
        status, never = _expected(name)
        if name == "regaut01":
            continue  # test_unknown_authorization_scheme_is_challenged
        if name == "dblreq":  # the REGISTER is answered, the trailing INVITE ignored
            if got != [401]:
                wrong[name] = got
        elif not got or (status is not None and got[0] != status) or got[0] in never:
            wrong[name] = got
    assert wrong == {}


async def test_digits_are_ascii_and_nothing_escapes(
    one: Replica, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """``²`` and Arabic-Indic digits were numbers to int(): now a 400, the stream lives."""
    caplog.set_level(logging.ERROR)
    peer = await Peer.open(pki, one.port)
    for bad in (
        options("sup").replace(b"CSeq: 1 OPTIONS", "CSeq: \u00b2 OPTIONS".encode()),
        options("arabic").replace(b"Max-Forwards: 70", "Max-Forwards: \u0667\u0660".encode()),
        options("port").replace(b"192.0.2.1;", "192.0.2.1:\u0665\u0660\u0666\u0660;".encode()),
    ):
        await peer.send(bad)
        assert await peer.statuses(1) == [400]
    await peer.send(options("fine"))
    assert (await peer.statuses(1))[0] not in PARSER_REFUSALS
    await peer.send(options("cl").replace(b"Content-Length: 0", "Content-Length: \u0660".encode()))
    assert await peer.statuses(1) == [400]
    assert await peer.closed_by_server(5)
    await peer.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_register_with_a_non_sip_request_uri_is_answered(one: Replica, pki: Pki) -> None:
    peer = await Peer.open(pki, one.port)
    register = _ours("cparam01", CASES["cparam01"].data).replace(
        f"REGISTER sip:{DOMAIN} SIP/2.0".encode(), b"REGISTER tel:+15551234 SIP/2.0"
    )
    await peer.send(register)
    assert await peer.statuses(1) == [416]
    await peer.close()


@pytest.mark.parametrize("header", ["From", "To", "Call-ID", "CSeq", "Max-Forwards"])
async def test_single_value_headers_twice_are_refused(one: Replica, pki: Pki, header: str) -> None:
    """Finding 8: a second From (a forged one) was forwarded to the callee."""
    value = {
        "From": '"Your Bank" <sip:bank@192.0.2.9>;tag=2',
        "To": "<sip:bob@127.0.0.1>",
        "Call-ID": "second",
        "CSeq": "2 OPTIONS",
        "Max-Forwards": "69",
    }[header]
    message = options(f"dup-{header}").replace(
        b"Content-Length: 0", f"{header}: {value}\r\nContent-Length: 0".encode()
    )
    peer = await Peer.open(pki, one.port)
    await peer.send(message)
    assert await peer.statuses(1) == [400]
    await peer.close()
    assert await udp_statuses(one.service.settings.sip_udp_port, message, 1) == [400]


async def test_two_content_lengths_answered_then_closed(one: Replica, pki: Pki) -> None:
    """RFC 4475 3.3.9 on a stream: 400 written before the close (it was lost)."""
    peer = await Peer.open(pki, one.port)
    await peer.send(options("cl2").replace(b"Content-Length: 0", b"Content-Length: 0\r\nl: 5"))
    assert await peer.statuses(1) == [400]
    assert await peer.closed_by_server(5)
    await peer.close()


async def test_a_bad_message_does_not_take_the_next_one(one: Replica, pki: Pki) -> None:
    peer = await Peer.open(pki, one.port)
    broken = options("bad").replace(b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS")
    await peer.send(broken + options("good"))
    first, second = await peer.statuses(2)
    assert first == 400 and second not in PARSER_REFUSALS
    # A good message and an unframable one in the same segment: both answered.
    await peer.send(options("good2") + options("cl").replace(b"Content-Length: 0", b"l: x"))
    first, second = await peer.statuses(2)
    assert first not in PARSER_REFUSALS and second == 400
    assert await peer.closed_by_server(5)
    await peer.close()


async def test_proxy_require_gets_420_with_unsupported(one: Replica, pki: Pki) -> None:
    peer = await Peer.open(pki, one.port)
    await peer.send(options("bext", **{"Proxy-Require": "noProxiesSupportThis, norThis"}))
    assert await peer.statuses(1) == [420]
    assert b"\r\nUnsupported: noProxiesSupportThis, norThis\r\n" in peer.seen
    await peer.close()


async def test_unknown_authorization_scheme_is_challenged(one: Replica, pki: Pki) -> None:
    peer = await Peer.open(pki, one.port)
    await peer.send(_ours("regaut01", CASES["regaut01"].data))
    assert await peer.statuses(1) == [401]
    await peer.close()


async def test_a_stream_message_has_a_deadline_however_it_trickles(one: Replica, pki: Pki) -> None:
    """Slowloris: a byte every 0.2 s used to reset a 300 s idle timer forever."""
    timeout = one.service.settings.sip_message_timeout
    peer = await Peer.open(pki, one.port)
    start = time.monotonic()
    message = options("slow")
    closed_at = None
    for byte in message * 4:
        try:
            await peer.send(bytes([byte]))
        except (ConnectionError, ssl.SSLError, OSError):
            break
        if await peer.closed_by_server(0.2):
            closed_at = time.monotonic() - start
            break
    assert closed_at is not None, "still open after trickling the whole message"
    assert timeout - 0.1 <= closed_at <= timeout + 3.0
    await peer.close()


async def test_keepalives_between_messages_are_not_a_partial_message(
    one: Replica, pki: Pki
) -> None:
    """A lone CRLF (RFC 5626 pong) does not start the message deadline."""
    peer = await Peer.open(pki, one.port)
    await peer.send(b"\r\n")
    assert not await peer.closed_by_server(one.service.settings.sip_message_timeout + 1.0)
    await peer.send(options("after-pong"))
    assert (await peer.statuses(1))[0] not in PARSER_REFUSALS
    await peer.close()


def _invite(body: int, *headers: str) -> bytes:
    lines = [
        f"INVITE sip:bob@{DOMAIN} SIP/2.0",
        "Via: SIP/2.0/TLS 192.0.2.1;branch=z9hG4bKbig",
        "Max-Forwards: 70",
        "From: <sip:alice@127.0.0.1>;tag=1",
        f"To: <sip:bob@{DOMAIN}>",
        "Call-ID: big-body",
        "CSeq: 1 INVITE",
        "Content-Type: application/sdp",
        *headers,
        f"Content-Length: {body}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + b"v=0\r\n" + b"a" * (body - 5)


async def _register(peer: Peer, user: str = "alice") -> int | None:
    """REGISTER ``user`` on ``peer`` with digest: the final status of the second try."""
    lines = [
        f"REGISTER sip:{DOMAIN} SIP/2.0",
        "Via: SIP/2.0/TLS 192.0.2.1;branch=z9hG4bKreg{cseq}",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{DOMAIN}>;tag=r",
        f"To: <sip:{user}@{DOMAIN}>",
        "Call-ID: body-limit-register",
        "CSeq: {cseq} REGISTER",
        f"Contact: <sip:{user}@192.0.2.1;transport=tls>",
        "{authorization}Content-Length: 0",
    ]
    template = "\r\n".join(lines) + "\r\n\r\n"
    await peer.send(template.format(cseq=1, authorization="").encode())
    if await peer.final() != 401:
        return None
    challenge_at = peer.seen.rindex(b"SIP/2.0 401")
    challenged = parse_message(peer.seen[challenge_at:])
    challenge = parse_challenge(challenged.headers.get("WWW-Authenticate") or "")
    answer = client_credentials(
        challenge, user, PASSWORDS[user], "REGISTER", f"sip:{DOMAIN}", 1, "cnonce"
    )
    authorization = f"Authorization: {format_credentials(answer)}\r\n"
    await peer.send(template.format(cseq=2, authorization=authorization).encode())
    return await peer.final()


async def test_a_small_body_until_someone_authenticates(one: Replica, pki: Pki) -> None:
    """Finding 9: 64 KiB bodies per unauthenticated connection; now 4 KiB until a
    digest login succeeds on the connection (a credentials header is not enough)."""
    limit = one.service.settings.sip_preauth_body_bytes
    peer = await Peer.open(pki, one.port)
    await peer.send(_invite(limit))
    assert await peer.final() not in PARSER_REFUSALS  # 407: go and authenticate
    await peer.send(_invite(limit + 1)[:400])  # the head is enough to refuse it
    assert await peer.final() == 413
    assert await peer.closed_by_server(5)
    await peer.close()
    forged = 'Proxy-Authorization: Digest username="alice", realm="x", nonce="n", uri="u"'
    peer = await Peer.open(pki, one.port)
    await peer.send(_invite(limit + 1, forged)[:400])
    assert await peer.final() == 413
    await peer.close()
    peer = await Peer.open(pki, one.port)
    assert await _register(peer) == 200
    await peer.send(_invite(limit * 4))
    assert await peer.final() not in PARSER_REFUSALS
    await peer.close()


@pytest.fixture
async def capped(pki: Pki, redis_url: str) -> AsyncIterator[Replica]:
    async for r in _replica(
        pki,
        redis_url,
        sip_max_connections=4,
        sip_max_connections_per_source=2,
        sip_message_timeout=1.0,
        sip_udp_port=free_port(),
    ):
        yield r


async def test_udp_peers_are_capped(capped: Replica) -> None:
    """Each UDP source port was a flow of its own, without bound (spoofable)."""
    port = capped.service.settings.sip_udp_port
    answered = [bool(await udp_statuses(port, options(f"udp{i}"), 1, 2.0)) for i in range(3)]
    assert answered == [True, True, False]
    udp = capped.service.udp_listener
    assert udp is not None and len(udp.peers) == 2


async def _refused(pki: Pki, port: int, source: str) -> bool:
    """True when a TLS connection from ``source`` is closed before it can be used."""
    try:
        peer = await Peer.open(pki, port, source)
    except (ConnectionError, ssl.SSLError, OSError, TimeoutError):
        return True
    await peer.send(options(f"cap-{source}"))
    answered = bool(await peer.statuses(1, timeout=3))
    await peer.close()
    return not answered


async def test_connections_are_capped_per_source_and_in_total(capped: Replica, pki: Pki) -> None:
    port = capped.port
    first = [await Peer.open(pki, port, "127.0.0.1") for _ in range(2)]
    assert await _refused(pki, port, "127.0.0.1")  # a third from one source
    others = [await Peer.open(pki, port, source) for source in ("127.0.0.2", "127.0.0.3")]
    assert await _refused(pki, port, "127.0.0.4")  # a fifth in total
    assert len(capped.service.flows.flows) == 4
    await first[0].close()
    await until(lambda: len(capped.service.flows.flows) < 4, 5, "the closed flow gone")
    assert not await _refused(pki, port, "127.0.0.4")
    for peer in [*first[1:], *others]:
        await peer.close()


async def test_partial_messages_cannot_hold_memory(capped: Replica, pki: Pki) -> None:
    """Many connections each holding a partial message: never more flows than the
    cap, each gone after the message deadline, nothing left behind."""
    service = capped.service
    peers: list[Peer] = []
    most = 0
    for i in range(12):
        source = f"127.0.0.{10 + i % 6}"
        try:
            peer = await Peer.open(pki, capped.port, source)
        except (ConnectionError, ssl.SSLError, OSError, TimeoutError):
            continue
        with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
            await peer.send(_invite(100)[:200] + b"X-Padding: " + b"a" * 15_000)
        peers.append(peer)
        most = max(most, len(service.flows.flows))
    assert most <= service.settings.sip_max_connections
    await until(
        lambda: not service.flows.flows, service.settings.sip_message_timeout + 5, "no flows left"
    )
    assert service.flows.flows == {}
    assert service.listener.caps.open == 0
    for peer in peers:
        await peer.close()
