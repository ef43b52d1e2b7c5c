"""The registrar (RFC 3261 section 10.3, RFC 5626 outbound, RFC 5627 GRUU).

Only an authenticated user may register, and only their own address of record.
Each binding names the replica and the flow (TLS connection) it arrived on:
phones like Linphone never accept connections, so that flow is the only way
back to them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prometheus_client import Counter

from quietwire.protocols.randomness import POOL
from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.extensions import refuse_unsupported
from quietwire.protocols.sip.grammar import is_ascii_int
from quietwire.protocols.sip.headers import NameAddr, quote
from quietwire.protocols.sip.message import Request, Response, reply
from quietwire.rpc.signaling.v1.signaling_pb2 import Registration
from quietwire.runtime.metrics import Series
from quietwire.signaling.auth import Authenticator, Verdict
from quietwire.signaling.flows import Flow
from quietwire.signaling.locations import (
    Change,
    LocationStore,
    OutOfOrder,
    Unproven,
    binding_id,
)

#: Option tags a REGISTER may Require of us (RFC 5626, RFC 5627, RFC 3327).
OPTIONS = frozenset({"outbound", "gruu", "path"})
MIN_EXPIRES = 60
DEFAULT_EXPIRES = 3600
MAX_EXPIRES = 3600

REGISTERS = Series(Counter("quietwire_sip_registers", "REGISTER requests by outcome", ["status"]))


def pub_gruu(aor: str, instance: str) -> str:
    """The public GRUU of an instance (RFC 5627 section 3.1): the AOR with ``gr``."""
    return f"{aor};gr={instance.strip('<>')}"


@dataclass(slots=True)
class Registrar:
    domain: str
    auth: Authenticator
    locations: LocationStore
    replica: str

    async def handle(self, flow: Flow, request: Request) -> Response:
        response = await self._handle(flow, request)
        REGISTERS(str(response.status)).inc()
        return response

    async def _handle(self, flow: Flow, request: Request) -> Response:
        try:
            domain = request.request_uri.host_key
        except ParseError as exc:  # 416 for a tel: or other Request-URI
            return reply(request, exc.status, exc.reason)
        if domain != self.domain.lower():
            return reply(request, 403, "Not Our Domain")
        extension = refuse_unsupported(request, "Require", OPTIONS)
        if extension is not None:
            return extension
        try:
            request.contacts  # noqa: B018 - header inspection before auth (RFC 4475 3.1.2.13)
        except ParseError:
            return reply(request, 400, "Bad Contact")
        proven = await self._proven(flow, request)
        if proven is not None:
            return proven
        result = await self.auth.check(request, proxy=False, remembered=False)
        if result.verdict in (Verdict.CHALLENGE, Verdict.STALE):
            return self.auth.challenge(request, proxy=False, stale=result.verdict is Verdict.STALE)
        if result.verdict is Verdict.FAILED:
            return reply(request, 403, "Forbidden")
        flow.authenticated = True
        aor = self._own_aor(request, result.username)
        if aor is None:
            return reply(request, 403, "Only Your Own Address")
        try:
            bindings, changed = await self._apply(flow, request, aor)
        except _Refused as refused:
            return refused.response
        except OutOfOrder:
            return reply(request, 500, "Out Of Order Register")
        return self._ok(request, aor, bindings, changed)

    async def _proven(self, flow: Flow, request: Request) -> Response | None:
        """The answer in one Redis round trip, for credentials that verify against
        the HA1 remembered for them and bindings to add or refresh (the common
        REGISTER); None for anything else, which :meth:`_handle` then takes
        the full way (it alone answers failures and refusals)."""
        proof = self.auth.proof(request, proxy=False)
        if proof is None:
            return None
        aor = self._own_aor(request, proof.username)
        values = request.headers.get_all("Contact")
        if aor is None or not values or any(v.strip() == "*" for v in values):
            return None
        try:
            changes = self._changes(flow, request, aor, values)
            call_id, cseq = request.call_id, request.cseq.number
            bindings = await self.auth.proven(
                proof,
                lambda precondition: self.locations.update(
                    aor, changes, call_id=call_id, cseq=cseq, precondition=precondition
                ),
            )
        except (_Refused, Unproven):
            return None
        except OutOfOrder:  # the precondition held: authenticated
            flow.authenticated = True
            return reply(request, 500, "Out Of Order Register")
        flow.authenticated = True
        self._watch(flow, aor, changes)
        return self._ok(request, aor, bindings, True)

    def _own_aor(self, request: Request, username: str | None) -> str | None:
        """The To's AOR when it is the authenticated user's own, in our domain."""
        to = request.to
        if to.uri.user_unescaped != username or to.uri.host_key != self.domain.lower():
            return None
        return to.uri.aor

    def _ok(
        self, request: Request, aor: str, bindings: list[Registration], changed: bool
    ) -> Response:
        ok = reply(request, 200, "OK", to_tag=POOL.hex(5))
        now = time.time()
        for reg in bindings:
            contact = f"{reg.contact};expires={max(0, int(reg.expires_at_unix - now))}"
            if reg.instance_id:
                contact += f";+sip.instance={quote(reg.instance_id)};reg-id={reg.reg_id}"
                contact += f';pub-gruu="{pub_gruu(aor, reg.instance_id)}"'
            ok.headers.add("Contact", contact)
        ok.headers.add("Supported", "outbound, gruu, path")
        if changed and any(reg.reg_id for reg in bindings):
            ok.headers.add("Require", "outbound")
        return ok

    async def _apply(
        self, flow: Flow, request: Request, aor: str
    ) -> tuple[list[Registration], bool]:
        """Add, refresh or remove the request's bindings in one atomic update.

        Returns the bindings afterwards, and whether the request named contacts.
        """
        values = request.headers.get_all("Contact")
        if not values:
            return await self.locations.bindings(aor), False
        if any(v.strip() == "*" for v in values):
            if len(values) != 1 or _int(request.headers.get("Expires"), DEFAULT_EXPIRES) != 0:
                raise _Refused(reply(request, 400, "Bad Wildcard Contact"))
            return await self.locations.update(aor, [], clear=True), True
        changes = self._changes(flow, request, aor, values)
        self._watch(flow, aor, changes)
        call_id, cseq = request.call_id, request.cseq.number
        bindings = await self.locations.update(aor, changes, call_id=call_id, cseq=cseq)
        return bindings, True

    def _changes(self, flow: Flow, request: Request, aor: str, values: list[str]) -> list[Change]:
        """The binding each Contact value adds, refreshes or removes (``reg`` None).
        Raises :class:`_Refused` (400, 423) for one we do not take."""
        header_expires = _int(request.headers.get("Expires"), DEFAULT_EXPIRES)
        now = time.time()
        changes: list[Change] = []
        for value in values:
            try:
                contact = NameAddr.parse(value)
            except ParseError:
                raise _Refused(reply(request, 400, "Bad Contact")) from None
            expires = _int(contact.params.get("expires"), header_expires)
            if 0 < expires < MIN_EXPIRES:
                brief = reply(request, 423, "Interval Too Brief")
                brief.headers.add("Min-Expires", str(MIN_EXPIRES))
                raise _Refused(brief)
            instance = contact.params.get("+sip.instance") or ""
            reg_id = _int(contact.params.get("reg-id"), 0)
            uri = f"<{contact.uri}>"
            field = binding_id(uri, instance, reg_id)
            if expires == 0:
                changes.append(Change(field, None))
                continue
            changes.append(
                Change(
                    field,
                    Registration(
                        aor=aor,
                        contact=uri,
                        instance_id=instance,
                        reg_id=reg_id,
                        replica=self.replica,
                        flow_id=flow.id,
                        expires_at_unix=now + min(expires, MAX_EXPIRES),
                        call_id=request.call_id,
                        cseq=request.cseq.number,
                    ),
                )
            )
        return changes

    def _watch(self, flow: Flow, aor: str, changes: list[Change]) -> None:
        """Each binding written is dropped when its flow closes (:meth:`_forget`)."""
        for change in changes:
            reg = change.reg
            if reg is None:
                continue
            binding = (aor, reg.contact, reg.instance_id, reg.reg_id)
            if binding not in flow.bindings:
                flow.bindings.add(binding)
                flow.on_close.append(self._forget(flow, *binding))

    def _forget(
        self, flow: Flow, aor: str, uri: str, instance: str, reg_id: int
    ) -> Callable[[], Awaitable[None]]:
        """When the flow dies its binding is unusable (RFC 5626 section 5.2): drop it."""

        async def forget() -> None:
            for reg in await self.locations.bindings(aor):
                if (reg.contact, reg.instance_id, reg.reg_id) == (uri, instance, reg_id) and (
                    reg.flow_id == flow.id
                ):
                    await self.locations.remove(aor, uri, instance, reg_id)

        return forget


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def _int(text: str | None, default: int) -> int:
    """delta-seconds and reg-id: ASCII digits; anything else (or over ten digits)
    is treated as absent, as RFC 4475 section 3.1.2.4 allows."""
    if text is None or not is_ascii_int(text.strip()):
        return default
    return int(text.strip())
