"""The outcome of a call's ZRTP binding check (RFC 6189 section 8.1), as a state machine.

The relay reports the cleartext ZRTP messages it sees on each leg; each report
moves a call's :class:`Binding` by :func:`observe`, which only takes the steps
in :data:`TRANSITIONS`. The store applies a step atomically (``calls.py``: a
Lua compare-and-set on the record's revision), so keyagreement replicas that
follow the same relay never lose or reorder each other's steps.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from quietwire.keyagreement.model import Side


class Outcome(enum.Enum):
    NOT_ZRTP = "not-zrtp"  # the call was not planned as ZRTP
    WAITING = "waiting"  # no Hello yet
    HANDSHAKING = "handshaking"  # a Hello matched its a=zrtp-hash
    SECURED = "zrtp-verified"  # both Hellos matched and the Conf2ACK went by (section 4.6)
    FAILED = "zrtp-failed"  # an Error message (section 5.9)
    MISMATCH = "zrtp-mismatch"  # a Hello did not match: a man in the middle on the media path
    CLEAR = "clear"  # GoClear (section 5.7.2): media no longer secret


_ANY_PROGRESS = frozenset(
    {Outcome.HANDSHAKING, Outcome.SECURED, Outcome.FAILED, Outcome.MISMATCH, Outcome.CLEAR}
)
#: The outcomes each outcome may move to. A mismatch is final (the call is ended);
#: a secured call may only go clear (GoClear is sent in the secure state, section 5.7.2).
TRANSITIONS: dict[Outcome, frozenset[Outcome]] = {
    Outcome.NOT_ZRTP: _ANY_PROGRESS,
    Outcome.WAITING: _ANY_PROGRESS,
    Outcome.HANDSHAKING: _ANY_PROGRESS - {Outcome.HANDSHAKING},
    Outcome.FAILED: _ANY_PROGRESS - {Outcome.FAILED},
    Outcome.CLEAR: _ANY_PROGRESS - {Outcome.CLEAR},
    Outcome.SECURED: frozenset({Outcome.CLEAR}),
    Outcome.MISMATCH: frozenset(),
}
#: Outcomes that take no more evidence (flags included).
FINAL = frozenset(o for o, after in TRANSITIONS.items() if not after - {Outcome.CLEAR})


def allowed(before: Outcome, after: Outcome) -> bool:
    return after in TRANSITIONS[before]


@dataclass(frozen=True, slots=True)
class Binding:
    """What the relay has shown of a call's ZRTP handshake so far."""

    outcome: Outcome = Outcome.WAITING
    seen_caller: bool = False  # a Hello matching the caller's a=zrtp-hash
    seen_callee: bool = False
    conf2ack: bool = False
    detail: str = ""
    secured_at: float = 0.0

    def seen(self, side: Side) -> bool:
        return self.seen_caller if side is Side.CALLER else self.seen_callee


@dataclass(frozen=True, slots=True)
class Seen:
    """A ZRTP message the relay saw on one leg (``hello_hash``: SHA-256 of a Hello)."""

    message: str
    side: Side | None
    hello_hash: str = ""


def observe(binding: Binding, seen: Seen, signaled: str, now: float) -> Binding:
    """The binding after the relay saw ``seen`` (``signaled``: the a=zrtp-hash value
    that side sent over TLS, "" when unknown); ``binding`` itself when nothing changes."""
    after = _evidence(binding, seen, signaled)
    progress = seen.message in ("Hello", "Conf2ACK") and after.outcome is not Outcome.MISMATCH
    if progress and after.seen_caller and after.seen_callee and after.conf2ack:
        after = replace(after, outcome=Outcome.SECURED, detail="zrtp-verified", secured_at=now)
    if after.outcome is not binding.outcome and not allowed(binding.outcome, after.outcome):
        return binding
    if binding.outcome in FINAL and after.outcome is binding.outcome:
        return binding  # late evidence changes nothing
    return after


def _evidence(binding: Binding, seen: Seen, signaled: str) -> Binding:
    if seen.message == "Hello" and seen.side is not None:
        expected = signaled.split()[-1:]  # "<version> <hex>" (RFC 6189 section 8.1)
        if expected and expected[0].lower() != seen.hello_hash:
            return replace(
                binding,
                outcome=Outcome.MISMATCH,
                detail=f"the {seen.side.value}'s ZRTP Hello does not match its a=zrtp-hash"
                " (man in the middle on the media path?)",
            )
        if seen.side is Side.CALLER:
            return replace(binding, outcome=Outcome.HANDSHAKING, seen_caller=True)
        return replace(binding, outcome=Outcome.HANDSHAKING, seen_callee=True)
    if seen.message == "Conf2ACK":
        return replace(binding, conf2ack=True)
    if seen.message == "Error":
        return replace(binding, outcome=Outcome.FAILED, detail="ZRTP Error on the media path")
    if seen.message == "GoClear":
        return replace(binding, outcome=Outcome.CLEAR, detail="GoClear: media no longer secret")
    return binding
