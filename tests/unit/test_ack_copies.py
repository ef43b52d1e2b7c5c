"""The one-use local copies of recorded dialogs that route a caller's ACK of a 2xx
without reading Redis: only the caller's ACK on its own flow gets one, once,
within 64*T1; the table is capped, oldest first."""

from __future__ import annotations

from quietwire.protocols.sip.message import Request
from quietwire.signaling.ackcopies import ACK_COPIES_MAX, ACK_COPY_LIFETIME, AckCopies
from quietwire.signaling.dialogs import Dialog, Side

from tests.support.clock import FakeClock
from tests.unit.test_signaling_proxy import request

CALLER_FLOW, CALLEE_FLOW = "r1.1", "r1.2"


def dialog(call_id: str = "c1") -> Dialog:
    return Dialog(
        call_id,
        1,
        Side(CALLER_FLOW, "<sip:alice@192.0.2.1>", "<sip:alice@example.org>;tag=at"),
        Side(CALLEE_FLOW, "<sip:bob@192.0.2.2>", "<sip:bob@example.org>;tag=bt"),
    )


def ack(call_id: str = "c1", from_tag: str = "at", to_tag: str = "bt") -> Request:
    return request(
        "ACK",
        from_=f"<sip:alice@example.org>;tag={from_tag}",
        to=f"<sip:bob@example.org>;tag={to_tag}",
        call_id=call_id,
    )


def test_the_callers_ack_on_its_flow_uses_the_copy_once() -> None:
    copies = AckCopies(FakeClock())
    copies.keep(dialog())
    assert copies.use(ack(), CALLER_FLOW) == dialog()
    assert copies.use(ack(), CALLER_FLOW) is None  # a retransmission reads Redis
    assert len(copies) == 0


def test_another_flow_or_other_tags_get_nothing_and_leave_the_copy() -> None:
    copies = AckCopies(FakeClock())
    copies.keep(dialog())
    refused = [
        (ack(), CALLEE_FLOW),  # the right tags from the other phone's flow
        (ack(), "r2.9"),  # ... or from a stranger's
        (ack(from_tag="bt", to_tag="at"), CALLEE_FLOW),  # the callee's own tags
        (ack(to_tag="other-fork"), CALLER_FLOW),  # another fork's 2xx
        (ack(from_tag="xx"), CALLER_FLOW),
        (ack(call_id="c2"), CALLER_FLOW),
    ]
    for message, flow_id in refused:
        assert copies.use(message, flow_id) is None
    assert copies.use(ack(), CALLER_FLOW) == dialog()  # still there for the caller


def test_a_copy_serves_64_t1_after_the_2xx() -> None:
    clock = FakeClock(100.0)
    copies = AckCopies(clock)
    copies.keep(dialog())
    clock.t += ACK_COPY_LIFETIME - 0.01
    assert copies.use(ack(), CALLER_FLOW) == dialog()
    copies.keep(dialog())
    clock.t += ACK_COPY_LIFETIME
    assert copies.use(ack(), CALLER_FLOW) is None
    assert len(copies) == 0


def test_expired_copies_go_when_another_is_kept() -> None:
    clock = FakeClock()
    copies = AckCopies(clock)
    for n in range(5):
        copies.keep(dialog(f"old{n}"))
    clock.t += ACK_COPY_LIFETIME
    copies.keep(dialog("new"))
    assert len(copies) == 1


def test_the_table_is_capped_the_oldest_dropped() -> None:
    copies = AckCopies(FakeClock())
    for n in range(ACK_COPIES_MAX + 3):
        copies.keep(dialog(f"c{n}"))
    assert len(copies) == ACK_COPIES_MAX
    assert copies.use(ack("c0"), CALLER_FLOW) is None
    assert copies.use(ack("c2"), CALLER_FLOW) is None
    assert copies.use(ack("c3"), CALLER_FLOW) == dialog("c3")
    last = f"c{ACK_COPIES_MAX + 2}"
    assert copies.use(ack(last), CALLER_FLOW) == dialog(last)


def test_a_dialog_kept_again_is_the_newest_and_replaces_its_copy() -> None:
    copies = AckCopies(FakeClock(), capacity=2)
    copies.keep(dialog("a"))
    copies.keep(dialog("b"))
    copies.keep(dialog("a"))  # a second 2xx (another fork) recorded the call again
    copies.keep(dialog("c"))
    assert copies.use(ack("b"), CALLER_FLOW) is None
    assert copies.use(ack("a"), CALLER_FLOW) == dialog("a")


def test_a_dropped_copy_serves_nothing() -> None:
    copies = AckCopies(FakeClock())
    copies.keep(dialog())
    copies.drop("c1")
    copies.drop("never-kept")
    assert copies.use(ack(), CALLER_FLOW) is None
