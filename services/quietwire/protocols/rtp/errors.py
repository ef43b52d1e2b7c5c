"""The one parse error of the RTP package."""


class ParseError(ValueError):
    """Bytes that are not a well-formed RTP/RTCP/SRTP packet."""
