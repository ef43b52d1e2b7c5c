"""keyagreement's pure pieces: policy, downgrades, the relay selector, the dialog a
plan is bound to, the ZRTP binding's transition table, stream ids, the record codec."""

from __future__ import annotations

from dataclasses import replace

import pytest
from quietwire.keyagreement.calls import CallRecord, decode, encode
from quietwire.keyagreement.model import (
    Dialog,
    Endpoint,
    Media,
    Mode,
    Plan,
    Relay,
    Side,
    StreamPlan,
    Tags,
)
from quietwire.keyagreement.outcome import (
    TRANSITIONS,
    Binding,
    Outcome,
    Seen,
    allowed,
    observe,
)
from quietwire.keyagreement.planner import LeastLoaded, another_callee
from quietwire.keyagreement.policy import Policy, downgrade, judge, mode_of, strictest
from quietwire.runtime.registry import RelayEntry
from quietwire.runtime.streams import parse_stream_id, stream_id

HASH = "1.10 " + "ab" * 32
ZRTP = Media(port=4000, zrtp_hash=HASH)
DTLS = Media(port=4000, protocol="UDP/TLS/RTP/SAVP", dtls=True)
SDES = Media(port=4000, protocol="RTP/SAVP", sdes=True)
PLAIN = Media(port=4000)


# -- policy ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("media", "mode"),
    [
        ([ZRTP], Mode.ZRTP),
        ([DTLS], Mode.DTLS_SRTP),
        ([SDES], Mode.SDES_SRTP),
        ([PLAIN], Mode.PLAIN_RTP),
        ([Media(port=4000, sdes=True)], Mode.PLAIN_RTP),  # a=crypto over RTP/AVP is not SRTP
        ([ZRTP, SDES], Mode.SDES_SRTP),  # as weak as the weakest stream
        ([ZRTP, Media(port=0)], Mode.ZRTP),  # a disabled stream does not count
        ([], Mode.PLAIN_RTP),
    ],
)
def test_mode_of_an_offer(media: list[Media], mode: Mode) -> None:
    assert mode_of(media) is mode


@pytest.mark.parametrize(
    ("media", "policy", "accepted", "warning"),
    [
        ([ZRTP], Policy.END_TO_END_ONLY, True, ""),
        ([DTLS], Policy.END_TO_END_ONLY, True, ""),
        ([SDES], Policy.END_TO_END_ONLY, False, "SDES keys would be visible"),
        ([SDES], Policy.SECURE_ONLY, True, ""),
        ([PLAIN], Policy.SECURE_ONLY, False, "plain RTP refused"),
        ([PLAIN], Policy.END_TO_END_ONLY, False, "plain RTP refused"),
        ([PLAIN], Policy.ALLOW_PLAIN, True, ""),
    ],
)
def test_judge(media: list[Media], policy: Policy, accepted: bool, warning: str) -> None:
    verdict = judge(media, policy)
    assert verdict.accepted is accepted
    assert warning in verdict.warning and bool(verdict.warning) is not accepted
    assert verdict.end_to_end is (accepted and verdict.mode.end_to_end)


def test_downgrade_is_any_step_to_a_weaker_mode() -> None:
    order = [Mode.ZRTP, Mode.DTLS_SRTP, Mode.SDES_SRTP, Mode.PLAIN_RTP]
    for i, before in enumerate(order):
        for j, after in enumerate(order):
            assert downgrade(before, after) is (j > i), (before, after)


def test_a_call_follows_the_stricter_user() -> None:
    assert strictest(Policy.ALLOW_PLAIN, Policy.END_TO_END_ONLY) is Policy.END_TO_END_ONLY
    assert strictest(Policy.SECURE_ONLY, Policy.ALLOW_PLAIN) is Policy.SECURE_ONLY


# -- relay selector --------------------------------------------------------------------------


def relay(name: str, active: int, capacity: int = 10, draining: bool = False) -> RelayEntry:
    return RelayEntry(name, f"{name}:1", "192.0.2.1", capacity, active, draining)


def test_least_loaded_skips_draining_and_full_relays() -> None:
    choose = LeastLoaded().choose
    assert choose([relay("a", 5), relay("b", 2), relay("c", 0, draining=True)]) == relay("b", 2)
    assert choose([relay("a", 10), relay("b", 3, capacity=3)]) is None
    assert choose([relay("b", 1), relay("a", 1)]) == relay("a", 1)  # ties: by id, stable
    assert choose([relay("big", 4, capacity=100), relay("small", 1, capacity=2)]).relay_id == "big"
    assert choose([]) is None


# -- the dialog a plan is bound to ---------------------------------------------------------


RINGING = Dialog("sip:carol@d", "sip:bob@d", caller_tag="c1")
ANSWERED = Dialog("sip:carol@d", "sip:bob@d", caller_tag="c1", callee_tag="b1")


def test_requests_of_the_dialog_name_their_sender() -> None:
    assert RINGING.sender(Tags("c1", "")) is Side.CALLER  # the INVITE itself
    assert RINGING.sender(Tags("c1", "b9")) is Side.CALLER  # the callee's tag is not known yet
    assert ANSWERED.sender(Tags("c1", "b1")) is Side.CALLER
    assert ANSWERED.sender(Tags("c1", "")) is Side.CALLER  # the initial transaction ends
    assert ANSWERED.sender(Tags("b1", "c1")) is Side.CALLEE


@pytest.mark.parametrize(
    "tags",
    [Tags("a1", ""), Tags("", ""), Tags("c1", "b2"), Tags("b1", "x"), Tags("b2", "c1")],
)
def test_other_dialogs_are_not_this_one(tags: Tags) -> None:
    assert ANSWERED.sender(tags) is None


def test_the_first_answer_fixes_the_callee_tag() -> None:
    ok = Tags("c1", "b1")
    assert RINGING.responder(ok) is Side.CALLEE
    assert RINGING.answered(ok) == ANSWERED
    assert ANSWERED.answered(Tags("c1", "b2")) == ANSWERED  # a second fork's 2xx changes nothing
    assert ANSWERED.responder(Tags("c1", "b2")) is None
    assert ANSWERED.responder(Tags("b1", "c1")) is Side.CALLER  # answer to the callee's re-INVITE
    assert RINGING.responder(Tags("c1", "")) is None  # a response must carry a To tag


EARLY = Dialog("sip:carol@d", "sip:bob@d", caller_tag="c1", callee_tag="b1", early=True)


def test_an_early_answer_binds_an_early_dialog_the_2xx_confirms() -> None:
    """RFC 3960 early media: an 18x's answer fixes the callee's tag for an early
    dialog only; the 2xx of the same fork confirms it."""
    assert RINGING.answered(Tags("c1", "b1"), provisional=True) == EARLY
    assert EARLY.sender(Tags("b1", "c1")) is Side.CALLEE  # an UPDATE of the early dialog
    assert EARLY.answered(Tags("c1", "b1")) == ANSWERED
    assert EARLY.answered(Tags("c1", "b1"), provisional=True) == EARLY  # a repeated 18x


def test_another_fork_takes_an_early_dialog_over_until_a_2xx_confirms_one() -> None:
    """A forked INVITE: the latest early answer holds the callee side, the 2xx that
    wins takes it for good, and nothing takes a confirmed dialog over."""
    other = Tags("c1", "b2")
    assert EARLY.answered(other, provisional=True).callee_tag == "b2"
    assert EARLY.answered(other).responder(other) is Side.CALLEE
    assert EARLY.answered(other) == Dialog("sip:carol@d", "sip:bob@d", "c1", "b2")
    assert ANSWERED.answered(other, provisional=True) == ANSWERED
    assert EARLY.answered(Tags("x9", "b2")) == EARLY  # not the caller's dialog


def record_of(dialog: Dialog, binding: Binding, end_to_end: bool = True) -> CallRecord:
    plan = Plan(Mode.ZRTP, True, Relay("relay-1", "10.0.0.1:50053"), (None,))
    return CallRecord(
        "abc@host", dialog, Policy.SECURE_ONLY, Mode.ZRTP, end_to_end, plan, binding=binding
    )


def test_another_callee_starts_its_side_of_the_binding_afresh() -> None:
    """What the relay showed of the first fork's ZRTP does not carry over; the
    caller's matching Hello does, and a mismatch stays final."""
    secured = Binding(Outcome.SECURED, True, True, True, "zrtp-verified", 5.0)
    after = another_callee(record_of(EARLY, secured, end_to_end=False))
    assert after.binding == Binding(Outcome.HANDSHAKING, seen_caller=True)
    assert after.end_to_end and not after.hash_callee
    mismatch = Binding(Outcome.MISMATCH, detail="x")
    assert another_callee(record_of(EARLY, mismatch)).binding == mismatch


# -- the ZRTP binding's transitions ----------------------------------------------------------


def test_the_transition_table_has_every_outcome_and_a_final_mismatch() -> None:
    assert set(TRANSITIONS) == set(Outcome)
    assert all(not allowed(Outcome.MISMATCH, o) for o in Outcome)
    assert {o for o in Outcome if allowed(Outcome.SECURED, o)} == {Outcome.CLEAR}
    assert all(not allowed(o, Outcome.WAITING) for o in Outcome)


def hello(side: Side, good: bool = True) -> Seen:
    return Seen("Hello", side, "ab" * 32 if good else "cd" * 32)


def test_both_hellos_and_a_conf2ack_secure_the_call() -> None:
    b = Binding()
    b = observe(b, hello(Side.CALLER), HASH, 1.0)
    assert (b.outcome, b.seen_caller) == (Outcome.HANDSHAKING, True)
    b = observe(b, Seen("Conf2ACK", Side.CALLER), HASH, 2.0)
    assert b.outcome is Outcome.HANDSHAKING and b.conf2ack
    b = observe(b, hello(Side.CALLEE), HASH, 3.0)
    assert (b.outcome, b.secured_at, b.detail) == (Outcome.SECURED, 3.0, "zrtp-verified")
    assert observe(b, hello(Side.CALLEE), HASH, 4.0) is b  # late evidence changes nothing
    assert observe(b, hello(Side.CALLER, good=False), HASH, 4.0) is b  # secured: final


def test_a_mismatching_hello_is_final() -> None:
    b = observe(Binding(), hello(Side.CALLEE, good=False), HASH, 1.0)
    assert b.outcome is Outcome.MISMATCH and "callee's ZRTP Hello" in b.detail
    for seen in (hello(Side.CALLER), Seen("GoClear", Side.CALLER), Seen("Error", None)):
        assert observe(b, seen, HASH, 2.0) is b


def test_a_hello_without_a_signaled_hash_is_not_checked() -> None:
    b = observe(Binding(), hello(Side.CALLEE, good=False), "", 1.0)
    assert b.outcome is Outcome.HANDSHAKING and b.seen_callee


def test_goclear_after_securing_goes_clear() -> None:
    """GoClear is only sent in the secure state (RFC 6189 section 5.7.2)."""
    b = Binding(Outcome.SECURED, True, True, True, "zrtp-verified", 3.0)
    after = observe(b, Seen("GoClear", Side.CALLER), HASH, 4.0)
    assert after.outcome is Outcome.CLEAR


def test_an_error_fails_and_a_new_handshake_may_follow() -> None:
    b = observe(Binding(), Seen("Error", Side.CALLER), HASH, 1.0)
    assert b.outcome is Outcome.FAILED
    assert observe(b, hello(Side.CALLER), HASH, 2.0).outcome is Outcome.HANDSHAKING
    assert observe(b, Seen("Commit", Side.CALLER), HASH, 2.0) is b


# -- stream ids ---------------------------------------------------------------------------------


def test_stream_ids_round_trip() -> None:
    for call_id in ("a84b4c76e66710@pc33.atlanta.com", "x", "1-2-3@[2001:db8::1]"):
        assert parse_stream_id(stream_id(call_id, 3)) == (call_id, 3)


@pytest.mark.parametrize("value", ["", "abc", "#0", "abc#", "abc#x", "abc#٣", "abc#-1"])
def test_bad_stream_ids_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="not a stream id"):
        parse_stream_id(value)


# -- the record's Redis layout --------------------------------------------------------------


def test_a_record_round_trips_through_its_hash() -> None:
    stream = StreamPlan(Endpoint("192.0.2.7", 30000, 30001), Endpoint("2001:db8::7", 30002, 30003))
    record = CallRecord(
        call_id="abc@host",
        dialog=ANSWERED,
        policy=Policy.END_TO_END_ONLY,
        mode=Mode.ZRTP,
        end_to_end=True,
        plan=Plan(Mode.ZRTP, True, Relay("relay-1", "10.0.0.1:50053"), (stream, None)),
        replica="sig-1",
        hash_caller=HASH,
        binding=Binding(Outcome.HANDSHAKING, seen_caller=True, detail="x"),
        started=12.5,
        rev=4,
    )
    fields = encode(record)
    assert all(isinstance(v, str) for v in fields.values())
    assert decode(record.call_id, {**fields, "rev": "4"}, Policy.SECURE_ONLY) == record
    early = replace(record, dialog=EARLY)
    assert decode(record.call_id, {**encode(early), "rev": "4"}, Policy.SECURE_ONLY) == early


def test_a_malformed_record_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="malformed"):
        decode("abc", {"rev": "1", "mode": "zrtp"}, Policy.SECURE_ONLY)


def test_a_dialog_without_tags_is_unbound() -> None:
    """An INVITE from a signaling replica of an older release carries no tags."""
    assert not Dialog("sip:carol@d", "sip:bob@d", caller_tag="").bound
    assert RINGING.bound and ANSWERED.bound
