"""Call security records in Redis, and the planner that makes them.

A record holds what the platform may know about a call's media — its mode,
its relay, each side's ``a=zrtp-hash`` and what the relay saw — and never a
key or an IP address. It lives for the call plus a short grace (TTLs).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import redis.asyncio as redis

from quietwire.keyagreement.policy import Policy, downgrade, judge, mode_of, policy_or
from quietwire.rpc.keyagreement.v1 import keyagreement_pb2 as pb
from quietwire.runtime.redisclient import text

#: Hash per call: mode, end_to_end, relay_id, relay_grpc, hash_caller,
#: hash_callee, seen_caller, seen_callee, conf2ack, state, detail, secured_at,
#: started, policy, plan, replica (the signaling replica of the INVITE).
#: TTL: CALL_TTL while the call runs (renewed while its relay reports media),
#: ENDED_TTL once it ended.
CALL_KEY = "qw:call:{{{call_id}}}"
#: Sorted set of live call ids by start time, for ListCalls. TTL renewed on use.
CALLS_KEY = "qw:calls"
CALL_TTL = 4 * 3600
ENDED_TTL = 60

State: TypeAlias = pb.ZrtpState.ValueType


@dataclass
class CallRecord:
    call_id: str
    values: dict[str, str]

    @property
    def state(self) -> State:
        return pb.ZrtpState.ValueType(int(self.values.get("state", pb.ZRTP_STATE_WAITING)))

    def security(self) -> pb.CallSecurity:
        v = self.values
        return pb.CallSecurity(
            call_id=self.call_id,
            mode=pb.SecurityMode.ValueType(int(v.get("mode", 0))),
            end_to_end=v.get("end_to_end") == "1",
            zrtp_state=self.state,
            detail=v.get("detail", ""),
            secured_at_unix=float(v.get("secured_at", 0) or 0),
        )


class CallStore:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def _key(self, call_id: str) -> str:
        return CALL_KEY.format(call_id=call_id)

    async def get(self, call_id: str) -> CallRecord | None:
        raw = await self.redis.hgetall(self._key(call_id))
        if not raw:
            return None
        return CallRecord(call_id, {text(k): text(v) for k, v in raw.items()})

    async def put(
        self, call_id: str, fields: Mapping[str, str | int | float], ttl: int = CALL_TTL
    ) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(call_id), mapping={k: str(v) for k, v in fields.items()})
            pipe.expire(self._key(call_id), ttl)
            if ttl == CALL_TTL:
                pipe.zadd(CALLS_KEY, {call_id: time.time()}, nx=True)
            else:
                pipe.zrem(CALLS_KEY, call_id)
            pipe.expire(CALLS_KEY, CALL_TTL)
            await pipe.execute()

    async def touch(self, call_id: str) -> None:
        """A live call lasts: its record's time to live starts again (ended ones are left)."""
        if await self.redis.zscore(CALLS_KEY, call_id) is None:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.expire(self._key(call_id), CALL_TTL)
            pipe.expire(CALLS_KEY, CALL_TTL)
            await pipe.execute()

    async def live(self, limit: int) -> list[CallRecord]:
        members = await self.redis.zrevrange(CALLS_KEY, 0, max(0, limit - 1))
        ids = [text(i) for i in members if isinstance(i, bytes | str)]
        found = []
        for call_id in ids:
            record = await self.get(call_id)
            if record is None:
                await self.redis.zrem(CALLS_KEY, call_id)
            else:
                found.append(record)
        return found


@dataclass(frozen=True, slots=True)
class Decision:
    verdict_accepted: bool
    mode: pb.SecurityMode.ValueType
    end_to_end: bool
    warning: str = ""


def first_hash(media: Sequence[pb.MediaDescription]) -> str:
    return next((m.zrtp_hash for m in media if m.zrtp_hash and m.port), "")


def decide_offer(
    existing: CallRecord | None, request: pb.PlanOfferRequest, policy: Policy
) -> Decision:
    """Judge an offer against the policy and, for a re-offer, against the call so far."""
    verdict = judge(request.media, policy)
    if existing is not None and request.reoffer:
        before = pb.SecurityMode.ValueType(int(existing.values.get("mode", 0)))
        if before and downgrade(before, verdict.mode):
            return Decision(
                False,
                verdict.mode,
                False,
                "quietwire: re-INVITE would weaken media security; refused",
            )
    return Decision(verdict.accepted, verdict.mode, verdict.end_to_end, verdict.warning)


def answer_downgrades(record: CallRecord, media: Sequence[pb.MediaDescription]) -> bool:
    before = pb.SecurityMode.ValueType(int(record.values.get("mode", 0)))
    return bool(before) and downgrade(before, mode_of(media))


def call_policy(record: CallRecord, default: Policy) -> Policy:
    """The policy a call was planned under (calls planned before policies were stored: default)."""
    return policy_or(record.values.get("policy"), default)
