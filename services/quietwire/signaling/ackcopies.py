"""One-use local copies of the dialogs this replica just recorded, for the caller's ACK.

The ACK of a 2xx (RFC 3261 section 13.2.2.4) follows it within milliseconds,
nearly always on the flow the 2xx went down: the caller's, held by the replica
that forwarded the 2xx and recorded the dialog. That replica keeps what it
wrote, so the ACK is routed without reading it back from Redis.

A copy serves only the caller's ACK of that dialog: same Call-ID, the caller's
tag in From and the callee's in To, arriving on the caller's own flow. Anything
else (a stranger's ACK with the right tags, a retransmission after the copy was
used, a copy older than 64*T1) reads Redis, as every request did before. Only
the replica's own 2xx makes a copy, the table is capped (the oldest goes), and
any change of the dialog through this replica drops its copy; a change made by
another replica in those milliseconds (TerminateCall, a move) is not seen here
(the ACK then goes on as it would have had it been read just before the change).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quietwire.protocols.clock import Clock
from quietwire.protocols.sip.message import Request
from quietwire.protocols.sip.transaction import T1

if TYPE_CHECKING:  # the dialog store holds the copies
    from quietwire.signaling.dialogs import Dialog

#: Seconds a copy serves: how long a UAS retransmits a 2xx waiting for its ACK
#: (RFC 3261 section 13.3.1.4, 64*T1).
ACK_COPY_LIFETIME = 64 * T1
#: Copies kept at most; past it, the oldest is dropped (its ACK reads Redis).
ACK_COPIES_MAX = 10_000


class AckCopies:
    """Dialogs by Call-ID, each with the time it stops serving, oldest first."""

    def __init__(
        self, clock: Clock, lifetime: float = ACK_COPY_LIFETIME, capacity: int = ACK_COPIES_MAX
    ) -> None:
        self.clock, self.lifetime, self.capacity = clock, lifetime, capacity
        #: Insertion order is expiry order (one lifetime, a monotonic clock).
        self._copies: dict[str, tuple[float, Dialog]] = {}

    def __len__(self) -> int:
        return len(self._copies)

    def keep(self, dialog: Dialog) -> None:
        """The copy of a dialog this replica just recorded (replacing any older one)."""
        now = self.clock.now()
        self._copies.pop(dialog.call_id, None)
        self._copies[dialog.call_id] = (now + self.lifetime, dialog)
        self._prune(now)

    def use(self, request: Request, flow_id: str) -> Dialog | None:
        """The copy for the caller's ACK ``request`` arriving on ``flow_id``, used
        up; None (the copy left as it is) for any other request or flow."""
        entry = self._copies.get(request.call_id)
        if entry is None:
            return None
        expires, dialog = entry
        if expires <= self.clock.now():
            del self._copies[request.call_id]
            return None
        if not dialog.callers_own(request, flow_id):
            return None
        del self._copies[request.call_id]
        return dialog

    def drop(self, call_id: str) -> None:
        """The dialog changed (or ended): its copy no longer says what Redis holds."""
        self._copies.pop(call_id, None)

    def _prune(self, now: float) -> None:
        """Expired copies and those past the cap, from the oldest."""
        copies = self._copies
        while copies:
            oldest = next(iter(copies))
            if copies[oldest][0] > now and len(copies) <= self.capacity:
                return
            del copies[oldest]
