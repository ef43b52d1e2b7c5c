"""The ZRTP binding check (RFC 6189 section 8.1), from what the relays see.

Each relay streams its media events; for every call we compare the SHA-256 of
the Hello the relay saw on a leg with the ``a=zrtp-hash`` that side sent over
TLS. Both matching and a Conf2ACK seen: ``zrtp-verified``. A Hello that does
not match: ``zrtp-mismatch`` — a man in the middle on the media path — and
the call is ended. A call whose media timed out at the relay (a phone died)
is ended too, and so is one whose phones agreed to GoClear (RFC 6189 section
5.7: media in the clear) unless the policy allows plain media. When a relay
is lost — gone from the registry and its event stream broken — the calls it
carried are ended ("relay lost"): their media died with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import grpc
from prometheus_client import Counter

from quietwire.keyagreement.calls import CallStore, call_policy
from quietwire.keyagreement.planner import RelayClients
from quietwire.keyagreement.policy import Policy
from quietwire.rpc.keyagreement.v1 import keyagreement_pb2 as pb
from quietwire.rpc.relay.v1 import relay_pb2
from quietwire.runtime.registry import RelayRegistry

log = logging.getLogger(__name__)
DISCOVER_EVERY = 3.0
#: How many live calls a relay loss looks through for the ones it carried.
LOST_RELAY_SCAN = 100_000
OUTCOMES = Counter("quietwire_zrtp_outcomes", "Calls by ZRTP binding outcome", ["outcome"])
SIDES = {relay_pb2.LEG_SIDE_CALLER: "caller", relay_pb2.LEG_SIDE_CALLEE: "callee"}


#: Ends a call (the call id, why, the signaling replica of its INVITE or "");
#: True if a replica found it.
Terminate = Callable[[str, str, str], Awaitable[bool]]


class BindingChecker:
    def __init__(
        self,
        store: CallStore,
        registry: RelayRegistry,
        relays: RelayClients,
        terminate: Terminate,
        default_policy: Policy = Policy.SECURE_ONLY,
    ) -> None:
        self.store, self.registry, self.relays = store, registry, relays
        self.terminate, self.default_policy = terminate, default_policy
        self._streams: dict[str, asyncio.Task[None]] = {}
        #: Relays seen alive, by id: their gRPC address (to tell a lost one).
        self._known: dict[str, str] = {}

    def ensure(self, address: str) -> None:
        """Follow this relay's events (called before a call's media can flow through it)."""
        task = self._streams.get(address)
        if task is None or task.done():
            self._streams[address] = asyncio.create_task(self._follow(address))

    async def run(self) -> None:
        """Keep one event stream per alive relay; end the calls of lost ones."""
        while True:
            with contextlib.suppress(Exception):
                await self.discover()
            await asyncio.sleep(DISCOVER_EVERY)

    async def discover(self) -> None:
        alive = await self.registry.alive()
        for relay in alive:
            self.ensure(relay.grpc)
            self._known[relay.relay_id] = relay.grpc
        present = {relay.relay_id for relay in alive}
        for relay_id, address in list(self._known.items()):
            stream = self._streams.get(address)
            if relay_id in present or (stream is not None and not stream.done()):
                continue  # alive, or only late with its heartbeat while it still streams
            del self._known[relay_id]
            await self._relay_lost(relay_id)

    async def _relay_lost(self, relay_id: str) -> None:
        calls = [
            r
            for r in await self.store.live(LOST_RELAY_SCAN)
            if r.values.get("relay_id") == relay_id
        ]
        log.warning("relay lost", extra={"relay": relay_id, "calls": len(calls)})
        for record in calls:
            await self._end(record.call_id, "relay lost")

    async def close(self) -> None:
        for task in self._streams.values():
            task.cancel()
        await asyncio.gather(*self._streams.values(), return_exceptions=True)

    async def _follow(self, address: str) -> None:
        stub = self.relays.stub(address)
        try:
            async for event in stub.WatchEvents(relay_pb2.WatchEventsRequest()):
                await self.observe(event)
        except grpc.aio.AioRpcError as exc:
            log.info("relay event stream ended", extra={"code": exc.code().name})

    async def observe(self, event: relay_pb2.MediaEvent) -> None:
        call_id = event.call_id.rsplit("#", 1)[0]
        if event.kind == relay_pb2.MediaEvent.KIND_MEDIA_TIMEOUT:
            await self._end(call_id, "media timeout")
            return
        if event.kind == relay_pb2.MediaEvent.KIND_LEG_STATS:
            await self.store.touch(call_id)  # media still flows: keep the record
            return
        if event.kind != relay_pb2.MediaEvent.KIND_ZRTP_MESSAGE:
            return
        record = await self.store.get(call_id)
        if record is None or record.state in (
            pb.ZRTP_STATE_BINDING_MISMATCH,
            pb.ZRTP_STATE_SECURED,
        ):
            return
        side = SIDES.get(event.side, "")
        fields: dict[str, str | int | float] = {}
        if event.zrtp_message == "Hello" and side:
            signaled = record.values.get(f"hash_{side}", "").split()[-1:]
            if signaled and signaled[0].lower() != event.zrtp_hello_hash:
                OUTCOMES.labels("zrtp-mismatch").inc()
                fields.update(
                    state=int(pb.ZRTP_STATE_BINDING_MISMATCH),
                    detail=f"the {side}'s ZRTP Hello does not match its a=zrtp-hash"
                    " (man in the middle on the media path?)",
                )
                await self.store.put(call_id, fields)
                await self._end(call_id, "zrtp-mismatch")
                return
            fields[f"seen_{side}"] = 1
            fields["state"] = int(pb.ZRTP_STATE_HANDSHAKING)
        elif event.zrtp_message == "Conf2ACK":
            fields["conf2ack"] = 1
        elif event.zrtp_message == "Error":
            OUTCOMES.labels("zrtp-failed").inc()
            fields.update(state=int(pb.ZRTP_STATE_FAILED), detail="ZRTP Error on the media path")
        elif event.zrtp_message == "GoClear":
            fields.update(state=int(pb.ZRTP_STATE_CLEAR), detail="GoClear: media no longer secret")
            if call_policy(record, self.default_policy) is not Policy.ALLOW_PLAIN:
                await self.store.put(call_id, fields)
                await self._end(call_id, "GoClear refused by policy")
                return
        values = {**record.values, **{k: str(v) for k, v in fields.items()}}
        if (
            values.get("seen_caller") == "1"
            and values.get("seen_callee") == "1"
            and values.get("conf2ack") == "1"
        ):
            OUTCOMES.labels("zrtp-verified").inc()
            fields.update(
                state=int(pb.ZRTP_STATE_SECURED), secured_at=time.time(), detail="zrtp-verified"
            )
        if fields:
            await self.store.put(call_id, fields)

    async def _end(self, call_id: str, reason: str) -> None:
        """End the call once (every leg of a dead call reports its timeout)."""
        record = await self.store.get(call_id)
        if record is None or record.values.get("terminated"):
            return
        await self.store.put(call_id, {"terminated": reason})
        await self.terminate(call_id, reason, record.values.get("replica", ""))
