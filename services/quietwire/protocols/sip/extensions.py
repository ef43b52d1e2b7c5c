"""SIP extensions by option tag (RFC 3261 sections 8.2.2.3, 16.3, 20.29, 20.32, 20.40).

An element that does not understand an option tag a request requires of it
answers 420 (Bad Extension) listing the tags in Unsupported. A proxy checks
Proxy-Require; a UAS (the registrar) checks Require. Never for ACK, which has
no response (and, for Require, not for CANCEL either: section 8.2.2.3).
"""

from __future__ import annotations

from quietwire.protocols.sip.message import Request, Response, reply

#: Proxy-Require tags this proxy implements: none.
PROXY_OPTIONS: frozenset[str] = frozenset()


def unsupported(request: Request, header: str, understood: frozenset[str]) -> list[str]:
    """The option tags of ``header`` (Require or Proxy-Require) not in ``understood``."""
    if request.method == "ACK" or (header == "Require" and request.method == "CANCEL"):
        return []
    known = {tag.lower() for tag in understood}
    return [tag for tag in request.headers.get_all(header) if tag.lower() not in known]


def bad_extension(request: Request, tags: list[str]) -> Response:
    response = reply(request, 420, "Bad Extension")
    response.headers.add("Unsupported", ", ".join(tags))
    return response


def refuse_unsupported(
    request: Request, header: str, understood: frozenset[str]
) -> Response | None:
    """The 420 answer when ``request`` requires what we do not understand, else None."""
    tags = unsupported(request, header, understood)
    return bad_extension(request, tags) if tags else None
