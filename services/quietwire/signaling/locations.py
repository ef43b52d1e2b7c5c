"""The location service in Redis: bindings of each address of record, and replicas.

Every record has a TTL, so nothing outlives the registrations that made it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as redis

from quietwire.rpc.signaling.v1.signaling_pb2 import Registration
from quietwire.runtime.redisclient import text

#: Hash per AOR: field = binding id (instance + reg-id, or the contact URI),
#: value = a serialized ``Registration``. Key TTL: the longest registration
#: allowed, renewed on each write; expired fields are dropped when read.
LOCATION_KEY = "qw:loc:{{{aor}}}"
#: String per live replica: its gRPC address. TTL: REPLICA_TTL, renewed by heartbeat.
REPLICA_KEY = "qw:replica:{replica}"
REPLICA_TTL = 10


def binding_id(contact: str, instance: str, reg_id: int) -> str:
    """RFC 5626: one binding per instance and reg-id; otherwise per contact URI."""
    return f"{instance}#{reg_id}" if instance else contact


@dataclass(slots=True)
class LocationStore:
    redis: redis.Redis
    max_expires: int

    def _key(self, aor: str) -> str:
        return LOCATION_KEY.format(aor=aor)

    async def bindings(self, aor: str, now: float | None = None) -> list[Registration]:
        """Live bindings of ``aor``; expired ones are removed on the way."""
        now = time.time() if now is None else now
        stored = await self.redis.hgetall(self._key(aor))
        live: list[tuple[bytes | str, Registration]] = []
        expired: list[tuple[bytes | str, Registration]] = []
        for field, value in stored.items():
            reg = Registration.FromString(value if isinstance(value, bytes) else value.encode())
            (live if reg.expires_at_unix > now else expired).append((field, reg))
        if expired:
            await self.redis.hdel(self._key(aor), *(f for f, _ in expired))
        return [reg for _, reg in live]

    async def put(self, reg: Registration) -> None:
        key = self._key(reg.aor)
        ident = binding_id(reg.contact, reg.instance_id, reg.reg_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, ident, reg.SerializeToString())
            pipe.expire(key, self.max_expires + 60)
            await pipe.execute()

    async def remove(self, aor: str, contact: str, instance: str, reg_id: int) -> None:
        await self.redis.hdel(self._key(aor), binding_id(contact, instance, reg_id))

    async def clear(self, aor: str) -> None:
        await self.redis.delete(self._key(aor))


@dataclass(slots=True)
class ReplicaRegistry:
    redis: redis.Redis

    async def heartbeat(self, replica: str, grpc_address: str) -> None:
        await self.redis.set(REPLICA_KEY.format(replica=replica), grpc_address, ex=REPLICA_TTL)

    async def address(self, replica: str) -> str | None:
        value = await self.redis.get(REPLICA_KEY.format(replica=replica))
        return None if value is None else text(value)

    async def leave(self, replica: str) -> None:
        await self.redis.delete(REPLICA_KEY.format(replica=replica))
