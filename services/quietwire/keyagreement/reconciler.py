"""Keeping call records true: the reconciliation loop of keyagreement.

It runs :func:`.reconcile.reconcile` over the live records and the relays'
sessions at start, when a relay appears in the registry (a new one, or one
restarted under its old name: its start time changed, it is empty), and every
``QW_RECONCILE_EVERY`` seconds; and it takes the EndCalls signaling queued
while keyagreement was away (:mod:`quietwire.runtime.outbox`) at start and
every second, so a call hung up meanwhile ends when keyagreement returns.

Ending a call: signaling's ``TerminateCall`` sends each phone a BYE with a
Reason if its dialog still exists (or cancels it if it still rings), then
the record is closed and its relay sessions released. When no signaling replica
answers, the call is tried again every second until one does.

Several keyagreement replicas may run: every step is idempotent (a dialog is
taken by one ``TerminateCall`` only, so phones get one BYE; ending an ended
record and releasing a released session do nothing), and the periodic round
runs on one replica per period (a Redis lease), so they do not all scan.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace

import grpc
import redis.asyncio as redis
from prometheus_client import Counter

from quietwire.keyagreement.binding import LostCalls
from quietwire.keyagreement.calls import CallRecord, CallStore
from quietwire.keyagreement.model import Tags
from quietwire.keyagreement.planner import RELAY_TIMEOUT, Planner, RelayClients
from quietwire.keyagreement.reconcile import (
    RELAY_LOST,
    End,
    Orphan,
    RelaySessions,
    moved,
    owned,
    reconcile,
)
from quietwire.keyagreement.servicer import tags_of
from quietwire.keyagreement.teardown import CallTerminator
from quietwire.rpc.keyagreement.v1 import keyagreement_pb2 as pb
from quietwire.rpc.relay.v1 import relay_pb2
from quietwire.runtime.outbox import EndOutbox
from quietwire.runtime.registry import RelayEntry, RelayRegistry
from quietwire.runtime.streams import parse_stream_id

log = logging.getLogger(__name__)
#: Seconds between looks at the outbox, the registry and the calls left to end.
TICK = 1.0
#: How many live calls a round looks through.
SCAN = 100_000
#: Queued EndCalls taken per tick.
OUTBOX_BATCH = 500
#: String: the replica holding this period's reconciliation round. TTL: the period.
LEASE_KEY = "qw:reconcile:lease"

RECONCILED = Counter("quietwire_reconciled", "Reconciliation corrections, by kind", ["kind"])
RECONCILE_ERRORS = Counter(
    "quietwire_reconcile_errors", "Failed reconciliation steps, by error", ["error"]
)

#: Hands a relay found gone to the lost-relay path (its calls are ended or moved).
RelayGone = Callable[[str], Awaitable[None]]


class Reconciler:
    def __init__(
        self,
        store: CallStore,
        registry: RelayRegistry,
        relays: RelayClients,
        planner: Planner,
        terminator: CallTerminator,
        outbox: EndOutbox,
        relay_gone: RelayGone,
        every: float,
        lost_calls: LostCalls | None = None,
    ) -> None:
        self.store, self.registry, self.relays = store, registry, relays
        self.planner, self.terminator, self.outbox = planner, terminator, outbox
        self.relay_gone = relay_gone
        #: Where calls whose relay restarted under them go (moved, or ended); None: ended.
        self.lost_calls = lost_calls
        self.every = every
        self.redis: redis.Redis = store.redis
        self._token = secrets.token_hex(8)
        #: Relays in the registry at the last look: (id, start time) of each.
        self._seen: set[tuple[str, float]] | None = None
        #: Calls whose end no signaling replica took yet: call id → (reason, replica).
        self._pending: dict[str, tuple[str, str]] = {}
        self._next_round = 0.0
        #: Kinds of loop errors already logged (each is logged once, always counted).
        self._logged: set[str] = set()

    async def run(self) -> None:
        """At start a full round, then a tick every second."""
        await self._guarded("start", self._start())
        while True:
            await asyncio.sleep(TICK)
            await self._guarded("tick", self.tick())

    async def _start(self) -> None:
        await self.take_outbox()
        await self.round()
        self._next_round = time.monotonic() + self.every

    async def tick(self) -> None:
        await self.take_outbox()
        await self._watch_registry()
        if self._pending and await self.terminator.replicas.any_address() is not None:
            for call_id, (reason, replica) in list(self._pending.items()):
                await self.end(End(call_id, reason, replica))
        if time.monotonic() >= self._next_round:
            self._next_round = time.monotonic() + self.every
            if await self._lease():
                await self.round()

    async def _guarded(self, step: str, work: Awaitable[None]) -> None:
        try:
            await work
        except Exception as exc:  # Redis or a peer away: the next tick tries again
            kind = type(exc).__name__
            RECONCILE_ERRORS.labels(kind).inc()
            if kind not in self._logged:
                self._logged.add(kind)
                log.warning("reconciliation failed", extra={"step": step, "error": kind})

    async def _lease(self) -> bool:
        """Whether this replica holds this period's round (the first to ask does)."""
        ttl = max(1, int(self.every * 0.9))
        return bool(await self.redis.set(LEASE_KEY, self._token, nx=True, ex=ttl))

    async def _watch_registry(self) -> None:
        alive = await self.registry.alive()
        seen, self._seen = self._seen, {_incarnation(r) for r in alive}
        if seen is None:
            return
        new = [r for r in alive if _incarnation(r) not in seen]
        if new:
            log.info("relay appeared: reconciling", extra={"relays": len(new)})
            missed = await self.round({r.grpc for r in new})
            # Registered before it serves: asked again next tick.
            self._seen -= {_incarnation(r) for r in new if r.grpc in missed}

    # -- rounds ----------------------------------------------------------------------------

    async def round(self, scope: set[str] | None = None) -> set[str]:
        """Reconcile the records of the relays at the ``scope`` addresses (None: all)
        with those relays' sessions, and act on what was decided; the addresses
        of the relays that did not answer."""
        records = await self.store.live(SCAN)  # first: see reconcile's docstring
        if scope is not None:
            records = [r for r in records if r.plan is not None and r.plan.relay.grpc in scope]
        registered = await self.registry.alive()
        if self._seen is None:
            self._seen = {_incarnation(r) for r in registered}
        addresses = scope if scope is not None else _addresses(records, registered)
        answers = {}
        for address in sorted(addresses):
            answer = await self._sessions(address)
            if answer is not None:
                answers[address] = answer
        decisions = reconcile(records, registered, answers, time.time())
        snapshot = {r.call_id: r for r in records}
        ends = await self._still_on(decisions.ends, snapshot)
        if self.lost_calls is not None:
            # A call already given up on (terminated: its move failed) is ended, not moved again.
            movable = [
                e for e in ends if e.reason == RELAY_LOST and not snapshot[e.call_id].terminated
            ]
            lost: dict[str, list[str]] = {}  # by the relay each was lost with
            for end in movable:
                plan = snapshot[end.call_id].plan
                lost.setdefault(plan.relay.relay_id if plan else "", []).append(end.call_id)
            ends = [e for e in ends if e not in movable]
            for relay_id, call_ids in lost.items():
                await self._guarded("relay-lost", self.lost_calls(relay_id, call_ids))
        for end in ends:
            await self._guarded("end", self.end(end))
        for orphan in decisions.orphans:
            await self._guarded("release", self._release(orphan))
        for relay_id in decisions.gone:
            RECONCILED.labels("relay-gone").inc()
            await self._guarded("relay-gone", self.relay_gone(relay_id))
        return addresses - answers.keys()

    async def _still_on(self, ends: Iterable[End], snapshot: Mapping[str, CallRecord]) -> list[End]:
        """The ends whose call is still on the relay the snapshot named: a call moved
        to another relay since (a migration releases the old relay's sessions once
        the record names the new one) is neither dead nor lost."""
        kept = []
        for end in ends:
            before = snapshot.get(end.call_id)
            if before is not None and moved(before, await self.store.get(end.call_id)):
                RECONCILED.labels("moved-meanwhile").inc()
                continue
            kept.append(end)
        return kept

    async def _sessions(self, address: str) -> RelaySessions | None:
        try:
            listed = await self.relays.stub(address).ListSessions(
                relay_pb2.ListSessionsRequest(), timeout=RELAY_TIMEOUT
            )
        except grpc.aio.AioRpcError as exc:
            log.info("relay not reconciled", extra={"code": exc.code().name})
            return None
        return RelaySessions(
            listed.relay_id,
            listed.started_unix,
            {s.call_id: s.age_seconds for s in listed.sessions},
        )

    async def _release(self, orphan: Orphan) -> None:
        """Free a session nobody owns, after a second look at its record."""
        try:
            call_id, _ = parse_stream_id(orphan.session)
        except ValueError:
            call_id = ""
        record = await self.store.get(call_id) if call_id else None
        if record is not None and owned({call_id: record}, orphan.address, orphan.session):
            return  # planned since the snapshot
        await self.relays.stub(orphan.address).Release(
            relay_pb2.ReleaseRequest(call_id=orphan.session), timeout=RELAY_TIMEOUT
        )
        RECONCILED.labels("orphan-released").inc()
        log.info("orphan relay session released", extra={"session": orphan.session})

    # -- ending calls ----------------------------------------------------------------------

    async def end(self, end: End) -> None:
        """End a dead call: its phones told (if signaling answers), its record closed,
        its relay sessions released. Tried again next tick if no replica answers."""
        record = await self.store.change(
            end.call_id,
            lambda r: None if r.ended or r.terminated else replace(r, terminated=end.reason),
        )
        if record is None:
            record = await self.store.get(end.call_id)
        if record is None or record.ended:
            self._pending.pop(end.call_id, None)
            return
        found = await self.terminator.ask(end.call_id, end.reason, end.replica)
        if found is None:
            self._pending[end.call_id] = (end.reason, end.replica)
            return
        self._pending.pop(end.call_id, None)
        d = record.dialog
        if await self.planner.end(end.call_id, end.reason, Tags(d.caller_tag, d.callee_tag)):
            RECONCILED.labels("call-ended").inc()
        log.info("dead call ended", extra={"call_id": end.call_id, "reason": end.reason})

    async def take_outbox(self) -> None:
        """End the calls signaling hung up while keyagreement was away."""
        for raw, entry in await self.outbox.peek(OUTBOX_BATCH):
            if entry is not None:
                await self._queued_end(entry)
            await self.outbox.done(raw)

    async def _queued_end(self, entry: pb.PendingEnd) -> None:
        request = entry.request
        call_id = request.call_id
        record = await self.store.get(call_id)
        if record is None or record.ended or record.started > entry.ended_at_unix:
            return  # ended already, or its Call-ID is another call's now
        if await self.planner.end(call_id, request.reason, tags_of(request.tags)):
            RECONCILED.labels("queued-end").inc()
            log.info("queued call end taken", extra={"call_id": call_id})


def _addresses(records: Iterable[CallRecord], registered: Iterable[RelayEntry]) -> set[str]:
    """Every relay to ask: those registered and those live records name."""
    named = {r.plan.relay.grpc for r in records if r.plan is not None}
    return named | {r.grpc for r in registered}


def _incarnation(relay: RelayEntry) -> tuple[str, float]:
    """A relay process: its id and start time (a relay restarted under its own name,
    as a pod's container is, is a new one)."""
    return relay.relay_id, relay.started
