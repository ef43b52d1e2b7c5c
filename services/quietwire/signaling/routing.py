"""What the proxy decides about a request before any I/O: pure functions.

- :func:`arrival_refusal`: request validation on arrival, once (a method we
  do not carry; RFC 3261 section 16.3 steps 3 and 4: Max-Forwards, loops),
  before any branch exists.
- :func:`domain_answer`: what a request for the domain itself gets.
- :func:`membership`: whether an in-dialog request is the recorded dialog's
  own (Call-ID and both tags, RFC 3261 section 12.2.2) and came on the flow of
  the party it claims to be. Only such a request skips authentication.
- :func:`identity_refusal`, :func:`party_refusal`: what an authenticated user
  may send (no open relay, no one else's From, no one else's dialog).
- :func:`in_dialog_offer`: an SDP offer in a dialog is planned only in the
  sender's own call.
"""

from __future__ import annotations

from dataclasses import dataclass

from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.headers import NameAddr
from quietwire.protocols.sip.message import Request, Response
from quietwire.signaling.builders import final
from quietwire.signaling.dialogs import Dialog, Party, our_via
from quietwire.signaling.flows import flow_transport
from quietwire.signaling.media import OfferKind, Refusal

#: Methods that carry an SDP offer the media planner must see, in and out of a dialog
#: (an offer mid-call comes in a re-INVITE or an UPDATE, RFC 3311; one in an early
#: dialog in an UPDATE or a PRACK, RFC 3262 section 5).
OFFERS_INITIAL = frozenset({"INVITE"})
OFFERS_IN_DIALOG = frozenset({"INVITE", "UPDATE", "PRACK"})
#: Requests that create a dialog we stay in (we Record-Route them).
RECORD_ROUTED = frozenset({"INVITE", "SUBSCRIBE", "REFER"})
#: Methods an in-dialog or initial request may carry through us.
FORWARDED = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "MESSAGE",
        "INFO",
        "UPDATE",
        "PRACK",
        "NOTIFY",
        "SUBSCRIBE",
        "REFER",
    }
)
ALLOW = ", ".join(sorted(FORWARDED | {"REGISTER"}))


@dataclass(frozen=True, slots=True)
class ProxyAddress:
    """Who this proxy is: its domain, the host and ports it names, its replica."""

    domain: str
    host: str
    #: Our listening port per transport (what our Via and Record-Route name).
    ports: dict[str, int]
    replica: str

    def via(self, flow_id: str, branch: str | None = None) -> str:
        """Our Via for a request sent down ``flow_id`` (its transport picks our port)."""
        transport = flow_transport(flow_id)
        return our_via(self.host, self.ports[transport], self.replica, branch, transport)

    def addressed_to_us(self, request: Request) -> bool:
        """A request for the domain itself (no user): we answer it, never forward it."""
        uri = request.request_uri
        return uri.user is None and uri.host_key == self.domain


def arrival_refusal(request: Request, us: ProxyAddress) -> Response | None:
    """On arrival: 405 with Allow for a method we do not carry (RFC 3261 section
    8.2.1); section 16.3 steps 3 and 4: 483 when Max-Forwards is spent (unless
    the request is ours to answer), 482 when our own Via is in it."""
    if request.method not in FORWARDED:
        not_allowed = final(request, 405, "Method Not Allowed")
        not_allowed.headers.add("Allow", ALLOW)
        return not_allowed
    forwards = request.headers.get("Max-Forwards")
    if forwards is not None and int(forwards) <= 0 and not us.addressed_to_us(request):
        return final(request, 483, "Too Many Hops")
    if any(
        v.params.get("qwr") and v.host == us.host and v.port in us.ports.values()
        for v in request.vias
    ):
        return final(request, 482, "Loop Detected")
    return None


def domain_answer(request: Request) -> tuple[Response, str]:
    """A request for the domain itself, answered statelessly, and its outcome:
    OPTIONS gets our capabilities (RFC 3261 section 11), anything else 404."""
    if request.method != "OPTIONS":
        return final(request, 404, "Not Found"), "not-found"
    ok = final(request, 200, "OK")
    ok.headers.add("Allow", ALLOW)
    ok.headers.add("Supported", "outbound, gruu, path")
    return ok, "answered"


@dataclass(frozen=True, slots=True)
class Membership:
    """An in-dialog request against the recorded dialog of its Call-ID."""

    #: The party whose tags the request carries; None when it is not the dialog's.
    party: Party | None
    #: Whether it arrived on that party's flow.
    on_flow: bool

    @property
    def trusted(self) -> bool:
        """The dialog's own party on its own flow: no authentication needed."""
        return self.party is not None and self.on_flow


def membership(dialog: Dialog | None, request: Request, flow_id: str) -> Membership:
    party = dialog.party(request) if dialog is not None else None
    if dialog is None or party is None:
        return Membership(None, False)
    return Membership(party, dialog.side(party).flow_id == flow_id)


def identity_refusal(
    request: Request, username: str | None, domain: str, *, in_dialog: bool
) -> tuple[int, str] | None:
    """An authenticated request's From must be the user's own address (no
    spoofed callers); an initial one must also be for our domain (no open relay)."""
    caller = request.from_.uri
    if caller.user_unescaped != username or caller.host_key != domain:
        return 403, "From Is Not You"
    if not in_dialog and request.request_uri.host_key != domain:
        return 403, "No Relaying"
    return None


def party_refusal(dialog: Dialog | None, member: Membership, request: Request) -> bool:
    """True when an authenticated user sends with the tags of a dialog party that
    is someone else (its From is not that party's address)."""
    if dialog is None or member.party is None:
        return False
    try:
        own = NameAddr.parse(dialog.side(member.party).address).uri.aor
    except ParseError:
        return True
    return request.from_.uri.aor != own


def in_dialog_offer(request: Request, member: Membership) -> OfferKind | Refusal | None:
    """A re-offer to plan, a refusal, or None when the request carries no offer.

    Only the call's own parties move its media: an offer in any other dialog
    (unknown, or not theirs) would reach a phone unplanned, past the policy. A
    re-INVITE without SDP asks for an offer in its 2xx (RFC 3261 section 14.1):
    a re-offer too, planned when the 2xx comes, refused outside the call alike."""
    solicits = request.method == "INVITE" and not request.body
    if request.method not in OFFERS_IN_DIALOG or not (request.body or solicits):
        return None
    if member.party is None:
        return Refusal(488, "quietwire: a media offer outside an established call")
    return OfferKind.REOFFER
