"""The soak's phones and calls: our SIP user agent over TLS, one secure call at a time.

A call is what a phone does: INVITE with SDP carrying ``a=zrtp-hash``, digest
challenge answered, 200, ACK; the ZRTP handshake through the relay; media both
ways; BYE from either side, 200. It succeeds only if every step did, the
platform marked it zrtp-verified, and media reached each phone from the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections import Counter
from dataclasses import dataclass, field

import redis.asyncio as redis
from quietwire.keyagreement.calls import CALL_KEY
from quietwire.keyagreement.outcome import Outcome
from quietwire.phone.audio import PCMU
from quietwire.phone.sdp import describe, remote_of
from quietwire.phone.useragent import UserAgent
from quietwire.protocols.sip.message import Request
from quietwire.runtime.redisclient import text
from quietwire.signaling.registrar import MIN_EXPIRES
from redis.exceptions import RedisError

from bench.soak_media import Counts, Generator, Handshake, handshake, replay, udp_socket

DOMAIN = "127.0.0.1"
SDP = "application/sdp"
#: Seconds a SIP request or an expected request may take on a loaded machine.
SIP_TIMEOUT = 30.0
#: Seconds for keyagreement to mark a call zrtp-verified after the handshake.
VERIFY_TIMEOUT = 15.0
#: Seconds a phone waits after a failed call before it calls again.
RETRY_AFTER = 5.0
#: A direction whose phone got less than this share of what the other sent failed.
MIN_DELIVERED = 0.5


class CallFailed(Exception):
    """A call attempt that did not do what a phone expects; the message says which step."""


@dataclass
class Tally:
    """Every call attempt and registration, accounted for."""

    attempts: int = 0
    completed: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    registrations: int = 0
    registration_failures: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    received: int = 0
    in_progress: int = 0
    most_at_once: int = 0

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def loss(self) -> float:
        return 1 - self.received / self.sent if self.sent else 0.0


def expires(every: float) -> int:
    """The Expires of a registration refreshed every ``every`` seconds."""
    return max(MIN_EXPIRES, int(every * 2))


class Phone:
    """A registered user agent that refreshes its registration every ``every`` seconds."""

    def __init__(self, ua: UserAgent, tally: Tally) -> None:
        self.ua, self.tally = ua, tally

    @property
    def user(self) -> str:
        return self.ua.user

    async def register(self, expires: int) -> bool:
        self.tally.registrations += 1
        try:
            answer = await asyncio.wait_for(self.ua.register(expires), SIP_TIMEOUT)
        except (TimeoutError, ConnectionError, AssertionError) as exc:
            self.tally.registration_failures[type(exc).__name__] += 1
            return False
        if answer.status != 200:
            self.tally.registration_failures[f"REGISTER {answer.status}"] += 1
            return False
        return True

    async def refresh(self, every: float, until: float) -> None:
        """Register again every ``every`` seconds (first after a random share of it)."""
        loop = asyncio.get_running_loop()
        wait = random.uniform(0, every)  # noqa: S311 (spreading load, not security)
        while loop.time() + wait < until:
            await asyncio.sleep(wait)
            await self.register(expires(every))
            wait = every


async def next_request(ua: UserAgent, method: str, call_id: str) -> Request:
    """The next ``method`` of call ``call_id`` that ``ua`` receives. Others are of an
    earlier call: a BYE (the platform ending a call that failed) is answered 200,
    anything else dropped."""
    while True:
        request = await asyncio.wait_for(ua.requests.get(), SIP_TIMEOUT)
        if request.method == method and request.call_id == call_id:
            return request
        if request.method == "BYE":
            await ua.connection.send(ua.answer(request, 200, "OK"))


async def verified(client: redis.Redis, call_id: str) -> str:
    """The call's outcome once zrtp-verified, or the last one seen after VERIFY_TIMEOUT."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + VERIFY_TIMEOUT
    outcome = ""
    while loop.time() < deadline:
        raw = await client.hget(CALL_KEY.format(call_id=call_id), "outcome")
        outcome = text(raw) if raw else "no record"
        if outcome == Outcome.SECURED.value:
            break
        await asyncio.sleep(0.2)
    return outcome


@dataclass
class Call:
    """One attempt, from ``caller`` to ``callee``, held ``hold`` seconds."""

    caller: Phone
    callee: Phone
    hold: float
    generator: Generator
    client: redis.Redis
    streams: list[int] = field(default_factory=list)

    async def run(self) -> list[Counts]:
        shake = handshake()
        caller_sock, callee_sock = udp_socket(), udp_socket()
        try:
            return await self._run(shake, caller_sock, callee_sock)
        finally:
            for stream in self.streams:
                with contextlib.suppress(Exception):
                    await self.generator.remove(stream)
            caller_sock.close()
            callee_sock.close()

    async def _run(
        self, shake: Handshake, caller_sock: socket.socket, callee_sock: socket.socket
    ) -> list[Counts]:
        a, b = self.caller.ua, self.callee.ua
        offer = describe(DOMAIN, caller_sock.getsockname()[1], shake.caller_hash, (PCMU,))
        invite = a.build("INVITE", f"sip:{b.user}@{DOMAIN}", body=offer, content_type=SDP)
        sending = asyncio.create_task(a.send(invite, SIP_TIMEOUT))
        arriving = asyncio.create_task(next_request(b, "INVITE", invite.call_id))
        await asyncio.wait({sending, arriving}, return_when=asyncio.FIRST_COMPLETED)
        if not arriving.done() or arriving.exception() is not None:
            arriving.cancel()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await arriving
            refused = (await sending).final  # the caller's answer instead
            raise CallFailed(f"INVITE answered {refused.status if refused else 'nothing'}")
        incoming = arriving.result()
        answer = describe(DOMAIN, callee_sock.getsockname()[1], shake.callee_hash, (PCMU,))
        ok = b.answer(incoming, 200, "OK", body=answer)
        ok.headers.set("Record-Route", ", ".join(incoming.headers.get_all("Record-Route")))
        await b.connection.send(ok)
        try:
            exchange = await sending
        except TimeoutError:
            raise CallFailed("no final answer to INVITE") from None
        final = exchange.final
        if final is None or final.status != 200:
            raise CallFailed(f"INVITE answered {final.status if final else 'nothing'}")
        caller_dialog = a.dialog_from_response(invite, final)
        await a.connection.send(a.in_dialog(caller_dialog, "ACK", cseq=final.cseq.number))
        await next_request(b, "ACK", invite.call_id)
        callee_dialog = b.dialog_from_request(incoming, ok)
        to_caller = remote_of(final.body, (PCMU,))
        to_callee = remote_of(incoming.body, (PCMU,))
        caller_leg = (to_caller.address, to_caller.port)
        callee_leg = (to_callee.address, to_callee.port)

        await replay(shake, caller_sock, callee_sock, caller_leg, callee_leg)
        self.streams.append(await self.generator.add(caller_sock, caller_leg))
        self.streams.append(await self.generator.add(callee_sock, callee_leg))
        outcome = await verified(self.client, invite.call_id)
        if outcome != Outcome.SECURED.value:
            raise CallFailed(f"not zrtp-verified ({outcome})")
        await asyncio.sleep(self.hold)
        counts = [await self.generator.remove(stream) for stream in self.streams]
        self.streams.clear()
        for mine, theirs in ((counts[0], counts[1]), (counts[1], counts[0])):
            if mine.received < theirs.sent * MIN_DELIVERED:
                raise CallFailed("media lost one way")

        hanging_up, other = (a, b) if random.random() < 0.5 else (b, a)  # noqa: S311
        dialog = caller_dialog if hanging_up is a else callee_dialog
        bye = hanging_up.in_dialog(dialog, "BYE")
        ending = asyncio.create_task(hanging_up.send(bye, SIP_TIMEOUT))
        try:
            incoming_bye = await next_request(other, "BYE", invite.call_id)
        except TimeoutError:
            answered = (await ending).final if ending.done() and not ending.exception() else None
            ending.cancel()
            status = answered.status if answered is not None else "nothing"
            raise CallFailed(f"BYE never reached the other phone (answered {status})") from None
        await other.connection.send(other.answer(incoming_bye, 200, "OK"))
        ended = (await ending).final
        if ended is None or ended.status != 200:
            raise CallFailed(f"BYE answered {ended.status if ended else 'nothing'}")
        return counts


async def slot(
    first: Phone,
    second: Phone,
    hold: float,
    until: float,
    generator: Generator,
    client: redis.Redis,
    tally: Tally,
) -> None:
    """Calls between two phones, one after the other (turns calling), until ``until``;
    the last call runs its course (calls end at their own time, not all at once)."""
    loop = asyncio.get_running_loop()
    caller, callee = first, second
    while loop.time() < until:
        length = random.uniform(hold / 2, hold * 3 / 2)  # noqa: S311
        tally.attempts += 1
        tally.in_progress += 1
        tally.most_at_once = max(tally.most_at_once, tally.in_progress)
        try:
            counts = await Call(caller, callee, length, generator, client).run()
        except CallFailed as exc:
            tally.failures[str(exc)] += 1
            await asyncio.sleep(RETRY_AFTER)
        except (TimeoutError, ConnectionError, ValueError, RedisError) as exc:
            tally.failures[f"{type(exc).__name__}: {exc}"[:80]] += 1
            await asyncio.sleep(RETRY_AFTER)
        else:
            tally.completed += 1
            tally.sent += sum(c.sent for c in counts)
            tally.received += sum(c.received for c in counts)
        finally:
            tally.in_progress -= 1
        caller, callee = callee, caller
        await asyncio.sleep(random.uniform(0, 1))  # noqa: S311
