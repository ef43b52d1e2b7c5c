"""Per-request context carried by contextvars into logs and outgoing RPCs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import NewType

CallId = NewType("CallId", str)
LegId = NewType("LegId", str)

#: The call being worked on: set by the gRPC interceptor from the
#: ``x-call-id`` metadata, or by the SIP layer from Call-ID.
call_id_var: ContextVar[CallId | None] = ContextVar("call_id", default=None)
leg_id_var: ContextVar[LegId | None] = ContextVar("leg_id", default=None)

#: gRPC metadata key carrying the call id between services.
CALL_ID_METADATA = "x-call-id"


@contextmanager
def call_context(call_id: str) -> Iterator[None]:
    """Work done for a call outside a request (a background loop, an event): its
    log lines and outgoing RPCs carry ``call_id`` as a request's would."""
    token = call_id_var.set(CallId(call_id))
    try:
        yield
    finally:
        call_id_var.reset(token)
