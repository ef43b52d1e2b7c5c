"""The location service in Redis: bindings of each address of record, and replicas.

Every record has a TTL, so nothing outlives the registrations that made it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as redis

from quietwire.rpc.signaling.v1.signaling_pb2 import Registration
from quietwire.runtime.redisclient import UNWAITED, LuaScript, Replication

#: Hash per AOR: field = binding id (instance + reg-id, or the contact URI),
#: value = ``<expires ms> <cseq> <call-id>\n`` + a serialized ``Registration``
#: (the prefix lets the script below expire and order bindings without
#: protobuf). Key TTL: the longest registration allowed, renewed on each write.
LOCATION_KEY = "qw:loc:{{{aor}}}"

#: Apply a REGISTER's changes and return the live bindings, in one round trip.
#: KEYS[1]: the AOR hash. ARGV[1]: now in ms, ARGV[2]: key TTL, ARGV[3]: the
#: REGISTER's Call-ID, ARGV[4]: its CSeq, ARGV[5]: "1" to clear first, then
#: (field, value) pairs, one per field, a value live (written) or empty (the
#: field removed). Returns the values of the other fields still live (the
#: caller has those it wrote), or {"out-of-order"} without changing anything
#: when a binding already holds a newer CSeq of the same Call-ID (RFC 3261
#: section 10.3 step 7).
#:
#: Redis's Lua hashes every string that enters it whole, and each redis.call,
#: table, capture and tonumber costs more than the command it runs, so: the
#: hash is read once (the order check and the expiry sweep share the HGETALL),
#: new values are not sent back, numbers are parsed only when compared,
#: and a single change (a REGISTER's usual one) is compared without a table.
#: The key's TTL is renewed when a binding is written: it already outlives every
#: binding written before, so a lookup or a removal leaves it.
_UPDATE = """
local key, call_id, single = KEYS[1], ARGV[3], ARGV[6]
local all, live, changes, gone, now, cseq = {}, {}
if #ARGV > 7 then
  changes = {}
  for i = 6, #ARGV, 2 do changes[ARGV[i]] = true end
end
if ARGV[5] == '1' then redis.call('DEL', key) else all = redis.call('HGETALL', key) end
for i = 1, #all, 2 do
  local field, value = all[i], all[i + 1]
  local changed
  if changes then changed = changes[field] else changed = field == single end
  if changed then
    local seen, cid = string.match(value, '^%d+ (%d+) (%S+)\\n')
    if cid == call_id then
      cseq = cseq or tonumber(ARGV[4])
      if tonumber(seen) >= cseq then return {'out-of-order'} end
    end
  else
    now = now or tonumber(ARGV[1])
    local expires = tonumber(string.match(value, '^(%d+) '))
    if expires and expires > now then
      live[#live + 1] = value
    else
      gone = gone or {}
      gone[#gone + 1] = field
    end
  end
end
if gone then
  for i = 1, #gone, 1000 do redis.call('HDEL', key, unpack(gone, i, math.min(i + 999, #gone))) end
end
local written = false
for i = 6, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', key, ARGV[i])
  else
    redis.call('HSET', key, ARGV[i], ARGV[i + 1])
    written = true
  end
end
if written then redis.call('EXPIRE', key, ARGV[2]) end
return live
"""


class OutOfOrder(Exception):
    """A REGISTER older than the binding it would change."""


class Unproven(Exception):
    """A :class:`Precondition` did not hold: nothing was changed."""


@dataclass(frozen=True, slots=True)
class Precondition:
    """What must hold in Redis for an update to be made, checked in its round trip.

    ``script`` is Lua run before the update's own: it reads ``KEYS[2]`` on
    (``keys``), takes ``args`` off the end of ``ARGV`` (last first), and
    returns ``{'unproven'}`` to stop before anything is changed.
    """

    script: str
    keys: tuple[str, ...]
    args: tuple[str | int, ...]

    def then(self, other: Precondition) -> Precondition:
        """This check and then ``other``'s, in one script; what either stops
        changes nothing of the other's. This one must take its keys off the end
        of KEYS and no args (as :meth:`.users.UserStore.existing` does), so
        ``other`` finds its own as it would alone."""
        if self.args:
            raise ValueError("only a precondition without args goes first")
        return Precondition(self.script + other.script, (*other.keys, *self.keys), other.args)


def binding_id(contact: str, instance: str, reg_id: int) -> str:
    """RFC 5626: one binding per instance and reg-id; otherwise per contact URI."""
    return f"{instance}#{reg_id}" if instance else contact


def encode(reg: Registration) -> bytes:
    prefix = f"{_expires_ms(reg)} {reg.cseq} {reg.call_id or '-'}\n"
    return prefix.encode() + reg.SerializeToString()


def decode(value: bytes | str) -> Registration:
    raw = value if isinstance(value, bytes) else value.encode()
    return Registration.FromString(raw.split(b"\n", 1)[1])


@dataclass(frozen=True, slots=True)
class Change:
    """One binding to write (``reg``) or to remove (``reg`` is None)."""

    field: str
    reg: Registration | None


def _final(changes: list[Change], now_ms: int) -> dict[str, Registration | None]:
    """Each field's last change, in the order fields first appear (what writing
    them one by one leaves); a binding already expired at ``now_ms`` is removed,
    not written. The script then needs neither a table of fields nor a parse
    of each new value."""
    final: dict[str, Registration | None] = {}
    for change in changes:
        reg = change.reg
        final[change.field] = reg if reg is not None and _expires_ms(reg) > now_ms else None
    return final


def _expires_ms(reg: Registration) -> int:
    """The expiry the value's prefix carries (:func:`encode`)."""
    return int(reg.expires_at_unix * 1000)


class LocationStore:
    def __init__(
        self, client: redis.Redis, max_expires: int, replication: Replication = UNWAITED
    ) -> None:
        self.redis = client
        self.max_expires = max_expires
        #: A REGISTER is answered once its bindings are on the replicas.
        self.replication = replication
        self._update = LuaScript(_UPDATE)
        #: The update behind each precondition's script (a handful: one per caller).
        self._guarded: dict[str, LuaScript] = {}

    def _key(self, aor: str) -> str:
        return LOCATION_KEY.format(aor=aor)

    async def update(
        self,
        aor: str,
        changes: list[Change],
        *,
        call_id: str = "-",
        cseq: int = 0,
        clear: bool = False,
        precondition: Precondition | None = None,
    ) -> list[Registration]:
        """Apply ``changes`` atomically and return the live bindings of ``aor``.

        With a ``precondition``, it is checked in the same script (one round
        trip); :class:`Unproven` when it does not hold."""
        now = int(time.time() * 1000)
        args: list[str | bytes | int] = [
            now,
            self.max_expires + 60,
            call_id or "-",
            cseq,
            "1" if clear else "0",
        ]
        written: list[Registration] = []
        for field, reg in _final(changes, now).items():
            if reg is None:
                args += [field, b""]
            else:
                args += [field, encode(reg)]
                written.append(reg)
        keys = [self._key(aor)]
        script = self._update
        if precondition is not None:
            script = self._script(precondition.script)
            keys += precondition.keys
            args += precondition.args
        if (changes or clear) and self.replication.replicas:
            live = await self.replication.durably(
                self.redis, lambda client: script(client, keys, args)
            )
        else:  # a lookup (it may drop expired bindings: nothing to keep), or no replicas
            live = await script(self.redis, keys, args)
        if live and live[0] in (b"out-of-order", "out-of-order"):
            raise OutOfOrder(aor)
        if live and live[0] in (b"unproven", "unproven"):
            raise Unproven(aor)
        return [*(decode(v) for v in live), *written]

    def _script(self, precondition: str) -> LuaScript:
        script = self._guarded.get(precondition)
        if script is None:
            script = self._guarded[precondition] = LuaScript(precondition + _UPDATE)
        return script

    async def bindings(
        self, aor: str, precondition: Precondition | None = None
    ) -> list[Registration]:
        """Live bindings of ``aor``; expired ones are removed on the way.
        :class:`Unproven` when a ``precondition`` does not hold."""
        return await self.update(aor, [], precondition=precondition)

    async def put(self, reg: Registration) -> None:
        field = binding_id(reg.contact, reg.instance_id, reg.reg_id)
        await self.update(reg.aor, [Change(field, reg)], call_id=reg.call_id, cseq=reg.cseq)

    async def remove(self, aor: str, contact: str, instance: str, reg_id: int) -> None:
        await self.update(aor, [Change(binding_id(contact, instance, reg_id), None)])

    async def clear(self, aor: str) -> None:
        await self.update(aor, [], clear=True)
