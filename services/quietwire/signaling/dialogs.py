"""Established calls, kept so the platform can end one (``TerminateCall``) or
move its media (``MoveCall``).

At the 2xx of an initial INVITE the proxy records what a BYE to each side
needs: both flows, both Contacts and both tagged addresses. Any replica can
then end the call with a BYE to each phone (RFC 3261 section 15.1.1), acting
as the other party, with a ``Reason`` (RFC 3326) saying why. The record goes
with the call's BYE.

Beside it, per party, a :class:`Leg`: the last SDP forwarded to that phone
(what a move re-points) and the CSeq bookkeeping that lets the platform send
its own requests in the dialog. A request the platform sends as party P takes
a number in P's direction; P's own later requests are then forwarded with
their CSeq raised by an offset (and their responses given back the phone's
number), so the other phone still sees numbers that go up (RFC 3261 section
12.2.2) — what a B2BUA does. Both updates are atomic scripts, so a phone's
request racing the platform's never gets the same number.

Every read and write is one Lua script (one round trip). A party's BYE on its
own flow is checked and takes the record in the same script; the caller's ACK
of the 2xx is routed from a one-use local copy of what this replica recorded
(:mod:`.ackcopies`), without reading Redis.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as redis
from redis.typing import EncodableT

from quietwire.protocols.clock import Clock, MonotonicClock
from quietwire.protocols.randomness import POOL
from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.headers import NameAddr, Via
from quietwire.protocols.sip.message import Request
from quietwire.protocols.sip.transaction import BRANCH_COOKIE
from quietwire.runtime.redisclient import UNWAITED, LuaScript, Replication, text
from quietwire.signaling.ackcopies import AckCopies

#: String per established call: JSON, ``call_id``, ``cseq``, ``caller`` and
#: ``callee`` (each a :class:`Side`'s ``flow_id``, ``contact``, ``address``) and
#: ``caller_tag``, ``callee_tag`` (their tags, for the BYE script; absent from
#: records written before them). TTL: DIALOG_TTL.
DIALOG_KEY = "qw:dialog:{{{call_id}}}"
#: The longest call we can still end from the platform.
#: Long: a call is ended by its BYE, or by keyagreement when its media stops
#: (TerminateCall takes the record); the TTL only reclaims what nobody ended.
DIALOG_TTL = 7 * 24 * 3600
#: Hash beside the dialog, same slot: per party (``caller.`` / ``callee.`` prefix)
#: ``sdp`` the last SDP forwarded to that phone, ``cseq`` the last CSeq number the
#: phone itself used in the dialog, ``offset`` added to that phone's CSeq numbers
#: on what is forwarded from it. TTL: DIALOG_TTL (set with the dialog; the scripts
#: write only while the dialog exists, so no field outlives it).
LEGS_KEY = "qw:dialog:{{{call_id}}}:legs"
#: Our BYEs' CSeq: above anything either phone will have used (RFC 3261 section
#: 12.2.2 accepts gaps, refuses going back).
CSEQ_STEP = 1_000_000

#: Our Via for a request sent down a flow (its transport picks our port).
ViaFor = Callable[[str], str]


class Party(enum.Enum):
    """Which side of a dialog sent a request."""

    CALLER = "caller"
    CALLEE = "callee"

    __hash__ = object.__hash__  # Enum's runs in Python: members are unique


#: Each party's name in the dialog's Redis fields (``Enum.value`` runs in Python).
FIELD_NAME = {party: party.value for party in Party}


@dataclass(frozen=True, slots=True, init=False)
class Side:
    """One party: the flow it is on, its Contact, its tagged From/To value."""

    flow_id: str
    contact: str
    address: str
    #: The tag of ``address`` (None: it has none or does not parse), parsed once.
    tag: str | None = field(repr=False, compare=False)

    def __init__(self, flow_id: str, contact: str, address: str) -> None:
        # Written out: compiled with the module, where the generated one would
        # run interpreted (two per dialog made or loaded).
        try:
            tag = NameAddr.parse(address).tag
        except ParseError:
            tag = None
        object.__setattr__(self, "flow_id", flow_id)
        object.__setattr__(self, "contact", contact)
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "tag", tag)


@dataclass(frozen=True, slots=True)
class Leg:
    """What the platform tracks of one party past the dialog's start."""

    #: The last SDP forwarded to this phone (after the relay rewrite).
    sdp: bytes = b""
    #: The last CSeq number this phone itself used in the dialog (its numbering).
    cseq: int = 0
    #: Added to this phone's CSeq numbers on what is forwarded from it.
    offset: int = 0

    def forwarded(self, number: int) -> int:
        """The CSeq number the other phone sees for this phone's ``number``."""
        return number + self.offset


@dataclass(frozen=True, slots=True)
class Dialog:
    call_id: str
    cseq: int
    caller: Side
    callee: Side
    caller_leg: Leg = Leg()
    callee_leg: Leg = Leg()

    def side(self, party: Party) -> Side:
        return self.caller if party is Party.CALLER else self.callee

    def leg(self, party: Party) -> Leg:
        return self.caller_leg if party is Party.CALLER else self.callee_leg

    def party(self, request: Request) -> Party | None:
        """Who sent ``request`` in this dialog, by Call-ID and both tags (RFC 3261
        section 12.2.2); None when it is not this dialog's."""
        from_tag, to_tag = request.from_.tag, request.to.tag
        if request.call_id != self.call_id or not from_tag or not to_tag:
            return None
        for party, other in ((Party.CALLER, Party.CALLEE), (Party.CALLEE, Party.CALLER)):
            if from_tag == self.side(party).tag and to_tag == self.side(other).tag:
                return party
        return None

    def callers_own(self, request: Request, flow_id: str) -> bool:
        """``request`` is the caller's in this dialog and came on the caller's flow."""
        return self.party(request) is Party.CALLER and self.caller.flow_id == flow_id

    def byes(self, via: ViaFor, reason: str) -> list[tuple[str, Request]]:
        """A BYE to each side (its flow id first), each as if sent by the other side."""
        out = []
        for party in (Party.CALLER, Party.CALLEE):  # the callee's BYE first
            to, sender = self.side(other(party)), self.side(party)
            bye = self._request("BYE", to, sender, f"{self._bye_number(party)} BYE")
            if bye is not None:
                bye.headers.add("Via", via(to.flow_id), first=True)
                bye.headers.add("Reason", f'SIP;cause=200;text="{_quotable(reason)}"')
                out.append((to.flow_id, bye))
        return out

    def _bye_number(self, sender: Party) -> int:
        """Our BYE's CSeq as ``sender``: CSEQ_STEP above the call's first, and
        above what that phone's requests were last forwarded with."""
        leg = self.leg(sender)
        return max(self.cseq + CSEQ_STEP, leg.forwarded(leg.cseq) + 1)

    def refuse_answer(self, via: ViaFor, reason: str) -> list[Request]:
        """The ACK and BYE that end the callee's side of a 2xx we will not forward."""
        ack = self._request("ACK", self.callee, self.caller, f"{self.cseq} ACK")
        if ack is None:
            return []
        ack.headers.add("Via", via(self.callee.flow_id), first=True)
        return [ack, self.byes(via, reason)[0][1]]  # the callee's BYE first

    def request(self, method: str, to: Party, cseq: int, via: ViaFor) -> Request | None:
        """A request from the platform to party ``to`` as the other party (its
        Contact too: a target refresh keeps the other phone reachable, RFC 3261
        section 12.2.2); None when ``to``'s Contact does not parse."""
        target, sender = self.side(to), self.side(other(to))
        request = self._request(method, target, sender, f"{cseq} {method}")
        if request is not None:
            request.headers.add("Via", via(target.flow_id), first=True)
            request.headers.add("Contact", sender.contact)
        return request

    def _request(self, method: str, to: Side, sender: Side, cseq: str) -> Request | None:
        try:
            uri = NameAddr.parse(to.contact).uri
        except ParseError:
            return None
        request = Request(method=method, uri=str(uri))
        request.headers.add("Max-Forwards", "70")
        request.headers.add("From", sender.address)
        request.headers.add("To", to.address)
        request.headers.add("Call-ID", self.call_id)
        request.headers.add("CSeq", cseq)
        request.headers.add("Content-Length", "0")
        return request


def other(party: Party) -> Party:
    return Party.CALLEE if party is Party.CALLER else Party.CALLER


#: Every script below takes KEYS dialog, legs (one slot: the Call-ID is their
#: hash tag); what they read comes back raw.

#: ARGV ttl, the record (JSON), then the legs' field, value pairs: both written.
#: The pairs are every field a leg has (DialogStore.record), so the HSET replaces
#: whatever the legs held: no DEL first (each redis.call costs Redis's Lua more
#: than the command it runs).
_RECORD = """
redis.call('set', KEYS[1], ARGV[2], 'ex', ARGV[1])
redis.call('hset', KEYS[2], unpack(ARGV, 3))
redis.call('expire', KEYS[2], ARGV[1])
return 1
"""
#: The record and its legs ({record or false, {field, value...}}), left in place.
_GET = """
return {redis.call('get', KEYS[1]), redis.call('hgetall', KEYS[2])}
"""
#: The record and its legs, removed (nil: no record).
_TAKE = """
local record = redis.call('getdel', KEYS[1])
local legs = redis.call('hgetall', KEYS[2])
redis.call('del', KEYS[2])
if not record then return nil end
return {record, legs}
"""
#: ARGV Call-ID, From tag, To tag, flow id of a BYE: the record and its legs
#: and 1 when the BYE is a party's own (Call-ID and both tags, caller first, as
#: Dialog.party) on that party's flow (as membership), the record then removed;
#: 0 and the record left otherwise (nil: no record). A record without the tags
#: (written before they were) is never taken here.
_BYE = """
local raw = redis.call('get', KEYS[1])
if not raw then return nil end
local legs = redis.call('hgetall', KEYS[2])
local ok, record = pcall(cjson.decode, raw)
if ok and type(record) == 'table' and record.call_id == ARGV[1]
    and ARGV[2] ~= '' and ARGV[3] ~= '' then
  local party
  if ARGV[2] == record.caller_tag and ARGV[3] == record.callee_tag then
    party = record.caller
  elseif ARGV[2] == record.callee_tag and ARGV[3] == record.caller_tag then
    party = record.callee
  end
  if type(party) == 'table' and party.flow_id == ARGV[4] then
    redis.call('del', KEYS[1], KEYS[2])
    return {raw, legs, 1}
  end
end
return {raw, legs, 0}
"""
#: ARGV field, value...: set while the dialog exists (1), else 0.
_SET = """
if redis.call('exists', KEYS[1]) == 0 then return 0 end
redis.call('hset', KEYS[2], unpack(ARGV))
return 1
"""
#: ARGV party, number: a phone's request: its number noted, the offset to add
#: returned (-1: no such dialog).
_NOTE = """
if redis.call('exists', KEYS[1]) == 0 then return -1 end
redis.call('hset', KEYS[2], ARGV[1] .. '.cseq', ARGV[2])
return tonumber(redis.call('hget', KEYS[2], ARGV[1] .. '.offset') or '0')
"""
#: ARGV party: a number the platform takes in ``party``'s direction, one above
#: the last that phone's requests were forwarded with; the phone's later
#: requests go above it (-1: no such dialog).
_TAKE_NUMBER = """
if redis.call('exists', KEYS[1]) == 0 then return -1 end
local offset = redis.call('hincrby', KEYS[2], ARGV[1] .. '.offset', 1)
return tonumber(redis.call('hget', KEYS[2], ARGV[1] .. '.cseq') or '0') + offset
"""

_RECORD_SCRIPT = LuaScript(_RECORD)
_GET_SCRIPT = LuaScript(_GET)
_TAKE_SCRIPT = LuaScript(_TAKE)
_BYE_SCRIPT = LuaScript(_BYE)
_SET_SCRIPT = LuaScript(_SET)
_NOTE_SCRIPT = LuaScript(_NOTE)
_TAKE_NUMBER_SCRIPT = LuaScript(_TAKE_NUMBER)


class DialogStore:
    """The dialogs in Redis, and one-use local copies of those this replica
    recorded, for their callers' ACKs (:mod:`.ackcopies`). Every change made
    through the store drops the dialog's copy."""

    def __init__(
        self,
        client: redis.Redis,
        replication: Replication = UNWAITED,
        clock: Clock | None = None,
    ) -> None:
        self.redis = client
        #: A recorded call is on the replicas before its 2xx goes on.
        self.replication = replication
        self.copies = AckCopies(clock or MonotonicClock())

    async def record(self, dialog: Dialog) -> None:
        """Write the dialog of a 2xx this replica forwards, and keep its copy."""
        self.copies.drop(dialog.call_id)
        args: list[EncodableT] = [DIALOG_TTL, _record(dialog)]
        for party, leg in ((Party.CALLER, dialog.caller_leg), (Party.CALLEE, dialog.callee_leg)):
            name = FIELD_NAME[party]
            args += (f"{name}.sdp", leg.sdp, f"{name}.cseq", leg.cseq, f"{name}.offset", leg.offset)
        keys = _keys(dialog.call_id)
        await self.replication.durably(
            self.redis, lambda client: _RECORD_SCRIPT(client, keys, args)
        )
        self.copies.keep(dialog)

    async def get(self, call_id: str) -> Dialog | None:
        """The call's record, left in place."""
        raw, legs = await _GET_SCRIPT(self.redis, _keys(call_id), ())
        return _loaded(raw, legs)

    async def take(self, call_id: str) -> Dialog | None:
        """The call's record, removed (whoever takes it ends the call)."""
        self.copies.drop(call_id)
        reply = await _TAKE_SCRIPT(self.redis, _keys(call_id), ())
        return None if reply is None else _loaded(*reply)

    async def for_ack(self, request: Request, flow_id: str) -> Dialog | None:
        """The dialog of an ACK of a 2xx arriving on ``flow_id``: the local copy
        when it is the caller's ACK on the caller's flow (used up), else Redis's."""
        copy = self.copies.use(request, flow_id)
        return copy if copy is not None else await self.get(request.call_id)

    async def for_bye(self, request: Request, flow_id: str) -> tuple[Dialog | None, bool]:
        """The dialog of a BYE arriving on ``flow_id``, and whether it was taken:
        it is, in the same round trip, when the BYE is a party's own on that
        party's flow (what :func:`.routing.membership` trusts). Any other BYE
        changes nothing here, the copy included: a party's own from another
        flow is taken (:meth:`take`) once it is authenticated."""
        call_id = request.call_id
        args = (call_id, request.from_.tag or "", request.to.tag or "", flow_id)
        reply = await _BYE_SCRIPT(self.redis, _keys(call_id), args)
        if reply is None:
            return None, False
        raw, legs, taken = reply
        if taken:
            self.copies.drop(call_id)
        return _loaded(raw, legs), taken == 1

    async def forwarded_sdp(self, call_id: str, to: Party, sdp: bytes) -> None:
        """``sdp`` went to party ``to`` (an offer or answer that took effect)."""
        await self._change(_SET_SCRIPT, call_id, f"{FIELD_NAME[to]}.sdp", sdp)

    async def phone_request(self, call_id: str, party: Party, number: int) -> int | None:
        """Party's own request numbered ``number``: noted, and the offset to add to
        it returned (None when the dialog is gone)."""
        offset = int(await self._change(_NOTE_SCRIPT, call_id, FIELD_NAME[party], number))
        return None if offset < 0 else offset

    async def platform_number(self, call_id: str, sender: Party) -> int | None:
        """A CSeq number for a request the platform sends as ``sender`` (None when
        the dialog is gone)."""
        number = int(await self._change(_TAKE_NUMBER_SCRIPT, call_id, FIELD_NAME[sender]))
        return None if number < 0 else number

    async def _change(self, script: LuaScript, call_id: str, *args: str | bytes | int) -> Any:
        self.copies.drop(call_id)
        return await script(self.redis, _keys(call_id), args)


def _keys(call_id: str) -> tuple[str, str]:
    return DIALOG_KEY.format(call_id=call_id), LEGS_KEY.format(call_id=call_id)


def _record(dialog: Dialog) -> str:
    """The record's JSON: both sides, and both tags for the BYE script."""
    caller, callee = dialog.caller, dialog.callee
    return json.dumps(
        {
            "call_id": dialog.call_id,
            "cseq": dialog.cseq,
            "caller": _side(caller),
            "callee": _side(callee),
            "caller_tag": caller.tag or "",
            "callee_tag": callee.tag or "",
        }
    )


def _side(side: Side) -> dict[str, str]:
    return {"flow_id": side.flow_id, "contact": side.contact, "address": side.address}


def _loaded(raw: bytes | None, legs: list[bytes]) -> Dialog | None:
    """A record and its legs as the scripts give them (the legs as field, value...)."""
    if raw is None:
        return None
    data = json.loads(raw)
    fields = {text(legs[i]): legs[i + 1] for i in range(0, len(legs), 2)}
    return Dialog(
        data["call_id"],
        int(data["cseq"]),
        _loaded_side(data["caller"]),
        _loaded_side(data["callee"]),
        _leg(fields, Party.CALLER),
        _leg(fields, Party.CALLEE),
    )


def _loaded_side(data: dict[str, str]) -> Side:
    return Side(data["flow_id"], data["contact"], data["address"])


def _leg(fields: dict[str, bytes], party: Party) -> Leg:
    name = FIELD_NAME[party]
    cseq, offset = fields.get(f"{name}.cseq"), fields.get(f"{name}.offset")
    return Leg(fields.get(f"{name}.sdp") or b"", int(cseq or 0), int(offset or 0))


def new_branch() -> str:
    return f"{BRANCH_COOKIE}qw{POOL.hex(8)}"


def our_via(
    host: str, port: int, replica: str, branch: str | None = None, transport: str = "TLS"
) -> str:
    """The Via a replica puts on what it sends: ``qwr`` names it, for the responses."""
    return Via(transport, host, port, {"branch": branch or new_branch(), "qwr": replica}).wire()


def _quotable(reason: str) -> str:
    return "".join(c for c in reason if c not in '"\\\r\n')[:120]
