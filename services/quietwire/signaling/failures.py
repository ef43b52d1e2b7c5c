"""What the caller hears when handling its request fails (RFC 3261 section 21.5).

A dependency that is away for a moment (Redis, keyagreement, another replica)
is a 503 with Retry-After (section 21.5.4): the phone tries again shortly, or
another server. Anything else is our fault: 500 (section 21.5.1). Never silence.
The media planner's refusals say the same of themselves (their status).
"""

from __future__ import annotations

import grpc
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from quietwire.protocols.sip.message import Request, Response
from quietwire.signaling.builders import final, refused
from quietwire.signaling.media import Refusal

#: Seconds a phone is asked to wait before trying again after a transient failure.
RETRY_AFTER = 5
_TRANSIENT = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, OSError, TimeoutError)
_TRANSIENT_RPC = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` says a dependency is away for now (not a fault of ours)."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in _TRANSIENT_RPC
    return isinstance(exc, _TRANSIENT)


def failure_answer(request: Request, exc: BaseException) -> Response:
    """503 with Retry-After for a transient cause, else 500."""
    if not transient(exc):
        return final(request, 500, "Server Internal Error")
    answer = final(request, 503, "Service Unavailable")
    answer.headers.add("Retry-After", str(RETRY_AFTER))
    return answer


def refusal_answer(request: Request, refusal: Refusal, host: str) -> Response:
    """A planner's refusal as our answer; a 503 (media planning away, no relay left)
    says when to try again (RFC 3261 section 21.5.4)."""
    response = refused(request, refusal, host)
    if refusal.status == 503:
        response.headers.add("Retry-After", str(RETRY_AFTER))
    return response
