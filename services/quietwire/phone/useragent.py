"""The phone's SIP user agent: register with digest, place and answer calls (RFC 3261).

Over one TLS connection, so there are no retransmissions: a request waits for
its final response, provisional ones are kept, and one 401/407 challenge is
answered with the user's credentials. Requests from the network land in
:attr:`UserAgent.requests`, but a BYE of a call already ended (:attr:`UserAgent.ended`),
which is answered 481 (RFC 3261 section 15.1.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from dataclasses import dataclass, field

from quietwire.phone.connection import SipConnection
from quietwire.protocols.sip.digest import client_credentials, format_credentials, parse_challenge
from quietwire.protocols.sip.headers import NameAddr, Via
from quietwire.protocols.sip.message import Request, Response, reply
from quietwire.protocols.sip.transaction import BRANCH_COOKIE, ClientKey, ack_for
from quietwire.protocols.sip.uri import SipUri


def new_branch() -> str:
    return f"{BRANCH_COOKIE}{secrets.token_hex(8)}"


@dataclass(slots=True)
class Exchange:
    """What came back for one request."""

    provisional: list[Response] = field(default_factory=list)
    final: Response | None = None


@dataclass(slots=True)
class Dialog:
    """The state a UA keeps for one call (RFC 3261 section 12)."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    remote_target: str
    route_set: list[str]
    local_cseq: int


class UserAgent:
    def __init__(
        self,
        connection: SipConnection,
        user: str,
        password: str,
        domain: str,
        port: int = 5061,
    ) -> None:
        self.connection = connection
        self.user, self.password, self.domain, self.port = user, password, domain, port
        self.instance = f"<urn:uuid:{uuid.uuid4()}>"
        self.aor = f"sip:{user}@{domain}"
        self.gruu: str | None = None
        self.requests: asyncio.Queue[Request] = asyncio.Queue()
        self._pending: dict[ClientKey, tuple[Exchange, asyncio.Future[Response]]] = {}
        #: The INVITE in flight per Call-ID, as last sent (what a CANCEL must match).
        self.inviting: dict[str, Request] = {}
        #: Call-IDs of the calls that ended here: a BYE still arriving for one
        #: (the peer hung up as we did, and its BYE came after ours was answered)
        #: is answered 481, not left for a call that no longer reads requests.
        self.ended: set[str] = set()
        self._cseq = 0
        self._nc = 0
        self._dispatcher = asyncio.create_task(self._dispatch())

    @property
    def contact(self) -> str:
        host, port = self.connection.local
        return f"<sip:{self.user}@{host}:{port};transport=tls>"

    def _via(self) -> str:
        host, port = self.connection.local
        return str(Via("TLS", host, port, {"branch": new_branch(), "rport": None, "alias": None}))

    async def use(self, connection: SipConnection) -> None:
        """Carry on over a new connection (the old flow failed, RFC 5626 section
        4.5): requests still waiting for an answer on the old one fail at once
        with :class:`ConnectionError`; register again to move the binding."""
        self._dispatcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._dispatcher
        for _, future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("the flow failed"))
        old, self.connection = self.connection, connection
        self._dispatcher = asyncio.create_task(self._dispatch())
        await old.close()

    async def _dispatch(self) -> None:
        while True:
            message = await self.connection.incoming.get()
            if isinstance(message, Request):
                if message.method == "BYE" and message.call_id in self.ended:
                    gone = self.answer(message, 481, "Call/Transaction Does Not Exist")
                    await self.connection.send(gone)
                else:
                    self.requests.put_nowait(message)
                continue
            with contextlib.suppress(ValueError, IndexError):
                found = self._pending.get(ClientKey.of(message))
                if found is None:
                    continue
                exchange, future = found
                if message.status >= 300 and message.cseq.method == "INVITE":
                    await self._ack_failure(message)
                if message.status < 200:
                    exchange.provisional.append(message)
                elif not future.done():
                    exchange.final = message
                    future.set_result(message)

    def build(
        self,
        method: str,
        uri: str,
        *,
        to: str | None = None,
        call_id: str | None = None,
        from_tag: str | None = None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        self._cseq += 1
        request = Request(method=method, uri=uri)
        request.headers.add("Via", self._via())
        request.headers.add("Max-Forwards", "70")
        request.headers.add("From", f"<{self.aor}>;tag={from_tag or secrets.token_hex(5)}")
        request.headers.add("To", to or f"<{uri}>")
        request.headers.add("Call-ID", call_id or f"{uuid.uuid4()}")
        request.headers.add("CSeq", f"{self._cseq} {method}")
        request.headers.add("Contact", self.contact)
        request.headers.add("Supported", "outbound, gruu")
        if content_type:
            request.headers.add("Content-Type", content_type)
        request.body = body
        return request

    async def send(self, request: Request, timeout: float = 10.0) -> Exchange:
        """Send a request and wait for its final response, answering one challenge."""
        exchange = await self._send_once(request, timeout)
        final = exchange.final
        if final is not None and final.status in (401, 407):
            header = "WWW-Authenticate" if final.status == 401 else "Proxy-Authenticate"
            challenges = [parse_challenge(v) for v in final.headers.get_all(header)]
            if challenges:
                retry = request.copy()
                retry.headers.pop_first("Via")
                retry.headers.add("Via", self._via(), first=True)
                self._cseq += 1
                retry.headers.set("CSeq", f"{self._cseq} {request.method}")
                self._nc += 1
                credentials = client_credentials(
                    challenges[0],
                    self.user,
                    self.password,
                    request.method,
                    request.uri,
                    self._nc,
                    secrets.token_hex(8),
                )
                auth_header = "Authorization" if final.status == 401 else "Proxy-Authorization"
                retry.headers.set(auth_header, format_credentials(credentials))
                exchange = await self._send_once(retry, timeout)
        return exchange

    async def _send_once(self, request: Request, timeout: float) -> Exchange:
        key = ClientKey.of(request)
        exchange = Exchange()
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[key] = (exchange, future)
        if request.method == "INVITE":
            self.inviting[request.call_id] = request
        try:
            await self.connection.send(request)
            await asyncio.wait_for(asyncio.shield(future), timeout)
        finally:
            self._pending.pop(key, None)
            if self.inviting.get(request.call_id) is request:
                del self.inviting[request.call_id]
        return exchange

    async def _ack_failure(self, response: Response) -> None:
        """ACK a non-2xx final response to our INVITE (RFC 3261 section 17.1.1.3)."""
        invite = self.inviting.get(response.call_id)
        if invite is not None:
            await self.connection.send(ack_for(invite, response))

    async def cancel(self, call_id: str) -> None:
        """CANCEL the INVITE in flight on ``call_id`` (RFC 3261 section 9.1)."""
        invite = self.inviting.get(call_id)
        if invite is None:
            return
        cancel = Request(method="CANCEL", uri=invite.uri)
        for name in ("Via", "From", "To", "Call-ID", "Route"):
            values = invite.headers.get_all(name)
            for value in values[:1] if name == "Via" else values:
                cancel.headers.add(name, value)
        cancel.headers.add("CSeq", f"{invite.cseq.number} CANCEL")
        cancel.headers.add("Max-Forwards", "70")
        await self.connection.send(cancel)

    async def register(self, expires: int = 600) -> Response:
        request = self.build("REGISTER", f"sip:{self.domain}", to=f"<{self.aor}>")
        request.headers.set("Contact", f'{self.contact};+sip.instance="{self.instance}";reg-id=1')
        request.headers.add("Expires", str(expires))
        exchange = await self.send(request)
        assert exchange.final is not None
        for contact in exchange.final.contacts:
            if contact.params.get("+sip.instance") == self.instance:
                self.gruu = contact.params.get("pub-gruu")
        return exchange.final

    def answer(self, request: Request, status: int, reason: str, body: bytes = b"") -> Response:
        response = reply(request, status, reason, to_tag=secrets.token_hex(5))
        response.headers.add("Contact", f"<{self.gruu}>" if self.gruu else self.contact)
        if body:
            response.headers.add("Content-Type", "application/sdp")
            response.body = body
        return response

    def dialog_from_response(self, request: Request, response: Response) -> Dialog:
        """The caller's dialog once a 2xx arrives (RFC 3261 section 12.1.2)."""
        routes = list(reversed(response.headers.get_all("Record-Route")))
        target = response.contacts[0].uri
        return Dialog(
            request.call_id,
            request.from_.tag or "",
            response.to.tag or "",
            str(request.from_.uri),
            str(request.to.uri),
            str(target),
            routes,
            request.cseq.number,
        )

    def dialog_from_request(self, request: Request, response: Response) -> Dialog:
        """The callee's dialog once it answers (RFC 3261 section 12.1.1)."""
        return Dialog(
            request.call_id,
            response.to.tag or "",
            request.from_.tag or "",
            str(request.to.uri),
            str(request.from_.uri),
            str(request.contacts[0].uri),
            request.headers.get_all("Record-Route"),
            0,
        )

    def in_dialog(self, dialog: Dialog, method: str, cseq: int | None = None) -> Request:
        if cseq is None:
            self._cseq = max(self._cseq, dialog.local_cseq) + 1
            dialog.local_cseq = self._cseq
        request = Request(method=method, uri=dialog.remote_target)
        request.headers.add("Via", self._via())
        request.headers.add("Max-Forwards", "70")
        request.headers.add("From", f"<{dialog.local_uri}>;tag={dialog.local_tag}")
        request.headers.add("To", f"<{dialog.remote_uri}>;tag={dialog.remote_tag}")
        request.headers.add("Call-ID", dialog.call_id)
        request.headers.add("CSeq", f"{cseq if cseq is not None else dialog.local_cseq} {method}")
        for route in dialog.route_set:
            request.headers.add("Route", route)
        return request

    async def close(self) -> None:
        self._dispatcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._dispatcher
        await self.connection.close()


def parse_uri(text: str) -> SipUri:
    return NameAddr.parse(text).uri if "<" in text else SipUri.parse(text)
