"""`make bench`, ZRTP part: CPU and time per handshake, our engine against bzrtp.

bzrtp is the ZRTP library inside Linphone (Debian's libbzrtp0, through
ctypes). Each pair runs whole handshakes (Hello to Conf2ACK, both sides) in
one process with packets handed over in memory, so what is measured is the
engines' work, not the network: ours<->ours, ours<->bzrtp and
bzrtp<->bzrtp (the anchor), per key agreement. Medians over repeated runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from quietwire.protocols.zrtp.algorithms import Offer
from quietwire.protocols.zrtp.cache import MemoryZidCache
from quietwire.protocols.zrtp.engine import State, ZrtpEngine
from quietwire.protocols.zrtp.session import EngineConfig


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t


class Side(Protocol):
    outbox: list[bytes]

    def receive(self, packet: bytes) -> None: ...

    def tick(self, now: float) -> None: ...

    @property
    def done(self) -> bool: ...


class Ours:
    def __init__(self, clock: Clock, ka: bytes, initiate: bool) -> None:
        offer = Offer((b"S256",), (b"AES1",), (b"HS80", b"HS32"), (ka, b"Mult"), (b"B32 ",))
        self.engine = ZrtpEngine(
            EngineConfig(zid=os.urandom(12), offer=offer, initiate=initiate),
            clock,
            int.from_bytes(os.urandom(4), "big"),
            MemoryZidCache(),
        )
        self.engine.start()

    @property
    def outbox(self) -> list[bytes]:
        return self.engine.outbox

    @outbox.setter
    def outbox(self, value: list[bytes]) -> None:
        self.engine.outbox = value

    def receive(self, packet: bytes) -> None:
        self.engine.receive(packet)

    def tick(self, now: float) -> None:
        self.engine.poll()

    @property
    def done(self) -> bool:
        return self.engine.state in (State.SECURE, State.FAILED)


class Theirs:
    def __init__(self, clock: Clock, ka: bytes, initiate: bool) -> None:
        from tests.vectors import bzrtp_peer

        algorithms = {
            "hash": [b"S256"],
            "cipher": [b"AES1"],
            "auth": [b"HS32", b"HS80"],
            "key_agreement": [ka, b"Mult"],
            "sas": [b"B32 "],
        }
        self.peer = bzrtp_peer.BzrtpPeer(int.from_bytes(os.urandom(4), "big"), algorithms)
        self.peer.start()
        self.outbox = self.peer.outbox

    def receive(self, packet: bytes) -> None:
        self.peer.receive(packet)

    def tick(self, now: float) -> None:
        self.peer.iterate(int(now * 1000))

    @property
    def done(self) -> bool:
        return self.peer.sas is not None

    def close(self) -> None:
        self.peer.close()


def handshake(
    make_a: Callable[[Clock], Side],
    make_b: Callable[[Clock], Side],
    seen: Callable[[bool, bytes], None] | None = None,
) -> float:
    """One handshake; returns the CPU seconds it took (both sides, this process).

    ``seen`` is told each packet in the order it went (True: ``make_a``'s side sent it).
    """
    clock = Clock()
    started = time.process_time()
    a, b = make_a(clock), make_b(clock)
    for _ in range(5000):
        moved = False
        for from_a, src, dst in ((True, a, b), (False, b, a)):
            out = list(src.outbox)
            src.outbox.clear()
            for packet in out:
                moved = True
                if seen is not None:
                    seen(from_a, packet)
                dst.receive(packet)
        if not moved:
            if a.done and b.done:
                break
            clock.t += 0.01
            a.tick(clock.t)
            b.tick(clock.t)
    else:
        raise RuntimeError("handshake did not finish")
    cpu = time.process_time() - started
    for side in (a, b):
        if isinstance(side, Theirs):
            side.close()
    return cpu


@dataclass
class Row:
    pair: str
    key_agreement: str
    cpu_ms: float


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    from tests.vectors import bzrtp_peer

    have_bzrtp = bzrtp_peer.lib is not None
    rows: list[Row] = []
    for ka in (b"DH3k", b"DH2k", b"X255", b"EC25"):
        pairs: dict[str, tuple[Callable[[Clock], Side], Callable[[Clock], Side]]] = {
            "ours<->ours": (lambda c, k=ka: Ours(c, k, True), lambda c, k=ka: Ours(c, k, True)),
        }
        if have_bzrtp and ka != b"EC25":  # Debian's bzrtp has no EC25
            pairs["ours<->bzrtp"] = (
                lambda c, k=ka: Ours(c, k, True),
                lambda c, k=ka: Theirs(c, k, True),
            )
            pairs["bzrtp<->bzrtp"] = (
                lambda c, k=ka: Theirs(c, k, True),
                lambda c, k=ka: Theirs(c, k, True),
            )
        for name, (make_a, make_b) in pairs.items():
            samples = [handshake(make_a, make_b) for _ in range(args.runs)]
            rows.append(Row(name, ka.decode(), statistics.median(samples) * 1000))
    print("zrtp: CPU per handshake (both ends, in process, median)")
    print(f"{'pair':14} {'key agreement':>13} {'CPU ms':>8}")
    for row in rows:
        print(f"{row.pair:14} {row.key_agreement:>13} {row.cpu_ms:8.2f}")
    anchor = {r.key_agreement: r.cpu_ms for r in rows if r.pair == "bzrtp<->bzrtp"}
    for row in rows:
        if row.pair == "ours<->ours" and row.key_agreement in anchor:
            print(f"ours/bzrtp {row.key_agreement}: {row.cpu_ms / anchor[row.key_agreement]:.2f}x")
    if not have_bzrtp:
        print("(libbzrtp0 not installed: no bzrtp anchor)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
