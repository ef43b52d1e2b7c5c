"""`python -m bench.migration`: calls moved between relays (issue 15), measured.

A real `quietwire up --relays 2`; ``--calls`` secure calls (default 500)
between ``--pairs`` pairs of our SIP user agents over TLS, each call with a real
ZRTP handshake replayed through its relay, then 50 SRTP-shaped packets a
second each way from the C generator (``bench/soakload.c``), as the soak does
(``bench/soak_media.py``). The phones take the platform's re-INVITEs like a
phone would: answer 200 with their SDP and send to the new relay from then on.

1. **SIGKILL**: ``relay-2`` is killed; its calls (about half) move to ``relay``.
   Per call, the longest wait between two media packets a phone received
   (each direction): detection of the loss plus the move.
2. **Drain**: ``quietwire drain-relay --migrate`` on ``relay``, which now
   carries every call: the time until it holds none, and the longest wait per
   call as in 1.

A call is lost when the platform hung it up (BYE) or when one of its phones
received nothing for the last second of the measurement. The report also
counts the calls still ``zrtp-verified`` after both moves (their binding state
moved with them). Exit status 1 when a call was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as redis
from quietwire.keyagreement.calls import CALL_KEY
from quietwire.keyagreement.outcome import Outcome
from quietwire.phone.audio import PCMU
from quietwire.phone.connection import SipConnection
from quietwire.phone.sdp import describe, remote_of
from quietwire.phone.useragent import UserAgent
from quietwire.protocols.sip.message import Request
from quietwire.runtime.redisclient import text

from bench.soak import add_users, async_redis, platform_settings, tools_missing
from bench.soak_media import Gap, Generator, Handshake, build, handshake, replay, udp_socket
from tests.conftest import Platform, running_platform

DOMAIN = "127.0.0.1"
SDP = "application/sdp"
#: Calls set up at once.
SETUP_BATCH = 20
#: Seconds a SIP exchange may take on a loaded machine.
SIP_TIMEOUT = 30.0
#: Seconds every call gets to move off a relay before the measurement stops.
MOVE_TIMEOUT = 120.0
#: Seconds between looks at the call records while calls move (each look reads
#: every moving call's record: more often would load the phones' own process).
POLL = 0.25
#: Seconds of media measured after the last call moved.
SETTLE = 3.0
#: A direction that received nothing for this long at the end is dead.
DEAD_AFTER = 1.0


@dataclass
class Leg:
    """One phone's side of a call: its socket, its generator stream, its hash."""

    sock: socket.socket
    zrtp_hash: str
    stream: int = -1
    #: The Reason of the platform's BYE ("" while the call is up).
    ended: str = ""
    moves: int = 0

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])


@dataclass
class BenchCall:
    call_id: str
    caller: Leg
    callee: Leg

    @property
    def legs(self) -> tuple[Leg, Leg]:
        return self.caller, self.callee


class BenchPhone:
    """A user agent holding many calls: answers the platform's moves (re-INVITE →
    200 with its SDP, media sent to the new relay), BYEs and anything else."""

    def __init__(self, ua: UserAgent, generator: Generator) -> None:
        self.ua, self.generator = ua, generator
        self.legs: dict[str, Leg] = {}
        self._invites: dict[str, asyncio.Future[Request]] = {}
        self._task = asyncio.create_task(self._dispatch())

    def expect(self, call_id: str) -> asyncio.Future[Request]:
        """The initial INVITE of ``call_id``, once it arrives."""
        future: asyncio.Future[Request] = asyncio.get_running_loop().create_future()
        self._invites[call_id] = future
        return future

    async def _dispatch(self) -> None:
        while True:
            request = await self.ua.requests.get()
            try:
                await self._take(request)
            except (ConnectionError, ValueError) as exc:
                print(f"{self.ua.user}: {request.method} not handled: {exc}", file=sys.stderr)

    async def _take(self, request: Request) -> None:
        leg = self.legs.get(request.call_id)
        if request.method == "ACK":
            return
        if request.method == "INVITE" and request.call_id in self._invites:
            self._invites.pop(request.call_id).set_result(request)
        elif request.method == "INVITE" and leg is not None:
            await self._moved(request, leg)
        elif request.method == "BYE":
            await self.ua.connection.send(self.ua.answer(request, 200, "OK"))
            if leg is not None:
                leg.ended = request.headers.get("Reason") or "BYE"
        else:
            await self.ua.connection.send(self.ua.answer(request, 481, "No Such Call"))

    async def _moved(self, request: Request, leg: Leg) -> None:
        """The platform points this call at another relay: send there from now on."""
        remote = remote_of(request.body, (PCMU,))
        # Like a phone: it sends to the new relay from when it accepts, so the old
        # relay (released once both accepted) gets nothing more from it.
        await self.generator.to(leg.stream, (remote.address, remote.port))
        leg.moves += 1
        answer = describe(DOMAIN, leg.port, leg.zrtp_hash, (PCMU,))
        await self.ua.connection.send(self.ua.answer(request, 200, "OK", body=answer))

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.ua.close()


async def set_up(caller: BenchPhone, callee: BenchPhone, generator: Generator) -> BenchCall:
    """INVITE, 200, ACK; the ZRTP handshake replayed through the relay; then media."""
    shake: Handshake = handshake()
    legs = Leg(udp_socket(), shake.caller_hash), Leg(udp_socket(), shake.callee_hash)
    a, b = caller.ua, callee.ua
    offer = describe(DOMAIN, legs[0].port, legs[0].zrtp_hash, (PCMU,))
    invite = a.build("INVITE", f"sip:{b.user}@{DOMAIN}", body=offer, content_type=SDP)
    arriving = callee.expect(invite.call_id)
    sending = asyncio.create_task(a.send(invite, SIP_TIMEOUT))
    incoming = await asyncio.wait_for(arriving, SIP_TIMEOUT)
    ok = b.answer(
        incoming, 200, "OK", body=describe(DOMAIN, legs[1].port, legs[1].zrtp_hash, (PCMU,))
    )
    ok.headers.set("Record-Route", ", ".join(incoming.headers.get_all("Record-Route")))
    await b.connection.send(ok)
    final = (await sending).final
    if final is None or final.status != 200:
        raise RuntimeError(f"INVITE answered {final.status if final else 'nothing'}")
    dialog = a.dialog_from_response(invite, final)
    await a.connection.send(a.in_dialog(dialog, "ACK", cseq=final.cseq.number))
    to_caller, to_callee = remote_of(final.body, (PCMU,)), remote_of(incoming.body, (PCMU,))
    targets = (to_caller.address, to_caller.port), (to_callee.address, to_callee.port)
    call = BenchCall(invite.call_id, *legs)
    caller.legs[call.call_id], callee.legs[call.call_id] = legs
    await replay(shake, legs[0].sock, legs[1].sock, *targets)
    for leg, target in zip(legs, targets, strict=True):
        leg.stream = await generator.add(leg.sock, target)
    return call


@dataclass
class Phase:
    """One event's measurement over the calls it moved."""

    name: str
    calls: int = 0
    #: Per call: the longest wait between two packets either phone received (s).
    gaps: list[float] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    #: Seconds from the event until no call record named the relay.
    seconds: float = 0.0
    #: The drain: seconds until ``quietwire drain-relay --migrate`` exited 0 (-1: failed).
    command: float = 0.0

    def report(self) -> str:
        if not self.gaps:
            return f"{self.name}: {self.calls} calls, none measured"
        gaps = sorted(self.gaps)
        p95 = gaps[min(len(gaps) - 1, int(len(gaps) * 0.95))]
        command = f" (the command exited after {self.command:.2f} s)" if self.command else ""
        return (
            f"{self.name}: {self.calls} calls moved in {self.seconds:.2f} s{command}; audio gap"
            f" per call median {statistics.median(gaps) * 1000:.0f} ms, p95"
            f" {p95 * 1000:.0f} ms, max {gaps[-1] * 1000:.0f} ms; lost {len(self.lost)}"
        )


async def recorded(client: redis.Redis, calls: list[BenchCall], name: str) -> dict[str, str]:
    """One field of each call's record (``relay_id``, ``outcome``...), by call id."""
    async with client.pipeline(transaction=False) as pipe:
        for call in calls:
            pipe.hget(CALL_KEY.format(call_id=call.call_id), name)
        found = await pipe.execute()
    return {c.call_id: text(v) if v else "" for c, v in zip(calls, found, strict=True)}


async def measure(
    phase: Phase,
    calls: list[BenchCall],
    generator: Generator,
    client: redis.Redis,
    source: str,
    event: Awaitable[float],
) -> Phase:
    """Reset every stream's gap, let ``event`` happen (it gives its start time), wait
    until no call names ``source``, then SETTLE seconds more, and read the gaps."""
    moving = [c for c, r in (await recorded(client, calls, "relay_id")).items() if r == source]
    mine = [c for c in calls if c.call_id in moving]
    phase.calls = len(mine)
    for call in mine:
        for leg in call.legs:
            await generator.gap(leg.stream)
    started = await event
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MOVE_TIMEOUT
    while loop.time() < deadline:
        left = [c for c, r in (await recorded(client, mine, "relay_id")).items() if r == source]
        if not left:
            break
        await asyncio.sleep(POLL)
    phase.seconds = time.monotonic() - started
    await asyncio.sleep(SETTLE)
    for call in mine:
        gaps: list[Gap] = [await generator.gap(leg.stream) for leg in call.legs]
        ended = next((leg.ended for leg in call.legs if leg.ended), "")
        if ended or any(g.since_last > DEAD_AFTER or g.received == 0 for g in gaps):
            phase.lost.append(f"{call.call_id}: {ended or 'media stopped'}")
        else:
            phase.gaps.append(max(g.longest for g in gaps))
    return phase


async def sigkill(pid: int) -> float:
    started = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    return started


@dataclass
class Drain:
    """``quietwire drain-relay --migrate`` on one relay of ``platform``."""

    platform: Platform
    name: str
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0

    async def start(self) -> float:
        grpc = self.platform.status()["services"][self.name]["grpc"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("QW_")}
        env |= {"QW_GRPC_PORT": grpc.rsplit(":", 1)[1], "QW_METRICS_PORT": "0"}
        self.started = time.monotonic()
        self.process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "quietwire", "--config", str(self.platform.config)),
            *("drain-relay", "--migrate", "--timeout", str(MOVE_TIMEOUT)),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        return self.started

    async def finished(self) -> tuple[float, int, str]:
        """Seconds from its start to its exit, its exit status and what it printed."""
        assert self.process is not None
        said, _ = await asyncio.wait_for(self.process.communicate(), MOVE_TIMEOUT + 30)
        return time.monotonic() - self.started, self.process.returncode or 0, said.decode()


@dataclass
class Result:
    calls: int
    set_up: float
    phases: list[Phase]
    verified: int

    @property
    def lost(self) -> int:
        return sum(len(p.lost) for p in self.phases)

    def report(self) -> str:
        lines = [
            f"migration: {self.calls} calls (set up in {self.set_up:.0f} s), up --relays 2",
            *(p.report() for p in self.phases),
            f"zrtp-verified after the moves: {self.verified} of {self.calls}",
            *(f"  lost {lost}" for p in self.phases for lost in p.lost[:10]),
            "PASS" if not self.lost else f"FAIL: {self.lost} calls lost",
        ]
        return "\n".join(lines)


async def bench(platform: Platform, options: argparse.Namespace, work: Path) -> Result:
    users = list((await add_users(platform, 2 * options.pairs)).items())
    generator = Generator(build(work))
    client = async_redis(platform)
    phones: list[BenchPhone] = []
    calls: list[BenchCall] = []
    try:
        for user, password in users:
            connection = await SipConnection.open(DOMAIN, platform.sip_port, platform.ca)
            ua = UserAgent(connection, user, password, DOMAIN, platform.sip_port)
            phones.append(BenchPhone(ua, generator))
            if (await ua.register()).status != 200:
                raise RuntimeError(f"{user} not registered")
        started = time.monotonic()
        pairs = [(phones[2 * n], phones[2 * n + 1]) for n in range(options.pairs)]
        for first in range(0, options.calls, SETUP_BATCH):
            batch = range(first, min(options.calls, first + SETUP_BATCH))
            calls += await asyncio.gather(
                *(set_up(*pairs[n % len(pairs)], generator) for n in batch)
            )
        setup = time.monotonic() - started
        print(f"{len(calls)} calls up in {setup:.0f} s", flush=True)
        await asyncio.sleep(SETTLE)  # media flowing, bindings checked
        status = platform.status()["services"]
        killed = await measure(
            Phase("SIGKILL of relay-2"),
            calls,
            generator,
            client,
            status["relay-2"]["relay_id"],
            sigkill(status["relay-2"]["pid"]),
        )
        print(killed.report(), flush=True)
        drain = Drain(platform, "relay")
        drained = await measure(
            Phase("drain-relay --migrate of relay"),
            calls,
            generator,
            client,
            status["relay"]["relay_id"],
            drain.start(),
        )
        took, status_code, said = await drain.finished()
        print(said.strip(), flush=True)
        drained.command = took if status_code == 0 else -1.0
        print(drained.report(), flush=True)
        outcomes = (await recorded(client, calls, "outcome")).values()
        verified = sum(o == Outcome.SECURED.value for o in outcomes)
        return Result(len(calls), setup, [killed, drained], verified)
    finally:
        for call in calls:
            for leg in call.legs:
                with contextlib.suppress(Exception):
                    await generator.remove(leg.stream)
                leg.sock.close()
        for phone in phones:
            with contextlib.suppress(Exception):
                await phone.close()
        generator.close()
        await client.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--pairs", type=int, default=25, help="phone pairs carrying the calls")
    parser.add_argument("--log", type=Path, help="the services' log lines (default: dropped)")
    parser.add_argument("--log-level", default="warning", help="the services' QW_LOG_LEVEL")
    args = parser.parse_args()
    if tools_missing("bench.migration"):
        return 2
    with tempfile.TemporaryDirectory(prefix="qw-migration-") as tmp:
        work = Path(tmp)
        settings = platform_settings(args.calls, 2 * args.pairs, args.log_level)
        with (
            (args.log or work / "services.log").open("w") as log,
            running_platform(work, log, up_args=("--relays", "2"), **settings) as platform,
        ):
            result = asyncio.run(bench(platform, args, work))
    print(result.report())
    return 1 if result.lost else 0


if __name__ == "__main__":
    sys.exit(main())
