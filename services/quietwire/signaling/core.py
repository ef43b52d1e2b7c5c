"""The SIP core of a signaling replica: every message from a flow comes here first.

Requests pass the per-source limits and blocks, get their Via stamped (RFC
3581 ``received``/``rport``), have malformed credentials refused, and go to
the registrar (REGISTER) or the proxy (everything else); responses go to the
proxy. Failed authentications are counted where they are checked
(:mod:`quietwire.signaling.lockout`), from the source set here.
"""

from __future__ import annotations

from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.extensions import PROXY_OPTIONS, refuse_unsupported
from quietwire.protocols.sip.message import Message, Request, reply
from quietwire.runtime.context import CallId, call_id_var
from quietwire.signaling.failures import RETRY_AFTER, failure_answer
from quietwire.signaling.flows import DatagramFlow, Flow
from quietwire.signaling.limits import SourceLimiter
from quietwire.signaling.lockout import current_source
from quietwire.signaling.proxy import Proxy
from quietwire.signaling.registrar import Registrar


class SipCore:
    def __init__(self, registrar: Registrar, proxy: Proxy, limiter: SourceLimiter) -> None:
        self.registrar = registrar
        self.proxy = proxy
        self.limiter = limiter
        self.auth = registrar.auth

    async def on_message(self, flow: Flow, message: Message) -> None:
        # Every log line and RPC of this message's handling carries its call id
        # (the gRPC client interceptor sends it on as x-call-id).
        call_id_var.set(CallId(message.call_id) if message.call_id else None)
        if not isinstance(message, Request):
            await self.proxy.response(message)
            return
        try:
            await self._request(flow, message)
        except Exception as exc:  # answered, never silence (RFC 3261 section 21.5)
            self.proxy.errors.record("core", exc)
            if message.method != "ACK":
                flow.send_message(failure_answer(message, exc))

    async def _request(self, flow: Flow, message: Request) -> None:
        source = flow.remote[0]
        current_source.set(source)
        if message.method != "ACK":
            if not self.limiter.allow(source):
                busy = reply(message, 503, "Service Unavailable")
                busy.headers.add("Retry-After", str(RETRY_AFTER))
                flow.send_message(busy)
                return
            if self.auth.lockout.blocked(source):
                flow.send_message(reply(message, 403, "Too Many Failed Attempts"))
                return
        try:
            stamp_via(flow, message)
            if message.method not in ("ACK", "CANCEL"):
                await self.auth.screen(message)
        except ParseError as exc:
            flow.send_message(reply(message, exc.status, exc.reason))
            return
        refused = refuse_unsupported(message, "Proxy-Require", PROXY_OPTIONS)
        if refused is not None:  # RFC 3261 section 16.3 item 4
            flow.send_message(refused)
            return
        if message.method == "REGISTER":
            if isinstance(flow, DatagramFlow) and flow.resend(message):
                return  # a retransmission over UDP: the same answer (RFC 3261 17.2.2)
            response = await self.registrar.handle(flow, message)
            if isinstance(flow, DatagramFlow):
                flow.answered(message, response)
            flow.send_message(response)
            return
        await self.proxy.request(flow, message)


def stamp_via(flow: Flow, request: Request) -> None:
    """RFC 3581/3261 18.2.1: note where the request really came from in its top Via."""
    top = request.vias[0]
    host, port = flow.remote
    params: dict[str, str | None] = {}
    if top.host.strip("[]") != host:
        params["received"] = host
    if "rport" in top.params:
        params["rport"] = str(port)
        params["received"] = host
    if params:
        request.replace_top_via(top.with_params(**params))
