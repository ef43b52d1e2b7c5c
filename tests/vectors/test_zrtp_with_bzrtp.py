"""Full ZRTP handshakes between our engine and bzrtp (Linphone's ZRTP library),
in process: same SAS, matching SRTP keys, for every key agreement both offer."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from quietwire.protocols.zrtp.algorithms import Offer
from quietwire.protocols.zrtp.cache import MemoryZidCache
from quietwire.protocols.zrtp.engine import State, ZrtpEngine
from quietwire.protocols.zrtp.session import EngineConfig, Secured

from tests.support.clock import FakeClock
from tests.vectors import bzrtp_peer

if bzrtp_peer.lib is None:
    pytest.skip("libbzrtp not installed (Debian package libbzrtp0)", allow_module_level=True)


@pytest.fixture
def peer_factory() -> Iterator[list[bzrtp_peer.BzrtpPeer]]:
    made: list[bzrtp_peer.BzrtpPeer] = []
    yield made
    for peer in made:
        peer.close()


def handshake(
    ours: ZrtpEngine, theirs: bzrtp_peer.BzrtpPeer, clock: FakeClock, steps: int = 3000
) -> None:
    for _ in range(steps):
        moved = False
        out, ours.outbox = ours.outbox, []
        for packet in out:
            moved = True
            theirs.receive(packet)
        out, theirs.outbox = theirs.outbox, []
        for packet in out:
            moved = True
            ours.receive(packet)
        if moved:
            continue
        if ours.state in (State.SECURE, State.FAILED) and theirs.sas is not None:
            return
        clock.t += 0.01
        ours.poll()
        theirs.iterate(int(clock.t * 1000))
    raise AssertionError(f"no settlement: ours {ours.state}, bzrtp status {theirs.status[-3:]}")


# Debian's bzrtp 5.1.64 is built without EC25/EC38 (its Hello drops them).
CASES = [
    ("DH3k", "S256", "B32 "),
    ("DH2k", "S256", "B32 "),
    ("X255", "S256", "B32 "),
    ("X255", "S384", "B256"),
    ("DH3k", "S384", "B256"),
]


@pytest.mark.parametrize(("ka", "hash_", "sas"), CASES)
@pytest.mark.parametrize("we_commit", [True, False], ids=["contention", "bzrtp-initiates"])
def test_handshake_with_bzrtp(
    peer_factory: list[bzrtp_peer.BzrtpPeer], ka: str, hash_: str, sas: str, we_commit: bool
) -> None:
    clock = FakeClock(1000.0)
    algorithms = {
        "hash": [hash_.encode()],
        "cipher": [b"AES1"],
        "auth": [b"HS32", b"HS80"],
        "key_agreement": [ka.encode(), b"Mult"],
        "sas": [sas.encode()],
    }
    theirs = bzrtp_peer.BzrtpPeer(0x12345678, algorithms)
    peer_factory.append(theirs)
    offer = Offer(
        (hash_.encode(),), (b"AES1",), (b"HS80", b"HS32"), (ka.encode(), b"Mult"), (sas.encode(),)
    )
    ours = ZrtpEngine(
        EngineConfig(zid=os.urandom(12), offer=offer, initiate=we_commit),
        clock,
        0x87654321,
        MemoryZidCache(),
    )
    ours.set_peer_hello_hash(theirs.hello_hash)
    assert theirs.set_peer_hello_hash(ours.hello_hash) == 0
    ours.start()
    theirs.start()
    handshake(ours, theirs, clock)

    (event,) = ours.events
    assert isinstance(event, Secured), event
    assert event.suite.key_agreement.name == ka
    assert theirs.sas.replace(":", " ") == event.sas
    assert ours.srtp is not None
    assert ours.srtp.send_key == theirs.receive_key
    assert ours.srtp.send_salt == theirs.receive_salt
    assert ours.srtp.receive_key == theirs.send_key
