"""The planner against a real relay process and a real Redis: a plan's relay sessions
are all released when one cannot be allocated, and a plan is bound to its dialog."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import pytest
import redis.asyncio as redis
from quietwire.keyagreement.calls import CallStore
from quietwire.keyagreement.model import Answer, Media, Offer, Plan, PlanningError, Refusal, Tags
from quietwire.keyagreement.planner import Planner, RelayClients
from quietwire.keyagreement.policy import Policy
from quietwire.keyagreement.userpolicies import UserPolicies
from quietwire.rpc.relay.v1 import relay_pb2
from quietwire.runtime.registry import RelayRegistry

from tests.conftest import free_port, quietwire_env, start_service, stop_process
from tests.support.relay import relay_session
from tests.support.wait import eventually

HASH = "1.10 " + "ab" * 32
AUDIO = Media(port=40000, connection_address="127.0.0.1", zrtp_hash=HASH)
VIDEO = Media(port=40010, connection_address="127.0.0.1", zrtp_hash=HASH)
CAROL, BOB, ALICE = "sip:carol@127.0.0.1", "sip:bob@127.0.0.1", "sip:alice@127.0.0.1"


@dataclass
class Setup:
    planner: Planner
    relays: RelayClients
    grpc: str

    async def session(self, call_id: str, index: int = 0) -> relay_pb2.QueryResponse | None:
        """The relay's session for one stream of a call (None when it has none)."""
        return await relay_session(self.relays.stub(self.grpc), call_id, index)


@pytest.fixture
async def setup(redis_url: str) -> AsyncIterator[Setup]:
    """A relay process with ports for one stream only (two legs, one port pair each)."""
    low = free_port() & ~1
    env = quietwire_env(
        QW_REDIS_URL=redis_url,
        QW_GRPC_INSECURE="true",
        QW_METRICS_PORT="0",
        QW_RELAY_ID="relay-small",
        QW_RELAY_PORT_MIN=str(low),
        QW_RELAY_PORT_MAX=str(low + 3),
        QW_DRAIN_TIMEOUT="1",  # sessions a test leaves allocated do not hold its end
    )
    started = await asyncio.to_thread(start_service, "relay", env)
    relay = started.process
    client = redis.Redis.from_url(redis_url)
    registry, relays = RelayRegistry(client), RelayClients(None)
    try:
        await eventually(registry.alive, 10, "the relay in the registry")
        planner = Planner(
            CallStore(client), registry, relays, Policy.SECURE_ONLY, UserPolicies(client)
        )
        yield Setup(planner, relays, f"127.0.0.1:{started.grpc_port}")
    finally:
        stop_process(relay, 10)
        await relays.close()
        await client.aclose()


def invite(call_id: str, caller: str, callee: str, tag: str, *media: Media) -> Offer:
    return Offer(call_id, media or (AUDIO,), Tags(tag, ""), caller=caller, callee=callee)


async def test_a_failed_second_allocate_releases_the_first(setup: Setup) -> None:
    """Audio and video, but the relay has ports for one stream: the offer fails,
    the audio session is released at once (not left for the media timeout), the
    Call-ID is free again, and the relay's ports serve the next call."""
    with pytest.raises(PlanningError, match="RESOURCE_EXHAUSTED"):
        await setup.planner.offer(invite("av", CAROL, BOB, "c1", AUDIO, VIDEO))
    assert await setup.session("av", 0) is None
    assert await setup.planner.store.get("av") is None
    plan = await setup.planner.offer(invite("audio-only", CAROL, BOB, "c2"))
    assert isinstance(plan, Plan) and plan.streams[0] is not None
    assert await setup.session("audio-only") is not None


async def test_a_plan_is_bound_to_its_dialog(setup: Setup) -> None:
    """carol calls bob; requests from any other dialog that reuse the Call-ID are
    refused and change nothing; carol's own dialog still ends the call."""
    planner = setup.planner
    plan = await planner.offer(invite("c-b", CAROL, BOB, "c1"))
    assert isinstance(plan, Plan)
    answered = await planner.answer(Answer("c-b", (AUDIO,), Tags("c1", "b1")))
    assert answered == plan
    before = await planner.store.get("c-b")

    taken = await planner.offer(invite("c-b", ALICE, ALICE, "a1"))
    assert isinstance(taken, Refusal) and taken.status == 403
    reoffer = Offer("c-b", (AUDIO,), Tags("a1", "b1"), reoffer=True)
    assert isinstance(await planner.offer(reoffer), Refusal)
    other_fork = await planner.answer(Answer("c-b", (AUDIO,), Tags("c1", "b2")))
    assert isinstance(other_fork, Refusal) and other_fork.status == 481
    assert not await planner.end("c-b", "bye", Tags("a1", ""))
    assert not await planner.end("c-b", "bye", Tags("b1", "a1"))
    assert await planner.store.get("c-b") == before
    assert await setup.session("c-b") is not None

    callee_reoffer = Offer("c-b", (AUDIO,), Tags("b1", "c1"), reoffer=True, from_callee=True)
    assert await planner.offer(callee_reoffer) == plan
    assert await planner.end("c-b", "bye", Tags("b1", "c1"))
    assert await setup.session("c-b") is None
    ended = await planner.store.get("c-b")
    assert ended is not None and ended.ended == "bye"

    # An ended call's Call-ID: still not alice's; carol's INVITE retried (after a 422,
    # a 3xx) keeps its Call-ID and From tag and gets a new plan.
    assert await planner.offer(invite("c-b", ALICE, BOB, "a1")) == taken
    again = await planner.offer(invite("c-b", CAROL, BOB, "c1"))
    assert isinstance(again, Plan) and await setup.session("c-b") is not None


async def test_offer_in_the_2xx_and_answer_in_the_ack(setup: Setup) -> None:
    """An INVITE without SDP: bob's 2xx offers (its tags fix both sides of the
    dialog), carol answers in her ACK (tags as bob would send them); both sides'
    a=zrtp-hash are recorded for the binding check, and other dialogs are refused."""
    planner, carol_hash = setup.planner, "1.10 " + "cd" * 32
    offer = Offer("late", (AUDIO,), Tags("c1", "b1"), from_callee=True, caller=CAROL, callee=BOB)
    plan = await planner.offer(offer)
    assert isinstance(plan, Plan)
    stranger = Answer("late", (AUDIO,), Tags("b2", "c1"), from_caller=True)
    assert isinstance(await planner.answer(stranger), Refusal)
    answer = replace(AUDIO, zrtp_hash=carol_hash)
    assert await planner.answer(Answer("late", (answer,), Tags("b1", "c1"), True)) == plan
    record = await planner.store.get("late")
    assert record is not None and (record.hash_caller, record.hash_callee) == (carol_hash, HASH)
    assert record.dialog.callee_tag == "b1"
    assert await planner.end("late", "bye", Tags("c1", "b1"))


async def test_early_answers_bind_an_early_dialog_until_a_2xx(setup: Setup) -> None:
    """carol's INVITE forks to two of bob's phones. Each early answer (an 18x) takes
    the callee side in turn, with its a=zrtp-hash; the other fork's 2xx takes it
    over for good; a 2xx without SDP confirms only the fork holding it; once
    confirmed, no other fork's answer, early or not, moves the call."""
    planner = setup.planner
    plan = await planner.offer(invite("fork", CAROL, BOB, "c1"))
    assert isinstance(plan, Plan)
    first_hash, second_hash = "1.10 " + "01" * 32, "1.10 " + "02" * 32
    first = replace(AUDIO, port=40020, zrtp_hash=first_hash)
    second = replace(AUDIO, port=40030, zrtp_hash=second_hash)

    for tags, media in ((Tags("c1", "b1"), first), (Tags("c1", "b2"), second)):
        assert await planner.answer(Answer("fork", (media,), tags, provisional=True)) == plan
        record = await planner.store.get("fork")
        assert record is not None and record.dialog.early
        assert (record.dialog.callee_tag, record.hash_callee) == (tags.to_tag, media.zrtp_hash)

    holder_elsewhere = await planner.answer(Answer("fork", (), Tags("c1", "b1")))
    assert isinstance(holder_elsewhere, Refusal) and holder_elsewhere.status == 481
    assert await planner.answer(Answer("fork", (first,), Tags("c1", "b1"))) == plan
    record = await planner.store.get("fork")
    assert record is not None and not record.dialog.early
    assert (record.dialog.callee_tag, record.hash_callee) == ("b1", first_hash)
    assert await planner.answer(Answer("fork", (), Tags("c1", "b1"))) == plan  # idempotent

    for late in (
        Answer("fork", (second,), Tags("c1", "b2"), provisional=True),
        Answer("fork", (second,), Tags("c1", "b2")),
        Answer("fork", (), Tags("c1", "b2")),
    ):
        refused = await planner.answer(late)
        assert isinstance(refused, Refusal) and refused.status == 481
    assert await planner.store.get("fork") == record
    assert await planner.end("fork", "bye", Tags("c1", "b1"))


async def test_a_2xx_without_sdp_confirms_the_holder(setup: Setup) -> None:
    planner = setup.planner
    plan = await planner.offer(invite("reliable", CAROL, BOB, "c1"))
    assert isinstance(plan, Plan)
    early = Answer("reliable", (AUDIO,), Tags("c1", "b1"), provisional=True)
    assert await planner.answer(early) == plan
    not_from_the_callee = Answer("reliable", (), Tags("b1", "c1"), from_caller=True)
    assert isinstance(await planner.answer(not_from_the_callee), Refusal)
    assert await planner.answer(Answer("reliable", (), Tags("c1", "b1"))) == plan
    record = await planner.store.get("reliable")
    assert record is not None and not record.dialog.early and record.dialog.callee_tag == "b1"
    assert await planner.end("reliable", "bye", Tags("c1", "b1"))
