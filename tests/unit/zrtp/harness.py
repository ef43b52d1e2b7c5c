"""Two ZRTP engines wired back to back, with a fake clock and a lossy, tamperable link."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from quietwire.protocols.zrtp.cache import MemoryZidCache
from quietwire.protocols.zrtp.engine import State, ZrtpEngine
from quietwire.protocols.zrtp.messages import message_type
from quietwire.protocols.zrtp.packet import HEADER_LENGTH
from quietwire.protocols.zrtp.session import EngineConfig, Failed, MultistreamSession, Secured

from tests.support.clock import FakeClock

#: Decides a packet's fate in flight: return it (maybe altered), or None to drop it.
Filter = Callable[[str, bytes], bytes | None]


def kind(packet: bytes) -> str:
    """The message type of a ZRTP packet, e.g. ``"Commit"``."""
    block = message_type(packet[HEADER_LENGTH:-4]) or b"?"
    return block.decode().strip()


@dataclass
class Endpoint:
    name: str
    engine: ZrtpEngine
    cache: MemoryZidCache
    config: EngineConfig


@dataclass
class Pair:
    alice: Endpoint
    bob: Endpoint
    clock: FakeClock
    wire: list[tuple[str, str]] = field(default_factory=list)

    def run(self, filter_: Filter | None = None, max_steps: int = 2000) -> None:
        """Exchange packets until both engines are done or nothing is left to do."""
        ends = (self.alice, self.bob)
        for _ in range(max_steps):
            moved = False
            for src, dst in ((self.alice, self.bob), (self.bob, self.alice)):
                out, src.engine.outbox = src.engine.outbox, []
                for packet in out:
                    moved = True
                    self.wire.append((src.name, kind(packet)))
                    delivered = filter_(src.name, packet) if filter_ else packet
                    if delivered is not None:
                        dst.engine.receive(delivered)
            if moved:
                continue
            if all(e.engine.state in (State.SECURE, State.FAILED) for e in ends):
                return
            deadlines = [t for e in ends if (t := e.engine.next_timer) is not None]
            if not deadlines:
                return
            self.clock.t = min(deadlines)
            for e in ends:
                e.engine.poll()
        raise AssertionError("ZRTP exchange did not settle")

    def secured(self) -> tuple[Secured, Secured]:
        a, b = self.alice.engine.events, self.bob.engine.events
        assert len(a) == 1 and isinstance(a[0], Secured), a
        assert len(b) == 1 and isinstance(b[0], Secured), b
        return a[0], b[0]

    def failures(self) -> list[Failed]:
        return [
            e for ep in (self.alice, self.bob) for e in ep.engine.events if isinstance(e, Failed)
        ]


def endpoint(
    name: str,
    clock: FakeClock,
    config: EngineConfig | None = None,
    cache: MemoryZidCache | None = None,
    session: MultistreamSession | None = None,
) -> Endpoint:
    config = config or EngineConfig(zid=os.urandom(12))
    cache = cache if cache is not None else MemoryZidCache()
    engine = ZrtpEngine(config, clock, int.from_bytes(os.urandom(4), "big"), cache, session)
    return Endpoint(name, engine, cache, config)


def pair(
    alice: EngineConfig | None = None,
    bob: EngineConfig | None = None,
    *,
    bind: bool = True,
) -> Pair:
    clock = FakeClock(1000.0)
    p = Pair(endpoint("alice", clock, alice), endpoint("bob", clock, bob), clock)
    if bind:
        p.alice.engine.set_peer_hello_hash(p.bob.engine.hello_hash)
        p.bob.engine.set_peer_hello_hash(p.alice.engine.hello_hash)
    return p


def call_again(previous: Pair, session_of: str | None = None) -> Pair:
    """A new call between the same two endpoints (same ZIDs and caches)."""
    clock = FakeClock(1000.0)
    a, b = previous.alice, previous.bob
    p = Pair(
        endpoint("alice", clock, a.config, a.cache),
        endpoint("bob", clock, b.config, b.cache),
        clock,
    )
    p.alice.engine.set_peer_hello_hash(p.bob.engine.hello_hash)
    p.bob.engine.set_peer_hello_hash(p.alice.engine.hello_hash)
    return p
