"""Record-Route tokens: how an in-dialog request finds its way back (RFC 3261 section 16.6).

Our Record-Route URI names both flows of a dialog (``qwa``: the caller's,
``qwb``: the callee's), the caller's From tag (``ftag``), when the token stops
working (``qwe``, Unix seconds) and an HMAC over all of that *and the dialog's
Call-ID* (``qws``). The Call-ID is not written in the URI: it is the request's
own, so a token lifted from one dialog routes nothing in another, and an old
one routes nothing at all. A token only says where to send; who may send is
decided elsewhere (the dialog record, or digest authentication).

Pure: no I/O; time comes in as an argument.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from quietwire.protocols.hmac_sha256 import HmacSha256
from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.headers import NameAddr
from quietwire.protocols.sip.message import Request
from quietwire.signaling.flows import flow_transport

#: Domain separation: the key also mints digest nonces.
_LABEL = b"quietwire record-route v2\x00"
#: Hex digits of the HMAC-SHA-256 kept in the URI (128 bits).
SIGNATURE_HEX = 32


@dataclass(frozen=True, slots=True)
class RouteToken:
    """Both flows of a dialog, the caller's From tag, the expiry, for one Call-ID."""

    caller: str
    callee: str
    ftag: str
    call_id: str
    expires: int

    def toward(self, from_tag: str | None) -> str:
        """The flow a request goes down: the callee's when the caller sends it."""
        return self.callee if from_tag == self.ftag else self.caller

    def sign(self, mac: HmacSha256) -> str:
        """HMAC-SHA-256 of the fields under the label, ``mac`` keyed with the
        label folded in (:meth:`RouteTokens.mac`), hex, cut to SIGNATURE_HEX."""
        fields = (self.call_id, self.caller, self.callee, self.ftag, str(self.expires))
        data = b"".join(f"{len(f)}:{f}".encode() for f in fields)
        return mac.digest(data).hex()[:SIGNATURE_HEX]


@dataclass(frozen=True, slots=True)
class RouteTokens:
    """Issues our Record-Route and reads it back from a request's Route."""

    key: bytes
    host: str
    #: Our port per transport (``TLS``, ``TCP``, ``UDP``).
    ports: dict[str, int]
    #: Seconds a token works after it is issued: the longest dialog we route.
    lifetime: int
    #: ``key`` keyed once, the label folded in: a token is signed or checked per
    #: dialog-forming or in-dialog request.
    mac: HmacSha256 = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mac", HmacSha256(self.key, _LABEL))

    def issue(self, caller: str, callee: str, ftag: str, call_id: str, now: float) -> RouteToken:
        return RouteToken(caller, callee, ftag, call_id, int(now) + self.lifetime)

    def record_routes(self, token: RouteToken) -> list[str]:
        """Our Record-Route values, in adding order (the last ends on top, facing the callee).

        Two when the sides' transports differ (RFC 3261 section 16.6 step 4,
        RFC 5658): each side's route set then starts with the port it speaks."""
        sides = [flow_transport(token.caller), flow_transport(token.callee)]
        return [self._uri(token, transport) for transport in dict.fromkeys(sides)]

    def record_route(self, out: Request, caller: str, callee: str, now: float) -> None:
        """Put our Record-Route on ``out``, a dialog-creating request forwarded from
        flow ``caller`` to flow ``callee``: a token for its Call-ID and From tag."""
        token = self.issue(caller, callee, out.from_.tag or "", out.call_id, now)
        for route in self.record_routes(token):
            out.headers.add("Record-Route", route, first=True)

    def _uri(self, token: RouteToken, transport: str) -> str:
        return (
            f"<sip:{self.host}:{self.ports[transport]};transport={transport.lower()};lr"
            f";qwa={token.caller};qwb={token.callee};ftag={token.ftag}"
            f";qwe={token.expires};qws={token.sign(self.mac)}>"
        )

    def take(self, request: Request, now: float) -> RouteToken | None:
        """Pop our Route(s) off ``request``; the token if it is genuine, this
        dialog's and unexpired, else None (the Route is popped either way)."""
        routes = request.headers.get_all("Route")
        if not routes:
            return None
        try:  # unique to its dialog: kept out of the shared cache of parsed URIs
            params = NameAddr.parse(routes[0], shared=False).uri.params
        except ParseError:
            return None
        signature = params.get("qws")
        if signature is None:
            return None
        request.headers.pop_first("Route")
        second = request.headers.get_all("Route")[:1]
        if second and f"qws={signature}" in second[0]:
            request.headers.pop_first("Route")  # our other half of a double Record-Route
        expires = params.get("qwe") or ""
        if not (expires.isascii() and expires.isdigit() and len(expires) <= 12):
            return None
        if int(expires) < now:
            return None
        token = RouteToken(
            params.get("qwa") or "",
            params.get("qwb") or "",
            params.get("ftag") or "",
            request.call_id,
            int(expires),
        )
        if not hmac.compare_digest(token.sign(self.mac), signature):
            return None
        return token
