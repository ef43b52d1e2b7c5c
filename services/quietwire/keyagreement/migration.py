"""Moving a call's media from one relay to another (issue 15), driven by keyagreement.

The keys of a ZRTP call never lived on a relay, so its media can change relay
under the phones' feet: relay B allocates the same stream layout with each
leg *carried* (where relay A had latched the phone and the SSRCs it saw, from
the leg memory A kept in Redis, :mod:`quietwire.runtime.legmemory`), so B
takes the phones' ongoing SRTP without a new ZRTP Hello; signaling re-INVITEs
both phones toward B (:mod:`.moves`); B learns each phone's answer; the call
record then names B — its binding state (``zrtp-verified``) stays — and A's
sessions are released.

A call that cannot move stays where it is while its relay lives. It is ended
with a Reason only when it cannot go on: its relay is lost (``relay lost``,
with why it could not move), or one phone took the move and the other did not
(they would send to different relays). One migration per call at a time (a
Redis lock); a relay's calls move a few dozen at once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import grpc
import redis.asyncio as redis
from prometheus_client import Counter, Histogram

from quietwire.keyagreement.calls import CallRecord, CallStore
from quietwire.keyagreement.model import (
    Endpoint,
    Media,
    PlanningError,
    Relay,
    Side,
    StreamPlan,
)
from quietwire.keyagreement.moves import CallMover, MoveAnswer, MoveOutcome
from quietwire.keyagreement.planner import (
    RELAY_ATTEMPTS,
    RELAY_TIMEOUT,
    LeastLoaded,
    Planner,
    RelaySelector,
    stream_plan,
)
from quietwire.keyagreement.reconcile import RELAY_LOST
from quietwire.rpc.relay.v1 import relay_pb2
from quietwire.runtime import legmemory
from quietwire.runtime.context import call_context
from quietwire.runtime.registry import RelayEntry, RelayRegistry
from quietwire.runtime.streams import stream_id

log = logging.getLogger(__name__)

#: String per call being migrated: the migrating replica's token. TTL: LOCK_TTL
#: (a keyagreement that dies mid-move frees it by itself).
LOCK_KEY = "qw:migrating:{{{call_id}}}"
LOCK_TTL = 60
#: KEYS[1]: the lock; ARGV[1]: the token that took it. Deleted only by its taker.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
#: Times a lost relay's call is offered to its phones when they do not answer (a
#: loaded phone or signaling): without the move the call has no media anyway.
LOST_TRIES = 2
UNANSWERED = (MoveOutcome.NO_ANSWER, MoveOutcome.NO_SIGNALING)
#: Calls of one relay moved at once.
PARALLEL = 32
#: How many live calls a relay's migration looks through.
SCAN = 100_000

#: Why a call moves (MigrateCallRequest.reason).
OPERATOR = "operator"
DRAIN = "drain"
LOST = "relay-lost"

MIGRATIONS = Counter(
    "quietwire_call_migrations", "Call migrations, by why and how they ended", ["reason", "result"]
)
MIGRATION_SECONDS = Histogram(
    "quietwire_call_migration_seconds",
    "Time to move a call (allocation, both re-INVITEs, relay updates)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)

#: The carried legs of one relay session (by relay_pb2.LegSide value), from the
#: leg memory its relay (the id given) kept; empty when it kept none.
Recall = Callable[[str, str], Awaitable[Mapping[int, relay_pb2.CarriedLeg]]]
#: Ends a call from the platform with a Reason (marks it, asks signaling for the BYEs).
EndCall = Callable[[str, str], Awaitable[None]]


def remembered(client: redis.Redis) -> Recall:
    """The leg memory in Redis (:mod:`quietwire.runtime.legmemory`): the source
    relay's, else the last relay's that wrote one."""

    async def recall_legs(session: str, relay_id: str) -> Mapping[int, relay_pb2.CarriedLeg]:
        legs = await legmemory.recall(client, session, relay_id) or await legmemory.recall(
            client, session
        )
        return {int(side): legmemory.carried(memory) for side, memory in legs.items()}

    return recall_legs


@dataclass(frozen=True, slots=True)
class Migration:
    """How one call's migration ended."""

    moved: bool
    from_relay: str = ""
    to_relay: str = ""
    detail: str = ""
    #: It could not move and was ended with a Reason.
    ended: bool = False
    #: False: no live call has that Call-ID.
    found: bool = True


@dataclass(frozen=True, slots=True)
class RelayMigration:
    moved: int = 0
    ended: int = 0
    #: Could not move and still on the relay.
    failed: int = 0


# -- pure decisions ----------------------------------------------------------------------


def elsewhere(alive: Iterable[RelayEntry], source: Relay) -> list[RelayEntry]:
    """The relays a call on ``source`` may move to: never ``source`` itself, nor a
    relay at its gRPC address (the same relay restarted in its place, empty: the
    one-relay platform has nowhere to go)."""
    return [r for r in alive if r.relay_id != source.relay_id and r.grpc != source.grpc]


def destination(
    alive: Sequence[RelayEntry],
    source: Relay,
    to_relay: str,
    selector: RelaySelector,
    tried: Collection[str] = (),
) -> RelayEntry | None:
    """Where to move a call on ``source``: the relay ``to_relay`` names (if alive and
    not ``source``), else the selector's choice among the others not ``tried``."""
    others = [r for r in elsewhere(alive, source) if r.relay_id not in tried]
    if to_relay:
        return next((r for r in others if r.relay_id == to_relay), None)
    return selector.choose(others)


def carried_specs(
    record: CallRecord, index: int, stream: StreamPlan, carried: Mapping[int, relay_pb2.CarriedLeg]
) -> list[relay_pb2.LegSpec]:
    """Both legs of one stream as the new relay must take them: the same layout
    (RTCP muxed where it was), each side's ``a=zrtp-hash`` (checked against any
    new Hello), and what the old relay knew of each phone."""
    specs = []
    for side, endpoint in (
        (relay_pb2.LEG_SIDE_CALLER, stream.toward_caller),
        (relay_pb2.LEG_SIDE_CALLEE, stream.toward_callee),
    ):
        spec = relay_pb2.LegSpec(
            side=side,
            rtcp_mux=muxed(endpoint),
            zrtp_hash=record.signaled(
                Side.CALLER if side == relay_pb2.LEG_SIDE_CALLER else Side.CALLEE
            )
            if index == 0
            else "",
        )
        if side in carried:
            spec.carried.CopyFrom(carried[side])
        specs.append(spec)
    return specs


def muxed(endpoint: Endpoint) -> bool:
    """A leg with RTP and RTCP on one port (RFC 5761): the relay gave it one port."""
    return endpoint.rtcp_port == endpoint.rtp_port


def switched(
    source: Relay, target: Relay, streams: tuple[StreamPlan | None, ...]
) -> Callable[[CallRecord], CallRecord | None]:
    """The record moved to ``target``: its plan names the new relay and endpoints,
    everything else (binding, dialog, hashes) unchanged; declined when the call
    ended or moved meanwhile."""

    def step(record: CallRecord) -> CallRecord | None:
        if record.ended or record.terminated or record.plan is None:
            return None
        if record.plan.relay != source:
            return None
        return replace(record, plan=replace(record.plan, relay=target, streams=streams))

    return step


def lost_reason(why: str) -> str:
    """The Reason text of a call ended because its relay was lost and it could not move."""
    return f"{RELAY_LOST}: {why}" if why else RELAY_LOST


class Migrator:
    def __init__(
        self,
        store: CallStore,
        registry: RelayRegistry,
        planner: Planner,
        mover: CallMover,
        end: EndCall,
        recall: Recall | None = None,
        selector: RelaySelector | None = None,
    ) -> None:
        self.store, self.registry, self.planner, self.mover = store, registry, planner, mover
        self.end = end
        self.recall = recall or remembered(store.redis)
        self.selector = selector or LeastLoaded()
        self.redis: redis.Redis = store.redis
        self._unlock = self.redis.register_script(_UNLOCK)

    # -- entry points --------------------------------------------------------------------

    async def migrate(self, call_id: str, to_relay: str = "", reason: str = OPERATOR) -> Migration:
        """Move one call off its relay (to ``to_relay`` if given)."""
        return await self._locked(call_id, lambda r: self._move(r, to_relay, reason, lost=False))

    async def migrate_relay(
        self, relay_id: str, to_relay: str = "", reason: str = DRAIN
    ) -> RelayMigration:
        """Move every call off ``relay_id`` (a drain), PARALLEL at a time."""
        calls = [
            r.call_id
            for r in await self.store.live(SCAN)
            if r.plan is not None and r.plan.relay.relay_id == relay_id
        ]
        log.info("moving a relay's calls", extra={"relay": relay_id, "calls": len(calls)})
        results = await _bounded(self._guarded(self.migrate(c, to_relay, reason)) for c in calls)
        moved = sum(r.moved for r in results)
        ended = sum(r.ended for r in results)
        return RelayMigration(moved, ended, len(results) - moved - ended)

    async def rescue(self, relay_id: str, call_ids: Sequence[str]) -> None:
        """Calls whose relay ``relay_id`` was lost (their media died with it): each
        still on it moves to another relay, or, when none can take it, is ended
        with ``relay lost``. One that moved meanwhile (the registry's expiry and the
        reconciler find a loss the event stream already did) is left alone."""
        await _bounded(self._guarded(self._rescue(relay_id, c)) for c in call_ids)

    async def _rescue(self, relay_id: str, call_id: str) -> Migration:
        async def move(record: CallRecord) -> Migration:
            assert record.plan is not None
            if record.plan.relay.relay_id != relay_id:
                return Migration(False, record.plan.relay.relay_id, detail="moved already")
            return await self._move(record, "", LOST, lost=True)

        return await self._locked(call_id, move)

    @staticmethod
    async def _guarded(work: Awaitable[Migration]) -> Migration:
        """One call's migration among many: its failure (Redis away) is that call's."""
        try:
            return await work
        except Exception as exc:
            MIGRATIONS.labels("any", "error").inc()
            log.warning("migration failed", extra={"error": type(exc).__name__})
            return Migration(False, detail=f"failed: {type(exc).__name__}")

    # -- one call ------------------------------------------------------------------------

    async def _locked(
        self, call_id: str, work: Callable[[CallRecord], Awaitable[Migration]]
    ) -> Migration:
        key = LOCK_KEY.format(call_id=call_id)
        token = secrets.token_hex(8)
        if not await self.redis.set(key, token, nx=True, ex=LOCK_TTL):
            return Migration(False, detail="a migration of this call is under way")
        try:
            with call_context(call_id):
                record = await self.store.get(call_id)
                if record is None or record.ended or record.terminated:
                    return Migration(False, detail="no such call", found=False)
                if record.plan is None:
                    return Migration(False, detail="the call is still being planned")
                return await work(record)
        finally:
            await asyncio.shield(self._unlock(keys=[key], args=[token]))

    async def _move(self, record: CallRecord, to_relay: str, reason: str, lost: bool) -> Migration:
        assert record.plan is not None
        started = time.monotonic()
        source = record.plan.relay
        placed = await self._place(record, to_relay)
        if isinstance(placed, str):
            return await self._failed(record, reason, placed, lost, end=lost)
        target, streams = placed
        try:
            moved = await self._hand_over(record, target, streams, reason, lost)
        except BaseException:  # Redis or a peer failed before the record named the new relay
            await asyncio.shield(self.planner.release(target, record.call_id, len(streams)))
            raise
        if not moved.moved:
            return moved
        if not lost:
            await self.planner.release(source, record.call_id, len(record.plan.streams))
        MIGRATIONS.labels(reason, "moved").inc()
        MIGRATION_SECONDS.observe(time.monotonic() - started)
        log.info(
            "call moved",
            extra={"from_relay": source.relay_id, "to_relay": target.relay_id, "why": reason},
        )
        return Migration(True, source.relay_id, target.relay_id)

    async def _hand_over(
        self,
        record: CallRecord,
        target: Relay,
        streams: tuple[StreamPlan | None, ...],
        reason: str,
        lost: bool,
    ) -> Migration:
        """The phones re-INVITEd toward ``target`` (where the call's sessions now
        are), ``target`` told their answers, the record switched to it; on any
        refusal the sessions there are released."""
        assert record.plan is not None
        source = record.plan.relay
        for _ in range(LOST_TRIES if lost else 1):
            answer = await self.mover.move(record.call_id, target.relay_id, streams, record.replica)
            if answer.outcome not in UNANSWERED:
                break
        if answer.outcome is not MoveOutcome.MOVED:
            await self.planner.release(target, record.call_id, len(streams))
            log.warning("phones not moved", extra={"outcome": answer.why, "detail": answer.detail})
            return await self._failed(
                record, reason, answer.why, lost, end=lost or answer.split, to=target
            )
        await self._learn(target, record.call_id, answer)
        if await self.store.change(record.call_id, switched(source, target, streams)) is None:
            await self.planner.release(target, record.call_id, len(streams))
            MIGRATIONS.labels(reason, "ended-meanwhile").inc()
            return Migration(False, source.relay_id, target.relay_id, "the call ended meanwhile")
        return Migration(True, source.relay_id, target.relay_id)

    async def _place(
        self, record: CallRecord, to_relay: str
    ) -> tuple[Relay, tuple[StreamPlan | None, ...]] | str:
        """The call's sessions allocated on another relay (RELAY_ATTEMPTS at most
        when the selector picks), or why there is none."""
        assert record.plan is not None
        source = record.plan.relay
        tried: set[str] = set()
        while len(tried) < (1 if to_relay else RELAY_ATTEMPTS):
            alive = await self.registry.alive()
            entry = destination(alive, source, to_relay, self.selector, tried)
            if entry is None:
                break
            target = Relay(entry.relay_id, entry.grpc)
            self.planner.on_relay(target)  # its events followed before media flows there
            try:
                return target, await self._allocate(target, record)
            except PlanningError as exc:
                tried.add(entry.relay_id)
                log.warning(
                    "migration allocation failed",
                    extra={"relay": entry.relay_id, "error": str(exc)},
                )
        if to_relay:
            return f"relay {to_relay} is not available"
        return "no other relay could take it" if tried else "no other relay"

    async def _allocate(self, target: Relay, record: CallRecord) -> tuple[StreamPlan | None, ...]:
        """Each stream's session on ``target``, its legs carried; all released on failure."""
        assert record.plan is not None
        stub = self.planner.relays.stub(target.grpc)
        streams: list[StreamPlan | None] = []
        try:
            for index, old in enumerate(record.plan.streams):
                if old is None:
                    streams.append(None)
                    continue
                session = stream_id(record.call_id, index)
                carried = await self.recall(session, record.plan.relay.relay_id)
                allocated = await stub.Allocate(
                    relay_pb2.AllocateRequest(
                        call_id=session, legs=carried_specs(record, index, old, carried)
                    ),
                    timeout=RELAY_TIMEOUT,
                )
                streams.append(stream_plan(allocated))
        except (grpc.aio.AioRpcError, KeyError) as exc:
            await asyncio.shield(self.planner.release(target, record.call_id, len(streams) + 1))
            raise PlanningError(f"relay allocation failed: {type(exc).__name__}") from exc
        return tuple(streams)

    async def _learn(self, target: Relay, call_id: str, answer: MoveAnswer) -> None:
        """Tell the new relay where each phone now says it receives (its answer), both
        sides at once (a relay that just took a lost one's calls answers slowly)."""

        async def update(side: Side, media: tuple[Media, ...]) -> None:
            try:
                await self.planner.update_legs(target, call_id, side, media)
            except PlanningError as exc:  # its carried latch still holds: media flows
                log.warning("relay update after a move failed", extra={"error": str(exc)})

        await asyncio.gather(
            update(Side.CALLER, answer.caller_media), update(Side.CALLEE, answer.callee_media)
        )

    async def _failed(
        self,
        record: CallRecord,
        reason: str,
        why: str,
        lost: bool,
        end: bool,
        to: Relay | None = None,
    ) -> Migration:
        assert record.plan is not None
        source = record.plan.relay.relay_id
        target = to.relay_id if to is not None else ""
        if not end:
            MIGRATIONS.labels(reason, "failed").inc()
            log.warning("call not moved", extra={"to_relay": target, "why": why})
            return Migration(False, source, target, why)
        MIGRATIONS.labels(reason, "ended").inc()
        text = lost_reason("" if why == "no other relay" else why) if lost else f"relay {why}"
        log.warning("call not moved: ending it", extra={"to_relay": target, "why": text})
        await self.end(record.call_id, text)
        return Migration(False, source, target, why, ended=True)


async def _bounded(work: Iterable[Awaitable[Migration]]) -> list[Migration]:
    """Run the migrations PARALLEL at a time; each one's result, in order."""
    gate = asyncio.Semaphore(PARALLEL)

    async def one(step: Awaitable[Migration]) -> Migration:
        async with gate:
            return await step

    return list(await asyncio.gather(*(one(w) for w in work)))
