"""The one parse error of the SIP package, carrying the status to answer with."""

from __future__ import annotations


class ParseError(ValueError):
    """A message, header or URI that is not valid SIP.

    ``status`` is what a server answers a request with (400 unless the RFC says
    otherwise: 505 for another SIP version, 416 for an unknown URI scheme).
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
