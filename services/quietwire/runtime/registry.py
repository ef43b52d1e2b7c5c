"""Registries in Redis, shared between services: relays (written by relays, read
by keyagreement) and signaling replicas (written by each replica, read by the
other replicas and by keyagreement, which asks one of them to end a call).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as redis

from quietwire.runtime.redisclient import text

#: Hash per relay: ``grpc`` (host:port), ``advertise`` (media address),
#: ``capacity`` and ``active`` (calls), ``draining`` ("0"/"1"), ``started`` (when the
#: relay process started, Unix seconds: a new value is a restart). TTL: RELAY_TTL,
#: renewed by the relay's heartbeat, so a dead relay disappears by itself.
RELAY_KEY = "qw:relay:{relay}"
#: Set of relay ids, for listing without SCAN; TTL renewed by every heartbeat.
RELAYS_KEY = "qw:relays"
RELAY_TTL = 10


@dataclass(frozen=True, slots=True)
class RelayEntry:
    relay_id: str
    grpc: str
    advertise: str
    capacity: int
    active: int
    draining: bool
    #: When the relay process started (Unix seconds; 0: unknown, an older relay).
    started: float = 0.0

    @property
    def load(self) -> float:
        return self.active / self.capacity if self.capacity else 1.0


class RelayRegistry:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    async def heartbeat(self, entry: RelayEntry) -> None:
        key = RELAY_KEY.format(relay=entry.relay_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(
                key,
                mapping={
                    "grpc": entry.grpc,
                    "advertise": entry.advertise,
                    "capacity": entry.capacity,
                    "active": entry.active,
                    "draining": "1" if entry.draining else "0",
                    "started": repr(entry.started),
                },
            )
            pipe.expire(key, RELAY_TTL)
            pipe.sadd(RELAYS_KEY, entry.relay_id)
            pipe.expire(RELAYS_KEY, RELAY_TTL * 6)
            await pipe.execute()

    async def leave(self, relay_id: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(RELAY_KEY.format(relay=relay_id))
            pipe.srem(RELAYS_KEY, relay_id)
            await pipe.execute()

    async def alive(self) -> list[RelayEntry]:
        """Relays whose heartbeat is current (stale ids are dropped from the set)."""
        ids = sorted(text(m) for m in await self.redis.smembers(RELAYS_KEY))
        found: list[RelayEntry] = []
        for relay_id in ids:
            raw = await self.redis.hgetall(RELAY_KEY.format(relay=relay_id))
            if not raw:
                await self.redis.srem(RELAYS_KEY, relay_id)
                continue
            values = {text(k): text(v) for k, v in raw.items()}
            found.append(
                RelayEntry(
                    relay_id,
                    values["grpc"],
                    values["advertise"],
                    int(values["capacity"]),
                    int(values["active"]),
                    values["draining"] == "1",
                    float(values.get("started") or 0),
                )
            )
        return found


#: String per live signaling replica: its gRPC address. TTL: REPLICA_TTL,
#: renewed by heartbeat.
REPLICA_KEY = "qw:replica:{replica}"
#: Set of replica ids; TTL renewed by every heartbeat.
REPLICAS_KEY = "qw:replicas"
REPLICA_TTL = 10


class ReplicaRegistry:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    async def heartbeat(self, replica: str, grpc_address: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(REPLICA_KEY.format(replica=replica), grpc_address, ex=REPLICA_TTL)
            pipe.sadd(REPLICAS_KEY, replica)
            pipe.expire(REPLICAS_KEY, REPLICA_TTL * 6)
            await pipe.execute()

    async def address(self, replica: str) -> str | None:
        value = await self.redis.get(REPLICA_KEY.format(replica=replica))
        return None if value is None else text(value)

    async def any_address(self) -> str | None:
        """The gRPC address of some live replica (for work any of them can do)."""
        for replica in sorted(text(m) for m in await self.redis.smembers(REPLICAS_KEY)):
            if (address := await self.address(replica)) is not None:
                return address
            await self.redis.srem(REPLICAS_KEY, replica)
        return None

    async def leave(self, replica: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(REPLICA_KEY.format(replica=replica))
            pipe.srem(REPLICAS_KEY, replica)
            await pipe.execute()
