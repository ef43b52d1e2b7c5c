"""The soak's media: a real ZRTP handshake per call, replayed through the relay,
then SRTP-shaped packets from the C generator (``bench/soakload.c``).

Each call's two ZRTP engines (ours, ``bench.zrtp.Ours``) run their whole
handshake in memory first (~1 ms of CPU with X25519); the packets each side
produced are then sent, in order, from that side's socket to its leg of the
relay. So the relay sees exactly what two phones would show it: each Hello
hashing to the ``a=zrtp-hash`` its side signaled (RFC 6189 section 8.1), the
Commit, DHParts, Confirms and the Conf2ACK (section 4.6); keyagreement marks
the call zrtp-verified. What follows is media the relay, keyless, cannot tell
from SRTP.
"""

from __future__ import annotations

import array
import asyncio
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from quietwire.relay.latch import hello_hash

from bench import zrtp as bench_zrtp
from bench.zrtp import Clock, Ours

HERE = Path(__file__).resolve().parent
#: Seconds between two replayed handshake packets (the relay forwards each in turn).
REPLAY_GAP = 0.002


@dataclass(frozen=True)
class Handshake:
    """One finished ZRTP handshake: (caller's?, packet) in order, and each side's
    ``a=zrtp-hash`` value."""

    packets: list[tuple[bool, bytes]]
    caller_hash: str
    callee_hash: str


def handshake() -> Handshake:
    """Two of our engines (X25519, RFC 6189 section 5.1.5) agree keys in memory."""
    packets: list[tuple[bool, bytes]] = []
    hashes: dict[bool, str] = {}

    def seen(is_caller: bool, packet: bytes) -> None:
        packets.append((is_caller, packet))
        found = hello_hash(packet)
        if found is not None:
            hashes.setdefault(is_caller, found)

    def engine(clock: Clock) -> Ours:
        return Ours(clock, b"X255", True)

    bench_zrtp.handshake(engine, engine, seen)
    return Handshake(packets, f"1.10 {hashes[True]}", f"1.10 {hashes[False]}")


async def replay(
    shake: Handshake,
    caller: socket.socket,
    callee: socket.socket,
    to_caller_leg: tuple[str, int],
    to_callee_leg: tuple[str, int],
) -> None:
    """Each side's handshake packets from its socket to its leg of the relay."""
    for is_caller, packet in shake.packets:
        sock, leg = (caller, to_caller_leg) if is_caller else (callee, to_callee_leg)
        sock.sendto(packet, leg)
        await asyncio.sleep(REPLAY_GAP)


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def build(work: Path) -> Path:
    binary = work / "soakload"
    subprocess.run(
        ["cc", "-O2", "-o", str(binary), str(HERE / "soakload.c")], check=True, capture_output=True
    )
    return binary


@dataclass(frozen=True)
class Counts:
    sent: int
    received: int


@dataclass(frozen=True)
class Gap:
    """A stream's reception since the last :meth:`Generator.gap`: the longest wait
    between two media packets and the time since the last one (seconds)."""

    longest: float
    since_last: float
    received: int


class Generator:
    """The running ``soakload``: streams added and removed as calls come and go."""

    def __init__(self, binary: Path) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.control = ours
        self.process = subprocess.Popen(
            [str(binary), str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
        )
        self._free = list(range(65535, -1, -1))
        theirs.close()
        self.control.setblocking(False)
        self._lock = asyncio.Lock()

    async def _ask(self, text: str, fds: list[int]) -> str:
        loop = asyncio.get_running_loop()
        async with self._lock:
            fds_array = array.array("i", fds)
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds_array)] if fds else []
            self.control.sendmsg([text.encode()], ancillary)
            reply = (await asyncio.wait_for(loop.sock_recv(self.control, 256), 10)).decode()
        if reply.startswith("error"):
            raise RuntimeError(f"soakload: {reply}")
        return reply

    async def add(self, sock: socket.socket, to: tuple[str, int]) -> int:
        """Send SRTP-shaped media from ``sock`` to ``to`` until :meth:`remove`."""
        stream = self._free.pop()
        await self._ask(f"add {stream} {to[0]} {to[1]}", [sock.fileno()])
        return stream

    async def remove(self, stream: int) -> Counts:
        reply = await self._ask(f"del {stream}", [])
        self._free.append(stream)
        _, sent, received = reply.split()
        return Counts(int(sent), int(received))

    async def to(self, stream: int, to: tuple[str, int]) -> None:
        """Send ``stream``'s media to ``to`` from now on (its call moved)."""
        await self._ask(f"to {stream} {to[0]} {to[1]}", [])

    async def gap(self, stream: int) -> Gap:
        """How ``stream`` received since the last call (then measured anew)."""
        _, longest, since, received = (await self._ask(f"gap {stream}", [])).split()
        return Gap(int(longest) / 1e6, int(since) / 1e6, int(received))

    def close(self) -> None:
        self.control.close()  # soakload exits when its channel closes
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
