"""Reconciliation decisions (keyagreement/reconcile.py): call records against the
relays' sessions, from one snapshot. Pure: no Redis, no relay."""

from __future__ import annotations

from dataclasses import replace

from quietwire.keyagreement.calls import CallRecord
from quietwire.keyagreement.model import Dialog, Endpoint, Mode, Plan, Relay, StreamPlan
from quietwire.keyagreement.policy import Policy
from quietwire.keyagreement.reconcile import (
    CLAIM_GRACE,
    MEDIA_GONE,
    ORPHAN_GRACE,
    RELAY_LOST,
    UNPLANNED,
    Decisions,
    End,
    Orphan,
    RelaySessions,
    moved,
    reconcile,
)
from quietwire.runtime.registry import RelayEntry

NOW = 1_000_000.0
ADDRESS = "10.0.0.1:50053"
RELAY = Relay("relay-a", ADDRESS)
ENTRY = RelayEntry("relay-a", ADDRESS, "192.0.2.1", 100, 1, False)
STREAM = StreamPlan(Endpoint("192.0.2.1", 30000, 30001), Endpoint("192.0.2.1", 30002, 30003))


def record(call_id: str = "c1", *, started: float = NOW - 100, **changes: object) -> CallRecord:
    planned = CallRecord(
        call_id=call_id,
        dialog=Dialog("alice", "bob", "ta", "tb"),
        policy=Policy.SECURE_ONLY,
        mode=Mode.ZRTP,
        end_to_end=True,
        plan=Plan(Mode.ZRTP, True, RELAY, (STREAM, None)),
        replica="sig-1",
        started=started,
    )
    return replace(planned, **changes)  # type: ignore[arg-type]


def relay(*sessions: tuple[str, float], started: float = NOW - 1000) -> RelaySessions:
    return RelaySessions("relay-a", started, dict(sessions))


def test_a_call_whose_relay_holds_its_session_is_left_alone() -> None:
    answers = {ADDRESS: relay(("c1#0", 100.0))}
    assert reconcile([record()], [ENTRY], answers, NOW) == Decisions()


def test_a_call_on_a_relay_restarted_since_it_began_is_ended_as_relay_lost() -> None:
    answers = {ADDRESS: relay(started=NOW - 5)}
    decisions = reconcile([record()], [ENTRY], answers, NOW)
    assert decisions == Decisions(ends=(End("c1", RELAY_LOST, "sig-1"),))


def test_a_call_whose_session_is_gone_from_a_relay_that_ran_all_along_is_ended() -> None:
    decisions = reconcile([record()], [ENTRY], {ADDRESS: relay()}, NOW)
    assert decisions.ends == (End("c1", MEDIA_GONE, "sig-1"),)


def test_a_relay_that_did_not_answer_decides_nothing_while_it_is_registered() -> None:
    assert reconcile([record()], [ENTRY], {}, NOW) == Decisions()


def test_a_relay_neither_registered_nor_answering_is_gone() -> None:
    decisions = reconcile([record(), record("c2")], [], {}, NOW)
    assert decisions == Decisions(gone=("relay-a",))


def test_a_relay_registered_under_a_new_id_at_the_same_address_is_not_gone() -> None:
    moved = replace(ENTRY, relay_id="relay-a-restarted")
    assert reconcile([record()], [moved], {}, NOW) == Decisions()


def test_a_call_the_platform_ended_but_never_closed_is_ended_again() -> None:
    stuck = record(terminated="zrtp-mismatch")
    decisions = reconcile([stuck], [ENTRY], {ADDRESS: relay(("c1#0", 100.0))}, NOW)
    assert decisions.ends == (End("c1", "zrtp-mismatch", "sig-1"),)


def test_an_ended_record_is_not_a_live_call() -> None:
    ended = record(ended="ended")
    assert reconcile([ended], [ENTRY], {ADDRESS: relay()}, NOW) == Decisions()


def test_a_claim_is_given_time_to_be_planned_then_ended() -> None:
    young = record(plan=None, started=NOW - CLAIM_GRACE + 1)
    old = record("c2", plan=None, started=NOW - CLAIM_GRACE - 1)
    decisions = reconcile([young, old], [ENTRY], {ADDRESS: relay()}, NOW)
    assert decisions.ends == (End("c2", UNPLANNED, "sig-1"),)


def test_a_session_nobody_owns_is_released_once_old_enough() -> None:
    answers = {
        ADDRESS: relay(
            ("c1#0", 100.0),  # the live call's
            ("gone#0", ORPHAN_GRACE + 1),  # a call with no record
            ("new#0", ORPHAN_GRACE - 1),  # maybe planned just after the snapshot
            ("not a stream id", ORPHAN_GRACE + 1),
        )
    }
    decisions = reconcile([record()], [ENTRY], answers, NOW)
    assert decisions.orphans == (
        Orphan(ADDRESS, "gone#0"),
        Orphan(ADDRESS, "not a stream id"),
    )
    assert not decisions.ends


def test_a_session_of_a_call_planned_on_another_relay_is_an_orphan() -> None:
    other = "10.0.0.2:50053"
    answers = {other: RelaySessions("relay-b", NOW - 1000, {"c1#0": ORPHAN_GRACE + 1})}
    decisions = reconcile([record()], [ENTRY], answers, NOW)
    assert decisions.orphans == (Orphan(other, "c1#0"),)


def test_a_session_of_a_call_being_planned_is_kept() -> None:
    claim = record(plan=None, started=NOW - 1)
    answers = {ADDRESS: relay(("c1#0", ORPHAN_GRACE + 1))}
    assert reconcile([claim], [ENTRY], answers, NOW) == Decisions()


def test_a_session_of_an_ended_call_is_released() -> None:
    ended = record(ended="ended")
    answers = {ADDRESS: relay(("c1#0", ORPHAN_GRACE + 1))}
    assert reconcile([ended], [ENTRY], answers, NOW).orphans == (Orphan(ADDRESS, "c1#0"),)


def test_a_call_with_any_of_its_sessions_left_is_left_alone() -> None:
    two = record(plan=Plan(Mode.ZRTP, True, RELAY, (STREAM, STREAM)))
    answers = {ADDRESS: relay(("c1#1", 10.0))}
    assert reconcile([two], [ENTRY], answers, NOW) == Decisions()


def test_a_call_moved_since_the_snapshot_is_told_apart() -> None:
    """A migration switched its record to relay B, then released relay A's sessions:
    what A says of it no longer counts."""
    other = Relay("relay-b", "10.0.0.2:50053")
    before = record()
    assert before.plan is not None
    after = replace(before, plan=replace(before.plan, relay=other), rev=before.rev + 1)
    assert moved(before, after)
    assert not moved(before, replace(before, rev=before.rev + 1))  # another step, same relay
    assert not moved(before, None)  # gone: nothing moved, the end stands
    assert not moved(record(plan=None), after)  # it had no relay in the snapshot
