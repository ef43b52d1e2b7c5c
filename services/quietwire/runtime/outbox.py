"""Call ends waiting in Redis for keyagreement: EndCalls signaling could not deliver.

A call ends at signaling (its BYE, or an INVITE that failed) and keyagreement
must free its relay ports and close its record. When keyagreement is away at
that moment, signaling puts the EndCall here instead of dropping it, and
keyagreement takes it when it is back (:mod:`quietwire.keyagreement.reconciler`):
the ports are freed and the call leaves ``quietwire calls`` within a second of
its return, not after the relay's media timeout.

keyagreement drains the outbox rather than a signaling loop retrying: it is the
one that must act and it knows when it is back (it reads at start, then every
second); a retrying signaling replica might die first, and each replica would
keep calling a peer that is down.

Delivery is at least once: a reader handles an entry, then removes it, so one
that dies in between leaves it to the next; handling must be idempotent (ending
an ended call does nothing). Capped (the oldest are dropped) and TTL'd, like
every Redis record.
"""

from __future__ import annotations

import time

import redis.asyncio as redis
from google.protobuf.message import DecodeError
from prometheus_client import Counter

from quietwire.rpc.keyagreement.v1 import keyagreement_pb2 as pb

#: List of serialized ``PendingEnd`` protobufs, oldest first, at most END_OUTBOX_CAP;
#: TTL END_OUTBOX_TTL, renewed by every write.
END_OUTBOX_KEY = "qw:outbox:endcall"
END_OUTBOX_CAP = 10_000
END_OUTBOX_TTL = 3600

QUEUED = Counter("quietwire_endcall_queued", "EndCalls queued while keyagreement was away")
UNREADABLE = Counter("quietwire_endcall_unreadable", "Queued EndCalls that did not parse")


class EndOutbox:
    def __init__(self, client: redis.Redis, key: str = END_OUTBOX_KEY) -> None:
        self.redis, self.key = client, key

    async def put(self, request: pb.EndCallRequest, ended_at: float | None = None) -> None:
        """Keep ``request`` for keyagreement's return (Redis errors are raised)."""
        entry = pb.PendingEnd(request=request, ended_at_unix=ended_at or time.time())
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(self.key, entry.SerializeToString())
            pipe.ltrim(self.key, -END_OUTBOX_CAP, -1)
            pipe.expire(self.key, END_OUTBOX_TTL)
            await pipe.execute()
        QUEUED.inc()

    async def peek(self, count: int) -> list[tuple[bytes, pb.PendingEnd | None]]:
        """The oldest ``count`` entries, left in place: each raw (for :meth:`done`)
        and parsed (None when it does not parse: :meth:`done` it all the same)."""
        raw = await self.redis.lrange(self.key, 0, count - 1)
        out: list[tuple[bytes, pb.PendingEnd | None]] = []
        for value in raw:
            item = value.encode() if isinstance(value, str) else value
            entry = pb.PendingEnd()
            try:
                entry.ParseFromString(item)
            except DecodeError:
                UNREADABLE.inc()
                out.append((item, None))
                continue
            out.append((item, entry))
        return out

    async def done(self, raw: bytes) -> None:
        """Remove a handled entry (one copy of it)."""
        await self.redis.lrem(self.key, 1, raw)  # type: ignore[arg-type]  # bytes are values too
