"""Relay session ids: one per media stream of a call, ``<Call-ID>#<m= line index>``.

keyagreement names the relay session of each m= line of a call this way and the
relay's events carry the name back; only these two functions build or read one.
A Call-ID (RFC 3261 section 25.1, ``word ["@" word]``) cannot hold ``#``.
"""

from __future__ import annotations

SEPARATOR = "#"


def stream_id(call_id: str, index: int) -> str:
    """The relay session of the ``index``-th m= line (from 0) of a call."""
    return f"{call_id}{SEPARATOR}{index}"


def parse_stream_id(value: str) -> tuple[str, int]:
    """The Call-ID and m= line index of a relay session id; ValueError when it is not one."""
    call_id, separator, index = value.rpartition(SEPARATOR)
    if not separator or not call_id or not (index.isascii() and index.isdigit()):
        raise ValueError("not a stream id")
    return call_id, int(index)


def stream_log_fields(value: str) -> dict[str, str]:
    """What a log line about a relay session carries: its call's Call-ID as
    ``call_id`` (as every service's lines about the call) and the session itself
    as ``stream``. A session not named by :func:`stream_id` is its own call."""
    try:
        call_id, _ = parse_stream_id(value)
    except ValueError:
        return {"call_id": value}
    return {"call_id": call_id, "stream": value}
