"""The EndCall outbox in a real Redis: entries kept in order until handled, capped
(oldest dropped), TTL'd, and one that does not parse handed back to be removed."""

from __future__ import annotations

import pytest
import redis.asyncio as redis
from quietwire.rpc.keyagreement.v1 import keyagreement_pb2 as pb
from quietwire.runtime import outbox
from quietwire.runtime.outbox import END_OUTBOX_KEY, END_OUTBOX_TTL, EndOutbox


async def test_entries_wait_in_order_until_done(redis_url: str) -> None:
    client = redis.from_url(redis_url)
    try:
        box = EndOutbox(client)
        for call_id in ("a", "b"):
            await box.put(pb.EndCallRequest(call_id=call_id), ended_at=100.0)
        await client.rpush(END_OUTBOX_KEY, b"\xff not a protobuf")
        entries = await box.peek(10)
        assert [e.request.call_id if e else None for _, e in entries] == ["a", "b", None]
        assert entries[0][1] is not None and entries[0][1].ended_at_unix == 100.0
        assert 0 < await client.ttl(END_OUTBOX_KEY) <= END_OUTBOX_TTL
        for raw, _ in entries[:2]:
            await box.done(raw)
        assert [e for _, e in await box.peek(10)] == [None]
    finally:
        await client.aclose()


async def test_the_outbox_keeps_only_the_newest(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "END_OUTBOX_CAP", 3)
    client = redis.from_url(redis_url)
    try:
        box = EndOutbox(client)
        for n in range(5):
            await box.put(pb.EndCallRequest(call_id=f"c{n}"))
        assert [e.request.call_id for _, e in await box.peek(10) if e] == ["c2", "c3", "c4"]
    finally:
        await client.aclose()
