"""Established calls, kept so the platform can end one (``TerminateCall``).

At the 2xx of an initial INVITE the proxy records what a BYE to each side
needs: both flows, both Contacts and both tagged addresses. Any replica can
then end the call with a BYE to each phone (RFC 3261 section 15.1.1), acting
as the other party, with a ``Reason`` (RFC 3326) saying why. The record goes
with the call's BYE.
"""

from __future__ import annotations

import enum
import json
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass

import redis.asyncio as redis

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
class Dialog:
    call_id: str
    cseq: int
    caller: Side
    callee: Side

    def side(self, party: Party) -> Side:
        return self.caller if party is Party.CALLER else self.callee

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
        for to, sender in ((self.callee, self.caller), (self.caller, self.callee)):
            bye = self._request("BYE", to, sender, f"{self.cseq + CSEQ_STEP} BYE")
            if bye is not None:
                bye.headers.add("Via", via(to.flow_id), first=True)
                bye.headers.add("Reason", f'SIP;cause=200;text="{_quotable(reason)}"')
                out.append((to.flow_id, bye))
        return out

    def refuse_answer(self, via: ViaFor, reason: str) -> list[Request]:
        """The ACK and BYE that end the callee's side of a 2xx we will not forward."""
        ack = self._request("ACK", self.callee, self.caller, f"{self.cseq} ACK")
        if ack is None:
            return []
        ack.headers.add("Via", via(self.callee.flow_id), first=True)
        return [ack, self.byes(via, reason)[0][1]]  # the callee's BYE first

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


class DialogStore:
    def __init__(self, client: redis.Redis, replication: Replication = UNWAITED) -> None:
        self.redis = client
        #: A recorded call is on the replicas before its 2xx goes on.
        self.replication = replication

    async def record(self, dialog: Dialog) -> None:
        key = DIALOG_KEY.format(call_id=dialog.call_id)
        async with self.replication.durable(self.redis) as client:
            await client.set(key, json.dumps(asdict(dialog)), ex=DIALOG_TTL)

    async def get(self, call_id: str) -> Dialog | None:
        """The call's record, left in place."""
        return _loaded(await self.redis.get(DIALOG_KEY.format(call_id=call_id)))

    async def take(self, call_id: str) -> Dialog | None:
        """The call's record, removed (whoever takes it ends the call)."""
        return _loaded(await self.redis.getdel(DIALOG_KEY.format(call_id=call_id)))


def _loaded(raw: bytes | str | None) -> Dialog | None:
    if raw is None:
        return None
    data = json.loads(text(raw))
    return Dialog(
        data["call_id"], int(data["cseq"]), Side(**data["caller"]), Side(**data["callee"])
    )


def new_branch() -> str:
    return f"{BRANCH_COOKIE}qw{secrets.token_hex(8)}"


def our_via(
    host: str, port: int, replica: str, branch: str | None = None, transport: str = "TLS"
) -> str:
    """The Via a replica puts on what it sends: ``qwr`` names it, for the responses."""
    return str(Via(transport, host, port, {"branch": branch or new_branch(), "qwr": replica}))


def _quotable(reason: str) -> str:
    return "".join(c for c in reason if c not in '"\\\r\n')[:120]
