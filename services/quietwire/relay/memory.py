"""The relay's leg memory writer: what its legs learn, to Redis, off the packet path.

The engine only takes note (:class:`LegMemoryWriter` is its
:class:`~quietwire.relay.sessions.MemorySink`): a call whose leg latched, saw a
new SSRC or ZRTP message type goes into a set of changed calls, capped; a
released call into a set of calls to forget. One task writes them in batches
(one pipeline per round, rounds at least :data:`ROUND_EVERY` apart), each
call as it is *when written*, so a burst of changes to one call (a ZRTP
handshake) costs a few writes; and renews the TTL of every memory this
relay holds every :data:`~quietwire.runtime.legmemory.REFRESH_EVERY` seconds.

SSRCs are noted on the full path, and on the socket fast path from the last
packet of each fold (about once a second); the kernel path shows none, so a
call it forwards carries the SSRCs seen before it settled.

Redis being away never touches forwarding: the round fails, is counted and
logged (once a minute), its calls go back into the sets (capped) and the task
tries again a second later. On shutdown nothing is forgotten: the calls still
on this relay may be moved after it is gone, and their memories expire by TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

import redis.asyncio as redis
from prometheus_client import Counter

from quietwire.protocols.clock import Clock, MonotonicClock
from quietwire.relay.legs import RelayCall
from quietwire.runtime import legmemory
from quietwire.runtime.errorlog import ErrorLog

#: Changed calls (and released calls) waiting to be written, at most: past it a
#: change is not written (counted) until the call changes again.
PENDING_CAP = 10_000
#: Calls written per round (one pipeline).
BATCH = 500
#: Seconds before a round that failed is tried again.
RETRY_AFTER = 1.0
#: Seconds at least between two rounds: the changes of a ZRTP handshake (a
#: message type every few tens of ms) go in a few writes, not one each.
ROUND_EVERY = 0.1

MEMORY_WRITES = Counter(
    "quietwire_relay_leg_memory_writes", "Calls whose leg memory was written to Redis"
)
MEMORY_SKIPPED = Counter(
    "quietwire_relay_leg_memory_skipped",
    "Leg memory changes not written: too many waiting (Redis away or slow)",
)


class LegMemoryWriter:
    """``calls``: the engine's calls by stream id, read when a round writes."""

    def __init__(
        self,
        client: redis.Redis,
        relay_id: str,
        calls: Mapping[str, RelayCall],
        errors: ErrorLog,
        *,
        cap: int = PENDING_CAP,
        refresh_every: float = legmemory.REFRESH_EVERY,
        clock: Clock | None = None,
    ) -> None:
        self.redis, self.relay_id, self.calls, self.errors = client, relay_id, calls, errors
        self.cap, self.refresh_every = cap, refresh_every
        self.clock = clock or MonotonicClock()
        self._changed: dict[str, None] = {}
        self._released: dict[str, None] = {}
        #: Calls whose memory this relay wrote or is writing (their TTL is renewed,
        #: and they are forgotten when released).
        self._held: set[str] = set()
        self._wake = asyncio.Event()

    @property
    def pending(self) -> int:
        return len(self._changed) + len(self._released)

    def changed(self, call: RelayCall) -> None:
        self._note(self._changed, call.call_id)

    def released(self, call_id: str) -> None:
        self._changed.pop(call_id, None)
        if call_id in self._held:
            self._held.discard(call_id)
            self._note(self._released, call_id)

    def _note(self, into: dict[str, None], call_id: str) -> None:
        if call_id in into:
            return
        if self.pending >= self.cap:
            MEMORY_SKIPPED.inc()
            return
        into[call_id] = None
        self._wake.set()

    async def run(self) -> None:
        """Write what changed, as it changes; renew the TTLs; until cancelled."""
        refresh_at = self.clock.now() + self.refresh_every
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, refresh_at - self.clock.now())):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.write_round()
                if self.clock.now() >= refresh_at:
                    await legmemory.refresh(self.redis, sorted(self._held))
                    refresh_at = self.clock.now() + self.refresh_every
            except Exception as exc:  # Redis away: counted, logged once a minute, tried again
                self.errors.record("leg memory", exc)
                await asyncio.sleep(RETRY_AFTER)
                self._wake.set()
            await asyncio.sleep(ROUND_EVERY)

    async def write_round(self) -> None:
        """One pipeline: up to BATCH changed calls written as they are now, and the
        released ones forgotten. On failure they wait for the next round."""
        changed = list(self._changed)[:BATCH]
        released = list(self._released)[: BATCH - len(changed)]
        if not changed and not released:
            return
        for call_id in changed:
            del self._changed[call_id]
        for call_id in released:
            del self._released[call_id]
        written = []
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for call_id in changed:
                    call = self.calls.get(call_id)
                    if call is not None:
                        memory = {side: leg.memory() for side, leg in call.legs.items()}
                        legmemory.write(pipe, call_id, self.relay_id, memory)
                        written.append(call_id)
                        self._held.add(call_id)
                for call_id in released:
                    legmemory.erase(pipe, call_id, self.relay_id)
                await pipe.execute()
        except BaseException:
            for call_id in written:
                if call_id in self.calls:
                    self._note(self._changed, call_id)
            for call_id in released:
                self._note(self._released, call_id)
            raise
        MEMORY_WRITES.inc(len(written))
        if self.pending:
            self._wake.set()
