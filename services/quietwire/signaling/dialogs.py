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
"""

from __future__ import annotations

import enum
import json
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as redis
from redis.commands.core import AsyncScript
from redis.typing import EncodableT, FieldT

from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.headers import NameAddr, Via
from quietwire.protocols.sip.message import Request
from quietwire.protocols.sip.transaction import BRANCH_COOKIE
from quietwire.runtime.redisclient import UNWAITED, Replication, text

#: String per established call: a JSON :class:`Dialog`. TTL: DIALOG_TTL.
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


@dataclass(frozen=True, slots=True)
class Side:
    """One party: the flow it is on, its Contact, its tagged From/To value."""

    flow_id: str
    contact: str
    address: str

    @property
    def tag(self) -> str | None:
        try:
            return NameAddr.parse(self.address).tag
        except ParseError:
            return None


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


#: KEYS dialog, legs; ARGV field, value...: set while the dialog exists (1), else 0.
_SET = """
if redis.call('exists', KEYS[1]) == 0 then return 0 end
redis.call('hset', KEYS[2], unpack(ARGV))
return 1
"""
#: KEYS dialog, legs; ARGV party, number: a phone's request: its number noted,
#: the offset to add returned (-1: no such dialog).
_NOTE = """
if redis.call('exists', KEYS[1]) == 0 then return -1 end
redis.call('hset', KEYS[2], ARGV[1] .. '.cseq', ARGV[2])
return tonumber(redis.call('hget', KEYS[2], ARGV[1] .. '.offset') or '0')
"""
#: KEYS dialog, legs; ARGV party: a number the platform takes in ``party``'s
#: direction, one above the last that phone's requests were forwarded with; the
#: phone's later requests go above it (-1: no such dialog).
_TAKE_NUMBER = """
if redis.call('exists', KEYS[1]) == 0 then return -1 end
local offset = redis.call('hincrby', KEYS[2], ARGV[1] .. '.offset', 1)
return tonumber(redis.call('hget', KEYS[2], ARGV[1] .. '.cseq') or '0') + offset
"""


class DialogStore:
    def __init__(self, client: redis.Redis, replication: Replication = UNWAITED) -> None:
        self.redis = client
        #: A recorded call is on the replicas before its 2xx goes on.
        self.replication = replication
        self._set = client.register_script(_SET)
        self._note = client.register_script(_NOTE)
        self._take_number = client.register_script(_TAKE_NUMBER)

    async def record(self, dialog: Dialog) -> None:
        key = DIALOG_KEY.format(call_id=dialog.call_id)
        legs = LEGS_KEY.format(call_id=dialog.call_id)
        fields: dict[FieldT, EncodableT] = {
            f"{party.value}.{name}": value
            for party in Party
            for name, value in asdict(dialog.leg(party)).items()
        }
        record = {k: v for k, v in asdict(dialog).items() if not k.endswith("_leg")}
        async with (
            self.replication.durable(self.redis) as client,
            client.pipeline(transaction=True) as pipe,
        ):
            pipe.set(key, json.dumps(record), ex=DIALOG_TTL)
            pipe.delete(legs)
            pipe.hset(legs, mapping=fields)
            pipe.expire(legs, DIALOG_TTL)
            await pipe.execute()

    async def get(self, call_id: str) -> Dialog | None:
        """The call's record, left in place."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(DIALOG_KEY.format(call_id=call_id))
            pipe.hgetall(LEGS_KEY.format(call_id=call_id))
            raw, legs = await pipe.execute()
        return _loaded(raw, legs)

    async def take(self, call_id: str) -> Dialog | None:
        """The call's record, removed (whoever takes it ends the call)."""
        legs = LEGS_KEY.format(call_id=call_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.getdel(DIALOG_KEY.format(call_id=call_id))
            pipe.hgetall(legs)
            pipe.delete(legs)
            raw, fields, _ = await pipe.execute()
        return _loaded(raw, fields)

    async def forwarded_sdp(self, call_id: str, to: Party, sdp: bytes) -> None:
        """``sdp`` went to party ``to`` (an offer or answer that took effect)."""
        await self._run(self._set, call_id, f"{to.value}.sdp", sdp)

    async def phone_request(self, call_id: str, party: Party, number: int) -> int | None:
        """Party's own request numbered ``number``: noted, and the offset to add to
        it returned (None when the dialog is gone)."""
        offset = int(await self._run(self._note, call_id, party.value, number))
        return None if offset < 0 else offset

    async def platform_number(self, call_id: str, sender: Party) -> int | None:
        """A CSeq number for a request the platform sends as ``sender`` (None when
        the dialog is gone)."""
        number = int(await self._run(self._take_number, call_id, sender.value))
        return None if number < 0 else number

    async def _run(self, script: AsyncScript, call_id: str, *args: str | bytes | int) -> Any:
        keys = [DIALOG_KEY.format(call_id=call_id), LEGS_KEY.format(call_id=call_id)]
        return await script(keys=keys, args=list(args))


def _loaded(raw: bytes | str | None, legs: dict[bytes, bytes] | None = None) -> Dialog | None:
    if raw is None:
        return None
    data = json.loads(text(raw))
    fields = {text(k): v for k, v in (legs or {}).items()}
    return Dialog(
        data["call_id"],
        int(data["cseq"]),
        Side(**data["caller"]),
        Side(**data["callee"]),
        _leg(fields, Party.CALLER),
        _leg(fields, Party.CALLEE),
    )


def _leg(fields: dict[str, bytes], party: Party) -> Leg:
    def number(name: str) -> int:
        return int(fields.get(f"{party.value}.{name}") or 0)

    sdp = fields.get(f"{party.value}.sdp") or b""
    return Leg(sdp if isinstance(sdp, bytes) else sdp.encode(), number("cseq"), number("offset"))


def new_branch() -> str:
    return f"{BRANCH_COOKIE}qw{secrets.token_hex(8)}"


def our_via(
    host: str, port: int, replica: str, branch: str | None = None, transport: str = "TLS"
) -> str:
    """The Via a replica puts on what it sends: ``qwr`` names it, for the responses."""
    return str(Via(transport, host, port, {"branch": branch or new_branch(), "qwr": replica}))


def _quotable(reason: str) -> str:
    return "".join(c for c in reason if c not in '"\\\r\n')[:120]
