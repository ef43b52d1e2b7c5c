"""The reconciler against a real relay process and a real Redis: a call hung up
while keyagreement was away is ended from the outbox (its relay session freed), a
session no call owns is released (a planned call's is kept), and one replica per
period holds the round."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import redis.asyncio as redis
from quietwire.keyagreement import reconcile
from quietwire.keyagreement.calls import CallStore
from quietwire.keyagreement.planner import Planner, RelayClients
from quietwire.keyagreement.policy import Policy
from quietwire.keyagreement.reconciler import Reconciler
from quietwire.keyagreement.teardown import CallTerminator
from quietwire.keyagreement.userpolicies import UserPolicies
from quietwire.rpc.keyagreement.v1 import keyagreement_pb2 as pb
from quietwire.rpc.relay.v1 import relay_pb2, relay_pb2_grpc
from quietwire.runtime.channels import ChannelPool
from quietwire.runtime.outbox import EndOutbox
from quietwire.runtime.registry import RelayRegistry, ReplicaRegistry
from quietwire.runtime.streams import stream_id

from tests.integration.test_planner import ALICE, BOB, invite
from tests.support.relay import relay_process
from tests.support.wait import eventually

#: Relays the reconcilers took for gone (none should be: the relay is up).
GONE: list[str] = []


async def _gone(relay_id: str) -> None:
    GONE.append(relay_id)


@dataclass
class Replicas:
    """Two keyagreement replicas' reconcilers, their planner and the relay they share."""

    first: Reconciler
    second: Reconciler
    planner: Planner
    relay: relay_pb2_grpc.RelayAsyncStub

    async def session(self, call_id: str) -> bool:
        """Whether the relay holds the first stream's session of ``call_id``."""
        try:
            await self.relay.Query(relay_pb2.QueryRequest(call_id=stream_id(call_id, 0)))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return False
        return True


@pytest.fixture
async def replicas(redis_url: str, tmp_path: Path) -> AsyncIterator[Replicas]:
    client = redis.Redis.from_url(redis_url)
    registry, relays, signaling = RelayRegistry(client), RelayClients(None), ChannelPool(None)
    try:
        with relay_process(redis_url, tmp_path / "relay.log") as relay:
            await eventually(registry.alive, 30, "the relay registered")
            store = CallStore(client)
            planner = Planner(store, registry, relays, Policy.SECURE_ONLY, UserPolicies(client))

            def one() -> Reconciler:
                terminator = CallTerminator(ReplicaRegistry(client), signaling)
                outbox = EndOutbox(client)
                return Reconciler(store, registry, relays, planner, terminator, outbox, _gone, 30)

            GONE.clear()
            yield Replicas(one(), one(), planner, relays.stub(relay.address))
    finally:
        await relays.close()
        await signaling.close()
        await client.aclose()


async def test_a_queued_end_ends_the_call_and_frees_its_session(replicas: Replicas) -> None:
    await replicas.planner.offer(invite("queued-1", ALICE, BOB, "tag-a"))
    assert await replicas.session("queued-1")
    outbox = replicas.first.outbox
    await outbox.put(pb.EndCallRequest(call_id="queued-1", tags=pb.DialogTags(from_tag="tag-a")))

    await replicas.first.take_outbox()

    assert not await replicas.session("queued-1")
    record = await replicas.planner.store.get("queued-1")
    assert record is not None and record.ended
    assert not await outbox.peek(10)


async def test_a_queued_end_from_another_dialog_ends_nothing(replicas: Replicas) -> None:
    await replicas.planner.offer(invite("queued-2", ALICE, BOB, "tag-a"))
    stranger = pb.EndCallRequest(call_id="queued-2", tags=pb.DialogTags(from_tag="tag-x"))
    await replicas.first.outbox.put(stranger)
    await replicas.first.take_outbox()
    assert await replicas.session("queued-2")
    record = await replicas.planner.store.get("queued-2")
    assert record is not None and not record.ended


async def test_a_session_no_call_owns_is_released_and_a_planned_one_kept(
    replicas: Replicas, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconcile, "ORPHAN_GRACE", 0.0)
    leg = relay_pb2.LegSpec(side=relay_pb2.LEG_SIDE_CALLER)
    await replicas.relay.Allocate(relay_pb2.AllocateRequest(call_id="nobody#0", legs=[leg]))
    await replicas.planner.offer(invite("planned-1", ALICE, BOB, "tag-a"))

    await replicas.first.round()
    await replicas.second.round()

    assert not await replicas.session("nobody")
    assert await replicas.session("planned-1")
    assert not GONE


async def test_one_replica_per_period_holds_the_round(replicas: Replicas) -> None:
    assert await replicas.first._lease()
    assert not await replicas.second._lease()
