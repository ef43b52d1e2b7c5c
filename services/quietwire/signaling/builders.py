"""Messages the proxy makes itself: finals, refusals, the copy it forwards, CANCEL;
and the response it picks when no branch answered (RFC 3261 section 16.7). Pure."""

from __future__ import annotations

from quietwire.protocols.randomness import POOL
from quietwire.protocols.sip.message import Request, Response, reply
from quietwire.signaling.media import Refusal

#: Max-Forwards of a request that carried none (RFC 3261 section 16.6 step 3).
DEFAULT_MAX_FORWARDS = 70


def with_to_tag(response: Response) -> Response:
    """Tag a final response we make (a UAS tags its own, RFC 3261 section 8.2.6.2),
    so the ACK of a final response can name it."""
    if response.status > 100 and response.to.tag is None:
        response.headers.set("To", f"{response.headers.get('To')};tag={POOL.hex(5)}")
    return response


def final(request: Request, status: int, reason: str) -> Response:
    return with_to_tag(reply(request, status, reason))


def refused(request: Request, refusal: Refusal, host: str) -> Response:
    """The refusal as a response, with a Warning saying why (RFC 3261 section 20.43)."""
    response = final(request, refusal.status, refusal.reason)
    response.headers.add("Warning", f'399 {host} "{refusal.warning}"')
    return response


def busy(request: Request, retry_after: int) -> Response:
    """503 with Retry-After (RFC 3261 section 21.5.4): a limit was reached."""
    response = final(request, 503, "Service Unavailable")
    response.headers.add("Retry-After", str(retry_after))
    return response


def forwarded(request: Request, uri: str | None, via: str) -> Request:
    """The copy we send downstream: new R-URI, our Via on top, Max-Forwards less
    one (RFC 3261 section 16.6 steps 2, 3 and 8)."""
    out = request.copy()
    if uri is not None:
        out.uri = uri
    forwards = request.headers.get("Max-Forwards")
    out.headers.set(
        "Max-Forwards", str(int(forwards) - 1 if forwards else DEFAULT_MAX_FORWARDS - 1)
    )
    out.headers.add("Via", via, first=True)
    return out


def cancel_for(invite: Request, reason: str) -> Request:
    """The CANCEL of a branch's INVITE (RFC 3261 section 9.1): its top Via, From,
    To, Call-ID and Route, CSeq number, and a Reason (RFC 3326)."""
    cancel = Request(method="CANCEL", uri=invite.uri)
    for name in ("Via", "From", "To", "Call-ID", "Route"):
        values = invite.headers.get_all(name)
        for value in values[:1] if name == "Via" else values:
            cancel.headers.add(name, value)
    cancel.headers.add("CSeq", f"{invite.cseq.number} CANCEL")
    cancel.headers.add("Max-Forwards", str(DEFAULT_MAX_FORWARDS))
    cancel.headers.add("Reason", f'SIP;cause=200;text="{reason}"')
    return cancel


def best_response(finals: list[Response], request: Request) -> Response:
    """The response a proxy forwards when no branch answered (RFC 3261 section 16.7
    step 6): a 6xx first, else the lowest class with 5xx last, a 503 turned into 500."""
    if not finals:
        return final(request, 480, "Temporarily Unavailable")
    six = [r for r in finals if r.status >= 600]
    if six:
        return six[0]
    best = min(finals, key=lambda r: (r.status // 100 if r.status // 100 != 5 else 5.5, r.status))
    if best.status == 503:
        converted = best.copy()
        converted.status, converted.reason = 500, "Server Internal Error"
        return converted
    return best
