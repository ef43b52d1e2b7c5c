"""The location store's script against a real Redis: the order check, the expiry
sweep, each field's last change, the key's TTL, bindings written by earlier
code, and the digest proof run before the update."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis
from quietwire.rpc.signaling.v1.signaling_pb2 import Registration
from quietwire.signaling.auth import PROOF_CHECK
from quietwire.signaling.locations import (
    LOCATION_KEY,
    Change,
    LocationStore,
    OutOfOrder,
    Precondition,
    Unproven,
)

from tests.support.redis import client_for

AOR = "sip:alice@example.com"
KEY = LOCATION_KEY.format(aor=AOR)
MAX_EXPIRES = 3600


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[LocationStore]:
    async with client_for(redis_url) as client:
        yield LocationStore(client, MAX_EXPIRES)


def reg(
    contact: str, *, expires_in: float = 600, call_id: str = "c1", cseq: int = 1
) -> Registration:
    return Registration(
        aor=AOR,
        contact=contact,
        expires_at_unix=time.time() + expires_in,
        call_id=call_id,
        cseq=cseq,
    )


def contacts(bindings: list[Registration]) -> set[str]:
    return {b.contact for b in bindings}


async def test_an_older_register_of_the_same_call_id_changes_nothing(
    store: LocationStore,
) -> None:
    await store.update(AOR, [Change("a", reg("a", cseq=5))], call_id="c1", cseq=5)
    await store.redis.hset(KEY, "gone", f"{int(time.time() * 1000) - 1} 1 x\n".encode())
    with pytest.raises(OutOfOrder):
        await store.update(AOR, [Change("a", reg("a", cseq=4))], call_id="c1", cseq=4)
    with pytest.raises(OutOfOrder):  # the same CSeq again
        await store.update(AOR, [Change("a", None)], call_id="c1", cseq=5)
    assert await store.redis.hexists(KEY, "gone")  # not even swept
    # Another Call-ID (another phone's, or a rebooted one's) is not ordered against it.
    live = await store.update(AOR, [Change("a", reg("a", call_id="c2"))], call_id="c2", cseq=1)
    assert [b.call_id for b in live] == ["c2"]


async def test_several_changes_and_the_last_change_of_a_field_counts(
    store: LocationStore,
) -> None:
    await store.update(AOR, [Change("a", reg("a")), Change("b", reg("b"))])
    live = await store.update(
        AOR,
        [Change("c", reg("c")), Change("a", None), Change("b", None), Change("b", reg("b2"))],
        cseq=2,
    )
    assert contacts(live) == {"c", "b2"}
    assert contacts(await store.bindings(AOR)) == {"c", "b2"}


async def test_a_binding_written_already_expired_is_removed(store: LocationStore) -> None:
    await store.update(AOR, [Change("a", reg("a")), Change("b", reg("b"))])
    live = await store.update(AOR, [Change("a", reg("a", expires_in=-1, cseq=2))], cseq=2)
    assert contacts(live) == {"b"}
    assert not await store.redis.hexists(KEY, "a")


async def test_expired_bindings_are_swept_and_earlier_records_read(
    store: LocationStore,
) -> None:
    """Values as the code before this script wrote them: the same prefix and protobuf."""
    now_ms = int(time.time() * 1000)
    old = reg("old")
    await store.redis.hset(
        KEY,
        mapping={
            "old": f"{now_ms + 600_000} 3 c9\n".encode() + old.SerializeToString(),
            "dead": f"{now_ms - 1} 3 c9\n".encode() + reg("dead").SerializeToString(),
        },
    )
    assert await store.bindings(AOR) == [old]
    assert not await store.redis.hexists(KEY, "dead")


async def test_a_write_renews_the_key_ttl_and_a_lookup_leaves_it(
    store: LocationStore,
) -> None:
    await store.update(AOR, [Change("a", reg("a")), Change("b", reg("b"))])
    assert await store.redis.ttl(KEY) > MAX_EXPIRES
    await store.redis.expire(KEY, 1000)
    await store.bindings(AOR)
    await store.update(AOR, [Change("b", None)], cseq=2)
    assert 0 < await store.redis.ttl(KEY) <= 1000
    await store.update(AOR, [Change("a", reg("a", cseq=3))], cseq=3)
    assert await store.redis.ttl(KEY) > MAX_EXPIRES


async def test_clear_removes_every_binding(store: LocationStore) -> None:
    await store.update(AOR, [Change("a", reg("a")), Change("b", reg("b"))])
    live = await store.update(AOR, [Change("c", reg("c", cseq=1))], clear=True)
    assert contacts(live) == {"c"}
    await store.clear(AOR)
    assert not await store.redis.exists(KEY)


USER_KEY = "qw:user:{alice}"
BLOCKS = ("qw:authblock:{user:alice}", "qw:authblock:{src:1}")


def proof() -> Precondition:
    return Precondition(PROOF_CHECK, (USER_KEY, *BLOCKS), ("ha1", "h"))


@pytest.fixture
async def user(store: LocationStore) -> redis.Redis:
    await store.redis.hset(USER_KEY, "ha1", "h")
    return store.redis


async def test_the_proof_is_checked_before_anything_changes(
    store: LocationStore, user: redis.Redis
) -> None:
    live = await store.update(AOR, [Change("a", reg("a"))], precondition=proof())
    assert contacts(live) == {"a"}
    await user.set(BLOCKS[1], "1", px=60_000)
    with pytest.raises(Unproven):  # the source is blocked
        await store.update(AOR, [Change("b", reg("b"))], precondition=proof())
    await user.delete(BLOCKS[1])
    await user.hset(USER_KEY, "ha1", "changed")
    with pytest.raises(Unproven):  # the password changed
        await store.update(AOR, [Change("b", reg("b"))], precondition=proof())
    assert contacts(await store.bindings(AOR)) == {"a"}
