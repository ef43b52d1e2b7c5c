"""Plain requests for tests that drive a listener with raw sockets."""

from __future__ import annotations


def options(call_id: str, cseq: int, transport: str = "TCP") -> bytes:
    """An OPTIONS of dialog ``call_id`` with CSeq ``cseq`` (its branch names both)."""
    return (
        f"OPTIONS sip:example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:5999;branch=z9hG4bK-{call_id}-{cseq}\r\n"
        f"From: <sip:a@example.com>;tag=a\r\nTo: <sip:example.com>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} OPTIONS\r\nMax-Forwards: 70\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()
