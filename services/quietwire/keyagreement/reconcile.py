"""Reconciliation: what the call records say against what the relays hold. Pure.

A call record is the platform's word that a call is up; the relay's sessions are
the truth about its media. They drift apart when a service dies at the wrong
moment: a relay restarts empty under live records, a call ends while
keyagreement is away, a keyagreement dies between claiming a Call-ID and
planning it. :func:`reconcile` reads one snapshot of both and decides:

- a live record whose relay answered without any of its sessions is a dead
  call: it is ended (``relay lost`` when that relay started after the call,
  else ``media gone``);
- a record the platform already ended (``terminated``) but never closed — its
  signaling replica was away — is ended again;
- a record still without a plan long after its claim (its planning died) is ended;
- a live record on a relay neither registered nor answering: the relay is gone
  (handed to the lost-relay path, which knows what to do with its calls);
- a relay session no live record owns is released (its ports were held for
  nobody), once it is older than ORPHAN_GRACE.

A call that moved to another relay between the snapshot and the relays'
answers looks dead (its old relay released its sessions): before an end is
acted on, its record is read again (:func:`moved`).

The snapshot must be taken records first, then relays: a record planned after
the records were read cannot then look like a call without sessions (its
sessions exist before its plan is written). A session allocated after the
records were read may look owned by nobody: ORPHAN_GRACE, and a second look
at its record before it is released (:mod:`.reconciler`), keep it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from quietwire.keyagreement.calls import CallRecord
from quietwire.runtime.registry import RelayEntry
from quietwire.runtime.streams import parse_stream_id, stream_id

#: Why a call is ended: its relay restarted since the call began (its sessions died
#: with the process); its relay ran all along but holds no session for it; its
#: planning never finished.
RELAY_LOST = "relay lost"
MEDIA_GONE = "media gone"
UNPLANNED = "planning interrupted"
#: Seconds a claim may stay without a plan (relay allocations take RELAY_TIMEOUT each).
CLAIM_GRACE = 30.0
#: Seconds a relay session may exist without a record before it is released (its
#: record may be written just after the snapshot, or it may be a migration's new leg).
ORPHAN_GRACE = 30.0


@dataclass(frozen=True, slots=True)
class RelaySessions:
    """What one relay answered when asked for its sessions."""

    relay_id: str
    #: When the relay process started (Unix seconds).
    started: float
    #: Its sessions (``<Call-ID>#<index>``), each with its age in seconds.
    sessions: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class End:
    call_id: str
    reason: str
    #: The signaling replica of its INVITE (a ringing call is ended there).
    replica: str = ""


@dataclass(frozen=True, slots=True)
class Orphan:
    """A relay session (at the relay's gRPC ``address``) that no live record owns."""

    address: str
    session: str


@dataclass(frozen=True, slots=True)
class Decisions:
    ends: tuple[End, ...] = ()
    orphans: tuple[Orphan, ...] = ()
    #: Relays (ids) neither registered nor answering that live records still name.
    gone: tuple[str, ...] = ()


def sessions_of(record: CallRecord) -> frozenset[str]:
    """The relay sessions a planned call has (one per active stream)."""
    if record.plan is None:
        return frozenset()
    return frozenset(
        stream_id(record.call_id, index)
        for index, stream in enumerate(record.plan.streams)
        if stream is not None
    )


def reconcile(
    records: Iterable[CallRecord],
    registered: Collection[RelayEntry],
    answers: Mapping[str, RelaySessions],
    now: float,
) -> Decisions:
    """Decide from one snapshot: the live records (read first), the relays in the
    registry, and the relays that answered, by gRPC address (an address asked that
    is absent did not answer); ``now`` in Unix seconds."""
    live = [r for r in records if not r.ended]
    registered_ids = {r.relay_id for r in registered}
    registered_addresses = {r.grpc for r in registered}
    ends: list[End] = []
    gone: dict[str, None] = {}
    for record in live:
        end = _end_of(record, answers, now)
        if end is not None:
            ends.append(end)
            continue
        plan = record.plan
        if (
            plan is not None
            and plan.relay.grpc not in answers
            and plan.relay.relay_id not in registered_ids
            and plan.relay.grpc not in registered_addresses
        ):
            gone[plan.relay.relay_id] = None
    return Decisions(tuple(ends), tuple(_orphans(live, answers)), tuple(gone))


def moved(before: CallRecord, now: CallRecord | None) -> bool:
    """Whether a call's record names another relay now than it did in the snapshot:
    it moved meanwhile (its old relay's sessions are released once it names the new
    one), so what the old relay holds says nothing of it."""
    if before.plan is None or now is None or now.plan is None:
        return False
    return now.plan.relay != before.plan.relay


def _end_of(record: CallRecord, answers: Mapping[str, RelaySessions], now: float) -> End | None:
    if record.terminated:
        return End(record.call_id, record.terminated, record.replica)
    if record.plan is None:
        if now - record.started > CLAIM_GRACE:
            return End(record.call_id, UNPLANNED, record.replica)
        return None
    answer = answers.get(record.plan.relay.grpc)
    expected = sessions_of(record)
    if answer is None or not expected or expected & answer.sessions.keys():
        return None
    reason = RELAY_LOST if answer.started > record.started else MEDIA_GONE
    return End(record.call_id, reason, record.replica)


def _orphans(live: list[CallRecord], answers: Mapping[str, RelaySessions]) -> list[Orphan]:
    owners = {r.call_id: r for r in live}
    out = []
    for address, answer in answers.items():
        for session, age in answer.sessions.items():
            if age >= ORPHAN_GRACE and not owned(owners, address, session):
                out.append(Orphan(address, session))
    return out


def owned(records: Mapping[str, CallRecord], address: str, session: str) -> bool:
    """Whether a live record owns this session of the relay at ``address``: its call's,
    planned on that relay or still being planned."""
    try:
        call_id, _ = parse_stream_id(session)
    except ValueError:
        return False
    record = records.get(call_id)
    if record is None or record.ended:
        return False
    return record.plan is None or record.plan.relay.grpc == address
