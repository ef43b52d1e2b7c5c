"""Migration decisions (keyagreement/migration.py, moves.py): where a call may move,
how its legs are asked of the new relay, how its record switches, what a failed
move says. Pure: no Redis, no relay, no signaling."""

from __future__ import annotations

from dataclasses import replace

from quietwire.keyagreement.binding import carries
from quietwire.keyagreement.calls import CallRecord
from quietwire.keyagreement.migration import (
    carried_specs,
    destination,
    elsewhere,
    lost_reason,
    switched,
)
from quietwire.keyagreement.model import Dialog, Endpoint, Media, Mode, Plan, Relay, StreamPlan
from quietwire.keyagreement.moves import MoveAnswer, MoveOutcome
from quietwire.keyagreement.outcome import Binding, Outcome
from quietwire.keyagreement.planner import LeastLoaded
from quietwire.keyagreement.policy import Policy
from quietwire.rpc.relay.v1 import relay_pb2
from quietwire.runtime.registry import RelayEntry

A = Relay("relay-a", "10.0.0.1:50053")
B = Relay("relay-b", "10.0.0.2:50053")
PAIRS = StreamPlan(Endpoint("192.0.2.1", 30000, 30001), Endpoint("192.0.2.1", 30002, 30003))
MUXED = StreamPlan(Endpoint("192.0.2.1", 30004, 30004), Endpoint("192.0.2.1", 30006, 30006))
VERIFIED = Binding(Outcome.SECURED, True, True, True, "zrtp-verified", 3.0)


def entry(relay_id: str, grpc: str, active: int = 0, draining: bool = False) -> RelayEntry:
    return RelayEntry(relay_id, grpc, "192.0.2.9", 100, active, draining)


def record(**changes: object) -> CallRecord:
    planned = CallRecord(
        call_id="c1",
        dialog=Dialog("alice", "bob", "ta", "tb"),
        policy=Policy.SECURE_ONLY,
        mode=Mode.ZRTP,
        end_to_end=True,
        plan=Plan(Mode.ZRTP, True, A, (PAIRS, None, MUXED)),
        replica="sig-1",
        hash_caller="1.10 aaaa",
        hash_callee="1.10 bbbb",
        binding=VERIFIED,
        started=100.0,
        rev=7,
    )
    return replace(planned, **changes)  # type: ignore[arg-type]


# -- where a call may go -----------------------------------------------------------------


def test_a_call_never_moves_to_its_own_relay_nor_one_restarted_in_its_place() -> None:
    alive = [
        entry("relay-a", A.grpc),
        entry("relay-a2", A.grpc),  # restarted under a new name, same address: empty
        entry("relay-b", B.grpc, active=50),
    ]
    assert [r.relay_id for r in elsewhere(alive, A)] == ["relay-b"]


def test_the_only_relay_restarted_in_place_leaves_nowhere_to_go() -> None:
    alive = [entry("relay-a2", A.grpc)]
    assert destination(alive, A, "", LeastLoaded()) is None


def test_the_selector_picks_the_least_loaded_other_relay_not_draining() -> None:
    alive = [
        entry("relay-a", A.grpc),
        entry("relay-b", B.grpc, active=60),
        entry("relay-c", "10.0.0.3:50053", active=10),
        entry("relay-d", "10.0.0.4:50053", active=0, draining=True),
    ]
    chosen = destination(alive, A, "", LeastLoaded())
    assert chosen is not None and chosen.relay_id == "relay-c"


def test_a_relay_already_tried_is_not_chosen_again() -> None:
    alive = [entry("relay-b", B.grpc, active=60), entry("relay-c", "10.0.0.3:50053", active=10)]
    chosen = destination(alive, A, "", LeastLoaded(), tried={"relay-c"})
    assert chosen is not None and chosen.relay_id == "relay-b"
    assert destination(alive, A, "", LeastLoaded(), tried={"relay-b", "relay-c"}) is None


def test_to_relay_is_honoured_even_when_the_selector_would_pick_another() -> None:
    alive = [entry("relay-b", B.grpc, active=90), entry("relay-c", "10.0.0.3:50053")]
    chosen = destination(alive, A, "relay-b", LeastLoaded())
    assert chosen is not None and chosen.relay_id == "relay-b"


def test_to_relay_naming_the_current_relay_or_a_dead_one_gives_nothing() -> None:
    alive = [entry("relay-a", A.grpc), entry("relay-b", B.grpc)]
    assert destination(alive, A, "relay-a", LeastLoaded()) is None
    assert destination(alive, A, "relay-z", LeastLoaded()) is None


# -- the new relay's legs ----------------------------------------------------------------


def test_the_new_legs_keep_the_layout_the_hashes_and_what_the_old_relay_knew() -> None:
    memory = relay_pb2.CarriedLeg(
        rtp_source=relay_pb2.Address(host="198.51.100.7", port=4000),
        ssrcs=[0x1234],
        zrtp_hello_hash="ab" * 32,
        zrtp_messages_seen=["Hello   ", "Conf2ACK"],
    )
    specs = carried_specs(record(), 0, PAIRS, {relay_pb2.LEG_SIDE_CALLER: memory})
    caller, callee = specs
    assert (caller.side, callee.side) == (relay_pb2.LEG_SIDE_CALLER, relay_pb2.LEG_SIDE_CALLEE)
    assert (caller.rtcp_mux, callee.rtcp_mux) == (False, False)
    assert (caller.zrtp_hash, callee.zrtp_hash) == ("1.10 aaaa", "1.10 bbbb")
    assert caller.carried == memory
    assert not callee.HasField("carried")  # the old relay never latched it


def test_a_muxed_stream_stays_muxed_and_later_streams_learn_their_hash_from_the_answer() -> None:
    caller, callee = carried_specs(record(), 2, MUXED, {})
    assert (caller.rtcp_mux, callee.rtcp_mux) == (True, True)
    assert (caller.zrtp_hash, callee.zrtp_hash) == ("", "")


# -- the record after the move -----------------------------------------------------------


def test_the_switched_record_names_the_new_relay_and_keeps_its_binding() -> None:
    streams = (MUXED, None, PAIRS)
    after = switched(A, B, streams)(record())
    assert after is not None and after.plan is not None
    assert (after.plan.relay, after.plan.streams) == (B, streams)
    assert after.binding == VERIFIED
    assert (after.dialog, after.hash_caller, after.hash_callee) == (
        record().dialog,
        "1.10 aaaa",
        "1.10 bbbb",
    )


def test_no_switch_for_a_call_that_ended_or_moved_meanwhile() -> None:
    step = switched(A, B, (PAIRS,))
    assert step(record(ended="bye")) is None
    assert step(record(terminated="media timeout")) is None
    moved = record(plan=Plan(Mode.ZRTP, True, Relay("relay-c", "10.0.0.3:50053"), (PAIRS,)))
    assert step(moved) is None


def test_events_count_only_from_the_relay_the_call_is_on() -> None:
    assert carries(record(), A.grpc)
    assert not carries(record(), B.grpc)
    assert carries(record(), "")  # an event not tied to a relay (tests, replays)


# -- failures ----------------------------------------------------------------------------


def test_a_refusal_by_one_phone_after_the_other_moved_splits_the_call() -> None:
    moved_caller = (Media(4000, "RTP/SAVP", "198.51.100.7"),)
    split = MoveAnswer(MoveOutcome.REFUSED, moved_caller, (), 488, "callee refused")
    assert split.split
    assert split.why == "move refused (488)"
    said = "the caller accepted; the callee refused: 488 Not Acceptable Here"
    assert MoveAnswer(MoveOutcome.REFUSED, sip_status=488, detail=said).split
    both = "the caller refused: 488 Not Acceptable Here; the callee refused: 488"
    both_refused = MoveAnswer(MoveOutcome.REFUSED, sip_status=488, detail=both)
    assert not both_refused.split
    assert not MoveAnswer(MoveOutcome.MOVED, moved_caller, moved_caller).split


def test_a_lost_relays_call_that_cannot_move_ends_saying_relay_lost_and_why() -> None:
    assert lost_reason("") == "relay lost"
    assert lost_reason("move refused (488)") == "relay lost: move refused (488)"
    assert MoveAnswer(MoveOutcome.NO_ANSWER).why == "move not answered"
