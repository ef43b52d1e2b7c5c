"""The ZRTP binding check (RFC 6189 section 8.1), from what the relays see.

Each relay streams its media events; for every call we compare the SHA-256 of
the Hello the relay saw on a leg with the ``a=zrtp-hash`` that side sent over
TLS. Both matching and a Conf2ACK seen: ``zrtp-verified``. A Hello that does
not match: ``zrtp-mismatch`` — a man in the middle on the media path — and
the call is ended. A call whose media timed out at the relay (a phone died)
is ended too, and so is one whose phones agreed to GoClear (RFC 6189 section
5.7: media in the clear) unless the policy allows plain media. When a relay
is lost — gone from the registry and its event stream broken, or its address
announced by another relay (one restarted in its place), or its event stream
broken and the relay not answering for LOST_AFTER seconds — its calls are handed
to the lost-relay path (:mod:`.migration`: moved to another relay, or ended
"relay lost" when none can take them: their media died with it).

Events are taken from the relay a call is on: after a call moved, what its old
relay still says of it (a late media timeout) is ignored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

import grpc
from prometheus_client import Counter

from quietwire.keyagreement.calls import CallRecord, CallStore
from quietwire.keyagreement.model import Relay, Side
from quietwire.keyagreement.outcome import Outcome, Seen, observe
from quietwire.keyagreement.planner import RelayClients
from quietwire.keyagreement.policy import Policy
from quietwire.rpc.relay.v1 import relay_pb2
from quietwire.runtime.aio import Tasks
from quietwire.runtime.context import call_context
from quietwire.runtime.errorlog import ErrorLog
from quietwire.runtime.registry import RelayRegistry
from quietwire.runtime.streams import parse_stream_id

log = logging.getLogger(__name__)
DISCOVER_EVERY = 3.0
#: After a relay's event stream broke: how often, and for how long, it is asked
#: whether it is still there before it is taken as lost (a SIGKILLed relay
#: refuses connections at once; a restarted one answers with another id).
PROBE_EVERY = 0.25
LOST_AFTER = 1.0
#: How many live calls a relay loss looks through for the ones it carried.
LOST_RELAY_SCAN = 100_000
OUTCOMES = Counter("quietwire_zrtp_outcomes", "Calls by ZRTP binding outcome", ["outcome"])
#: Outcomes counted in OUTCOMES when a call reaches them.
COUNTED = (Outcome.SECURED, Outcome.FAILED, Outcome.MISMATCH)
BAD_EVENTS = Counter(
    "quietwire_keyagreement_bad_relay_events", "Relay events that name no call stream"
)
SIDES = {relay_pb2.LEG_SIDE_CALLER: Side.CALLER, relay_pb2.LEG_SIDE_CALLEE: Side.CALLEE}


#: Ends a call (the call id, why, the signaling replica of its INVITE or "");
#: True if a replica found it.
Terminate = Callable[[str, str, str], Awaitable[bool]]
#: Takes the calls (ids) of a lost relay (its id): moves them, or ends them.
LostCalls = Callable[[str, Sequence[str]], Awaitable[None]]


class BindingChecker:
    def __init__(
        self,
        store: CallStore,
        registry: RelayRegistry,
        relays: RelayClients,
        terminate: Terminate,
    ) -> None:
        self.store, self.registry, self.relays = store, registry, relays
        self.terminate = terminate
        #: Where a lost relay's calls go (set when migration is on); None: ended.
        self.lost_calls: LostCalls | None = None
        self._streams: dict[str, asyncio.Task[None]] = {}
        self._losses = Tasks()
        #: Relays seen alive, by id: their gRPC address (to tell a lost one).
        self._known: dict[str, str] = {}
        #: Discovery errors: each counted, logged once a minute per kind.
        self.errors = ErrorLog(log)

    def follow(self, relay: Relay) -> None:
        """A call is being planned on ``relay``: follow its events, and end the call if
        the relay is lost, even if it dies before discovery ever saw it alive."""
        self._known.setdefault(relay.relay_id, relay.grpc)
        self.ensure(relay.grpc)

    def ensure(self, address: str) -> None:
        """Follow this relay's events (called before a call's media can flow through it)."""
        task = self._streams.get(address)
        if task is None or task.done():
            self._streams[address] = asyncio.create_task(self._follow(address))

    async def run(self) -> None:
        """Keep one event stream per alive relay; end the calls of lost ones."""
        while True:
            try:
                await self.discover()
            except Exception as exc:  # Redis or a relay down: try again next round
                self.errors.record("relay discovery", exc)
            await asyncio.sleep(DISCOVER_EVERY)

    async def discover(self) -> None:
        alive = await self.registry.alive()
        for relay in alive:
            self.ensure(relay.grpc)
            self._known[relay.relay_id] = relay.grpc
        present = {relay.relay_id for relay in alive}
        #: A stream to one of these follows the relay announcing it now, which
        #: may be a new one restarted on a lost one's address.
        announced = {relay.grpc for relay in alive}
        for relay_id, address in list(self._known.items()):
            stream = self._streams.get(address)
            streams = stream is not None and not stream.done() and address not in announced
            if relay_id in present or streams:
                continue  # alive, or only late with its heartbeat while it still streams
            del self._known[relay_id]
            await self._relay_lost(relay_id)

    async def relay_gone(self, relay_id: str) -> None:
        """A relay reconciliation found gone (it died while this process was away)."""
        await self._relay_lost(relay_id)

    async def _relay_lost(self, relay_id: str) -> None:
        calls = [
            r.call_id
            for r in await self.store.live(LOST_RELAY_SCAN)
            if r.plan is not None and r.plan.relay.relay_id == relay_id
        ]
        log.warning("relay lost", extra={"relay": relay_id, "calls": len(calls)})
        if self.lost_calls is not None:
            await self.lost_calls(relay_id, calls)
            return
        for call_id in calls:
            with call_context(call_id):
                await self.end_call(call_id, "relay lost")

    async def close(self) -> None:
        streams = list(self._streams.values())
        for stream in streams:
            stream.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
        await self._losses.cancel()

    async def _follow(self, address: str) -> None:
        stub = self.relays.stub(address)
        try:
            async for event in stub.WatchEvents(relay_pb2.WatchEventsRequest()):
                try:
                    await self.observe(event, address)
                except Exception as exc:  # Redis away: this event is lost, not the stream
                    self.errors.record("relay event", exc)
        except grpc.aio.AioRpcError as exc:
            log.info("relay event stream ended", extra={"code": exc.code().name})
            await self._check(address)

    async def _check(self, address: str) -> None:
        """The event stream of the relay at ``address`` broke: if it does not answer
        (or another relay answers there) within LOST_AFTER seconds, it is lost now,
        not when its registry entry expires."""
        known = {rid for rid, a in self._known.items() if a == address}
        if not known:
            return
        stub = self.relays.stub(address)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOST_AFTER
        while True:
            try:
                listed = await stub.ListSessions(
                    relay_pb2.ListSessionsRequest(), timeout=PROBE_EVERY * 2
                )
            except grpc.aio.AioRpcError:
                listed = None
            if listed is not None and listed.relay_id in known:
                return  # still there: its stream is followed again at the next discovery
            if listed is not None or loop.time() >= deadline:
                break
            await asyncio.sleep(PROBE_EVERY)
        for relay_id in known:
            if self._known.get(relay_id) == address:
                del self._known[relay_id]
                # Apart: moving its calls takes seconds; a relay restarted on this
                # address is followed meanwhile.
                self._losses.spawn(self._guarded_lost(relay_id))

    async def _guarded_lost(self, relay_id: str) -> None:
        try:
            await self._relay_lost(relay_id)
        except Exception as exc:  # Redis away: the registry's expiry hands it over again
            self.errors.record("relay lost", exc)

    async def observe(self, event: relay_pb2.MediaEvent, address: str = "") -> None:
        """An event of the relay at gRPC ``address`` ("": whichever carries the call)."""
        try:
            call_id, _ = parse_stream_id(event.call_id)
        except ValueError:
            BAD_EVENTS.inc()
            return
        with call_context(call_id):  # its lines and the TerminateCall it may send
            await self._observe(call_id, event, address)

    async def _observe(self, call_id: str, event: relay_pb2.MediaEvent, address: str) -> None:
        if event.kind == relay_pb2.MediaEvent.KIND_MEDIA_TIMEOUT:
            record = await self.store.get(call_id)
            if record is not None and not carries(record, address):
                log.info("media timeout of a relay the call left: ignored")
                return
            await self.end_call(call_id, "media timeout")
            return
        if event.kind == relay_pb2.MediaEvent.KIND_LEG_STATS:
            await self.store.touch(call_id)  # media still flows: keep the record
            return
        if event.kind != relay_pb2.MediaEvent.KIND_ZRTP_MESSAGE:
            return
        seen = Seen(event.zrtp_message, SIDES.get(event.side), event.zrtp_hello_hash)
        now = time.time()

        moved: set[Outcome] = set()  # the outcome this event moved the call to, if it did

        def step(record: CallRecord) -> CallRecord | None:
            if not carries(record, address):
                return None  # the call moved to another relay
            signaled = record.signaled(seen.side) if seen.side is not None else ""
            binding = observe(record.binding, seen, signaled, now)
            moved.clear()
            if binding.outcome is not record.binding.outcome:
                moved.add(binding.outcome)
            return None if binding == record.binding else replace(record, binding=binding)

        record = await self.store.change(call_id, step)
        if record is None or not moved:
            return
        outcome = record.binding.outcome
        log.info("zrtp outcome", extra={"outcome": outcome.value, "detail": record.binding.detail})
        if outcome in COUNTED:
            OUTCOMES.labels(outcome.value).inc()
        if outcome is Outcome.MISMATCH:
            await self.end_call(call_id, "zrtp-mismatch")
        elif outcome is Outcome.CLEAR and record.policy is not Policy.ALLOW_PLAIN:
            await self.end_call(call_id, "GoClear refused by policy")

    async def end_call(self, call_id: str, reason: str) -> None:
        """End the call once (every leg of a dead call reports its timeout; every
        keyagreement replica sees every event): the one that marks it asks signaling."""
        record = await self.store.change(
            call_id, lambda r: None if r.terminated else replace(r, terminated=reason)
        )
        if record is not None:
            await self.terminate(call_id, reason, record.replica)


def carries(record: CallRecord, address: str) -> bool:
    """Whether the relay at gRPC ``address`` carries the call now ("": any does)."""
    return not address or record.plan is None or record.plan.relay.grpc == address
