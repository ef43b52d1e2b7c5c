"""The Relay gRPC service: protobuf at the edge, the forwarding engine inside."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from quietwire.protocols.rtp.stun import IceCredentials
from quietwire.relay.latch import Channel
from quietwire.relay.legs import Event, LegSpec, RelayCall, Side
from quietwire.relay.ports import PoolExhausted
from quietwire.relay.sessions import Relay
from quietwire.rpc.relay.v1 import relay_pb2, relay_pb2_grpc
from quietwire.runtime.legmemory import from_carried

log = logging.getLogger(__name__)

WATCH_QUEUE = 10_000
#: RFC 8839 section 5.4: ice-ufrag and ice-pwd are at most 256 characters.
ICE_MAX = 256


def _leg_side(side: Side) -> relay_pb2.LegSide.ValueType:
    return relay_pb2.LegSide.ValueType(side)


def _side(value: int) -> Side:
    try:
        return Side(value)
    except ValueError:
        raise ValueError("leg side must be CALLER or CALLEE") from None


def _leg_spec(leg: relay_pb2.LegSpec) -> LegSpec:
    carried = from_carried(leg.carried) if leg.HasField("carried") else None
    return LegSpec(_side(leg.side), leg.rtcp_mux, leg.zrtp_hash, carried)


def _ice(ufrag: str, pwd: str) -> IceCredentials | None:
    if not ufrag and not pwd:
        return None
    if not (0 < len(ufrag) <= ICE_MAX and 0 < len(pwd) <= ICE_MAX):
        raise ValueError("ice_ufrag and ice_pwd go together, at most 256 characters each")
    return IceCredentials(ufrag, pwd)


class RelayServicer(relay_pb2_grpc.RelayServicer):
    def __init__(self, relay: Relay, relay_id: str, advertise: str) -> None:
        self.relay = relay
        self.relay_id = relay_id
        self.advertise = advertise
        #: When this relay process started: keyagreement tells a restart by it.
        self.started = time.time()
        #: Each subscriber's events, and whether each is a replay.
        self.watchers: set[asyncio.Queue[tuple[Event, bool]]] = set()

    def publish(self, event: Event) -> None:
        for queue in self.watchers:
            if queue.qsize() < WATCH_QUEUE:
                queue.put_nowait((event, False))

    def _legs(self, call: RelayCall) -> list[relay_pb2.Leg]:
        return [
            relay_pb2.Leg(
                side=_leg_side(leg.side),
                rtp=relay_pb2.Address(host=self.advertise, port=leg.pair.port),
                rtcp=relay_pb2.Address(
                    host=self.advertise, port=leg.pair.port + (0 if leg.rtcp_mux else 1)
                ),
            )
            for leg in call.legs.values()
        ]

    async def Allocate(
        self, request: relay_pb2.AllocateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> relay_pb2.AllocateResponse:
        if self.relay.draining:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "relay is draining")
        try:
            specs = [_leg_spec(leg) for leg in request.legs]
            call = await self.relay.allocate(request.call_id, specs)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except PoolExhausted:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "no free port pair")
        carried = sum(spec.carried is not None for spec in specs)
        log.info("call allocated", extra={"legs": len(request.legs), "carried": carried})
        return relay_pb2.AllocateResponse(relay_id=self.relay_id, legs=self._legs(call))

    async def Update(
        self, request: relay_pb2.UpdateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> relay_pb2.UpdateResponse:
        def address(value: relay_pb2.Address) -> tuple[str, int] | None:
            return (value.host, value.port) if value.host and value.port else None

        try:
            side = _side(request.side)
            ice = _ice(request.ice_ufrag, request.ice_pwd)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        found = self.relay.update(
            request.call_id,
            side,
            address(request.remote_rtp),
            address(request.remote_rtcp),
            request.zrtp_hash,
            ice,
        )
        if not found:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such call")
        return relay_pb2.UpdateResponse()

    async def Release(
        self, request: relay_pb2.ReleaseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> relay_pb2.ReleaseResponse:
        released = self.relay.release(request.call_id)
        log.info("call released", extra={"released": released})
        return relay_pb2.ReleaseResponse(released=released)

    async def Query(
        self, request: relay_pb2.QueryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> relay_pb2.QueryResponse:
        call = self.relay.calls.get(request.call_id)
        if call is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such call")
        self.relay.fold(call)
        return relay_pb2.QueryResponse(
            call_id=call.call_id,
            legs=[
                relay_pb2.LegStats(
                    side=_leg_side(leg.side),
                    latched=leg.latch.address(Channel.RTP) is not None,
                    packets_in=leg.stats.packets_in,
                    bytes_in=leg.stats.bytes_in,
                    packets_dropped=leg.stats.packets_dropped,
                    rtp_lost=leg.stats.rtp_lost,
                    zrtp_messages_seen=sorted(leg.stats.zrtp_seen),
                    zrtp_hello_hash=leg.stats.zrtp_hello_hash,
                )
                for leg in call.legs.values()
            ],
        )

    async def Drain(
        self, request: relay_pb2.DrainRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> relay_pb2.DrainResponse:
        self.relay.draining = True
        return relay_pb2.DrainResponse(active_calls=len(self.relay.calls))

    async def WatchEvents(
        self, request: relay_pb2.WatchEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[relay_pb2.MediaEvent]:
        queue: asyncio.Queue[tuple[Event, bool]] = asyncio.Queue()
        # The history first, then every event after it: no await in between, so
        # nothing falls in a gap or comes twice.
        for seen in self.relay.zrtp_history():
            queue.put_nowait((seen, True))
        self.watchers.add(queue)
        try:
            while True:
                event, replayed = await queue.get()
                yield relay_pb2.MediaEvent(
                    call_id=event.call_id,
                    side=_leg_side(event.side),
                    kind=relay_pb2.MediaEvent.Kind.ValueType(event.kind),
                    zrtp_message=event.zrtp_message,
                    zrtp_hello_hash=event.zrtp_hello_hash,
                    at_unix=event.at,
                    replayed=replayed,
                )
        finally:
            self.watchers.discard(queue)

    async def ListSessions(
        self, request: relay_pb2.ListSessionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> relay_pb2.ListSessionsResponse:
        now = self.relay.clock.now()
        return relay_pb2.ListSessionsResponse(
            relay_id=self.relay_id,
            started_unix=self.started,
            sessions=[
                relay_pb2.Session(call_id=call.call_id, age_seconds=max(0.0, now - call.allocated))
                for call in self.relay.calls.values()
            ],
        )
