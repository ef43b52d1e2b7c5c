"""Call security records in Redis: one typed :class:`CallRecord` per call.

A record holds what the platform may know about a call's media — the dialog
it is bound to, its mode, its relay sessions, each side's ``a=zrtp-hash`` and
what the relay saw — and never a key or a phone's IP address. It lives for the
call plus a short grace (TTLs).

Every write is a compare-and-set on the record's revision (one Lua script), so
concurrent writers (keyagreement replicas following the same relay, an answer
racing a Hello) never overwrite each other's steps. All of one call's state is
in one key, hash-tagged by its Call-ID, so Redis Cluster keeps it in one slot;
the index of live calls is a separate key written by separate commands.

Upgrade note: records written before this layout (``qw:call:{...}``, a
protobuf-hex plan) are not read. Calls in progress while keyagreement is
upgraded lose their records: their re-offers are planned again from scratch,
their BYE releases nothing (the relay's media timeout frees their ports), and
their ZRTP binding is no longer watched. The old keys expire within 4 hours.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import redis.asyncio as redis
from prometheus_client import Counter

from quietwire.keyagreement.model import Dialog, Endpoint, Mode, Plan, Relay, Side, StreamPlan
from quietwire.keyagreement.outcome import Binding, Outcome
from quietwire.keyagreement.policy import Policy, policy_or
from quietwire.runtime.redisclient import UNWAITED, Replication, text

log = logging.getLogger(__name__)

#: Hash per call, the Call-ID as its hash tag. Fields: rev (revision, +1 per write),
#: caller, callee, caller_tag, callee_tag, callee_early ("1": that tag is an early
#: dialog's, from an 18x) (the dialog), replica (the signaling replica of the INVITE),
#: policy, mode, end_to_end, relay_id, relay_grpc, streams (per m= line: "-" or
#: "<host> <rtp> <rtcp> <host> <rtp> <rtcp>" toward caller then callee, joined by
#: ";"), hash_caller, hash_callee, outcome, seen_caller, seen_callee, conf2ack, detail,
#: secured_at, started, terminated, ended.
#: TTL: CALL_TTL while the call runs (renewed while its relay reports media),
#: ENDED_TTL once it ended.
CALL_KEY = "qw:call:v2:{{{call_id}}}"
#: Sorted set of live call ids by start time, for ListCalls. TTL renewed on use.
CALLS_KEY = "qw:calls:v2"
CALL_TTL = 4 * 3600
ENDED_TTL = 60
#: Call records read per round trip when listing the live calls.
LIVE_BATCH = 500
#: Attempts of a read-compute-write before a writer gives up (others kept writing).
WRITE_ATTEMPTS = 8

#: KEYS[1]: one call's hash. ARGV[1]: the revision the writer read ("0": no record);
#: ARGV[2]: TTL in seconds; ARGV[3..]: field, value pairs of the whole new record.
#: Replaces the record only if it is still at that revision: 1, else 0.
_COMPARE_AND_SET = """
local rev = redis.call('HGET', KEYS[1], 'rev') or '0'
if rev ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'rev', tonumber(rev) + 1, unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

CONFLICTS = Counter(
    "quietwire_call_record_conflicts", "Call record writes retried after a concurrent write"
)


@dataclass(frozen=True, slots=True)
class CallRecord:
    call_id: str
    dialog: Dialog
    policy: Policy
    mode: Mode
    end_to_end: bool
    #: None while its relay sessions are being allocated.
    plan: Plan | None = None
    replica: str = ""
    hash_caller: str = ""
    hash_callee: str = ""
    binding: Binding = field(default_factory=Binding)
    #: Why the platform asked signaling to end the call ("" if it did not).
    terminated: str = ""
    #: Why the call ended ("" while it runs).
    ended: str = ""
    started: float = 0.0
    #: The revision read from Redis (0: not stored).
    rev: int = 0

    def signaled(self, side: Side) -> str:
        """The a=zrtp-hash that side sent over TLS ("" when unknown)."""
        return self.hash_caller if side is Side.CALLER else self.hash_callee


def _endpoint(parts: list[str]) -> Endpoint:
    return Endpoint(parts[0], int(parts[1]), int(parts[2]))


def _streams_text(streams: tuple[StreamPlan | None, ...]) -> str:
    def one(s: StreamPlan | None) -> str:
        if s is None:
            return "-"
        a, b = s.toward_caller, s.toward_callee
        return f"{a.host} {a.rtp_port} {a.rtcp_port} {b.host} {b.rtp_port} {b.rtcp_port}"

    return ";".join(one(s) for s in streams)


def _streams(value: str) -> tuple[StreamPlan | None, ...]:
    out: list[StreamPlan | None] = []
    for item in value.split(";") if value else []:
        parts = item.split()
        out.append(
            None if parts == ["-"] else StreamPlan(_endpoint(parts[:3]), _endpoint(parts[3:]))
        )
    return tuple(out)


def encode(record: CallRecord) -> dict[str, str]:
    """The record as its Redis hash (``rev`` is the store's)."""
    d, b = record.dialog, record.binding
    fields = {
        "caller": d.caller,
        "callee": d.callee,
        "caller_tag": d.caller_tag,
        "callee_tag": d.callee_tag,
        "callee_early": str(int(d.early)),
        "replica": record.replica,
        "policy": record.policy.value,
        "mode": record.mode.value,
        "end_to_end": str(int(record.end_to_end)),
        "hash_caller": record.hash_caller,
        "hash_callee": record.hash_callee,
        "outcome": b.outcome.value,
        "seen_caller": str(int(b.seen_caller)),
        "seen_callee": str(int(b.seen_callee)),
        "conf2ack": str(int(b.conf2ack)),
        "detail": b.detail,
        "secured_at": repr(b.secured_at),
        "started": repr(record.started),
        "terminated": record.terminated,
        "ended": record.ended,
    }
    if record.plan is not None:
        fields.update(
            relay_id=record.plan.relay.relay_id,
            relay_grpc=record.plan.relay.grpc,
            streams=_streams_text(record.plan.streams),
        )
    return fields


def decode(call_id: str, v: Mapping[str, str], default_policy: Policy) -> CallRecord:
    """A record from its Redis hash; ValueError when it is malformed."""
    try:
        mode = Mode(v["mode"])
        plan = None
        if "relay_grpc" in v:
            relay = Relay(v["relay_id"], v["relay_grpc"])
            plan = Plan(mode, v["end_to_end"] == "1", relay, _streams(v.get("streams", "")))
        return CallRecord(
            call_id=call_id,
            dialog=Dialog(
                v["caller"],
                v["callee"],
                v["caller_tag"],
                v.get("callee_tag", ""),
                v.get("callee_early") == "1",
            ),
            policy=policy_or(v.get("policy"), default_policy),
            mode=mode,
            end_to_end=v["end_to_end"] == "1",
            plan=plan,
            replica=v.get("replica", ""),
            hash_caller=v.get("hash_caller", ""),
            hash_callee=v.get("hash_callee", ""),
            binding=Binding(
                outcome=Outcome(v["outcome"]),
                seen_caller=v.get("seen_caller") == "1",
                seen_callee=v.get("seen_callee") == "1",
                conf2ack=v.get("conf2ack") == "1",
                detail=v.get("detail", ""),
                secured_at=float(v.get("secured_at") or 0),
            ),
            terminated=v.get("terminated", ""),
            ended=v.get("ended", ""),
            started=float(v.get("started") or 0),
            rev=int(v["rev"]),
        )
    except (KeyError, IndexError) as exc:
        raise ValueError(f"malformed call record: {exc!r}") from exc


#: Computes a record's next version from the current one (itself: no change);
#: None declines (the record is left as it is).
Change = Callable[[CallRecord], CallRecord | None]


class CallStore:
    def __init__(
        self,
        client: redis.Redis,
        default_policy: Policy = Policy.SECURE_ONLY,
        replication: Replication = UNWAITED,
    ) -> None:
        self.redis = client
        #: Each step of a call's record is on the replicas before it is acted on.
        self.replication = replication
        #: The policy of records that name none (or an unknown one).
        self.default_policy = default_policy
        self._compare_and_set = client.register_script(_COMPARE_AND_SET)

    @staticmethod
    def key(call_id: str) -> str:
        return CALL_KEY.format(call_id=call_id)

    async def get(self, call_id: str) -> CallRecord | None:
        return self._decoded(call_id, await self.redis.hgetall(self.key(call_id)))

    def _decoded(self, call_id: str, raw: Mapping[bytes | str, bytes | str]) -> CallRecord | None:
        if not raw:
            return None
        values = {text(k): text(v) for k, v in raw.items()}
        try:
            return decode(call_id, values, self.default_policy)
        except ValueError:
            log.warning("unreadable call record", extra={"call_id": call_id})
            return None

    async def _write(self, record: CallRecord, at: int, new: bool = False) -> CallRecord | None:
        """Store ``record`` if the stored one is still at revision ``at`` (0: none);
        ``new``: it is a new call's (it joins the index of live calls)."""
        ttl = ENDED_TTL if record.ended else CALL_TTL
        pairs = [x for item in encode(record).items() for x in item]
        async with self.replication.durable(self.redis) as client:
            written = await self._compare_and_set(
                keys=[self.key(record.call_id)], args=[at, ttl, *pairs], client=client
            )
            if not written:
                return None
            if record.ended:
                await client.zrem(CALLS_KEY, record.call_id)
            elif new:
                await client.zadd(CALLS_KEY, {record.call_id: record.started})
                await client.expire(CALLS_KEY, CALL_TTL)
        return replace(record, rev=at + 1)

    async def create(
        self, record: CallRecord, replacing: CallRecord | None = None
    ) -> CallRecord | None:
        """Store a new call's record where there is none (or still ``replacing``): the
        record as stored, or None when another writer got there first."""
        started = replace(record, started=record.started or time.time())
        return await self._write(started, replacing.rev if replacing else 0, new=True)

    async def change(self, call_id: str, step: Change) -> CallRecord | None:
        """Apply ``step`` to the stored record atomically (retried while others write):
        the record as stored after it, or None when there is none or ``step`` declined."""
        for _ in range(WRITE_ATTEMPTS):
            record = await self.get(call_id)
            if record is None:
                return None
            after = step(record)
            if after is None or after == record:
                return after
            written = await self._write(after, record.rev)
            if written is not None:
                return written
            CONFLICTS.inc()
        log.warning("call record kept changing under us", extra={"call_id": call_id})
        return None

    async def delete(self, record: CallRecord) -> None:
        """Forget a record that never became a call (its allocation failed)."""
        await self.redis.delete(self.key(record.call_id))
        await self.redis.zrem(CALLS_KEY, record.call_id)

    async def touch(self, call_id: str) -> None:
        """A live call lasts: its record's time to live starts again (ended ones are left)."""
        if await self.redis.zscore(CALLS_KEY, call_id) is None:
            return
        await self.redis.expire(self.key(call_id), CALL_TTL)
        await self.redis.expire(CALLS_KEY, CALL_TTL)

    async def live(self, limit: int) -> list[CallRecord]:
        """The live calls, newest first, at most ``limit``; read LIVE_BATCH records per
        round trip (a lost relay's calls are looked up among all of them at once)."""
        members = await self.redis.zrevrange(CALLS_KEY, 0, max(0, limit - 1))
        ids = [text(i) for i in members if isinstance(i, bytes | str)]
        found = []
        for first in range(0, len(ids), LIVE_BATCH):
            batch = ids[first : first + LIVE_BATCH]
            async with self.redis.pipeline(transaction=False) as pipe:
                for call_id in batch:
                    pipe.hgetall(self.key(call_id))
                raws = await pipe.execute()
            gone = []
            for call_id, raw in zip(batch, raws, strict=True):
                record = self._decoded(call_id, raw)
                if record is None or record.ended:
                    gone.append(call_id)
                else:
                    found.append(record)
            if gone:
                await self.redis.zrem(CALLS_KEY, *gone)
        return found
