"""The SDP that comes back through the proxy (signaling/answers.py): the dialog a
2xx sets up and the SDP each side was sent (pure), and what a refused 18x, 2xx or
PRACK answer does. The planner and the dialog store here only record their calls;
the transactions and flows are real."""

from __future__ import annotations

from dataclasses import dataclass, field

from quietwire.protocols.sip.message import Request, Response, reply
from quietwire.protocols.sip.transaction import (
    ClientInviteTransaction,
    ServerInviteTransaction,
    ServerKey,
)
from quietwire.signaling.answers import Answers, answered_dialog, recorded_dialog, sdp_sent
from quietwire.signaling.contexts import Branch, Context
from quietwire.signaling.dialogs import Dialog, Party
from quietwire.signaling.early import Latched
from quietwire.signaling.flows import Flow
from quietwire.signaling.media import Refusal
from quietwire.signaling.targets import Target

from tests.unit.test_signaling_early import SDP_A, SDP_B, Recorder
from tests.unit.test_signaling_proxy import US, request
from tests.unit.test_signaling_timers import sent, setup
from tests.unit.test_sip_transactions import Clock

CALLER_CONTACT = "<sip:alice@192.0.2.1:5061;transport=tls>"
CALLEE_CONTACT = "<sip:bob@192.0.2.2:5061;transport=tls>"
REFUSED = Refusal(488, "quietwire: refused for the test")
AWAY = Refusal(503, "quietwire: media planning unavailable")


def invite(
    body: bytes = SDP_A, *, contact: bool = True, to: str = "<sip:bob@example.org>"
) -> Request:
    extra = f"Contact: {CALLER_CONTACT}\r\n" if contact else ""
    return request("INVITE", body=body, extra=extra, to=to)


def context_of(message: Request) -> Context:
    server = ServerInviteTransaction(message, True, Clock())
    flow = Flow("r1.1", "TLS", ("192.0.2.1", 5061), None)
    context = Context(message, server, flow, ServerKey.of(message), "192.0.2.1")
    context.initial_invite = message.to.tag is None
    return context


def branch_of(context: Context, flow_id: str = "r1.2", body: bytes = b"sent:" + SDP_A) -> Branch:
    out = context.request.copy()
    out.body = body
    out.headers.add("Via", "SIP/2.0/TLS example.org:5061;branch=z9hG4bKb1", first=True)
    tx = ClientInviteTransaction(out, True, Clock())
    return Branch("z9hG4bKb1", Target.of_flow(flow_id), tx, out)


def ok(message: Request, body: bytes = b"", *, contact: bool = True) -> Response:
    response = reply(message, 200, "OK", to_tag="bt")
    if contact:
        response.headers.add("Contact", CALLEE_CONTACT)
    response.body = body
    return response


# -- pure: the dialog a 2xx sets up, the SDP each side holds ------------------------------------


def test_the_2xx_sets_up_the_dialog_of_both_flows_and_contacts() -> None:
    context = context_of(invite())
    dialog = answered_dialog(context, branch_of(context), ok(context.request))
    assert dialog is not None
    assert (dialog.call_id, dialog.cseq) == ("c1", 1)
    assert (dialog.caller.flow_id, dialog.caller.contact, dialog.caller.tag) == (
        "r1.1",
        CALLER_CONTACT,
        "at",
    )
    assert (dialog.callee.flow_id, dialog.callee.contact, dialog.callee.tag) == (
        "r1.2",
        CALLEE_CONTACT,
        "bt",
    )


def test_no_dialog_without_both_contacts() -> None:
    without = context_of(invite(contact=False))
    assert answered_dialog(without, branch_of(without), ok(without.request)) is None
    context = context_of(invite())
    answer = ok(context.request, contact=False)
    assert answered_dialog(context, branch_of(context), answer) is None
    assert recorded_dialog(context, branch_of(context), answer) is None


def test_the_recorded_legs_hold_what_each_phone_was_sent() -> None:
    """The callee: the INVITE as forwarded; the caller: the 2xx's SDP, or its fork's
    early SDP when the 2xx has none (the answer was in a reliable 18x)."""
    context = context_of(invite())
    branch = branch_of(context)
    dialog = recorded_dialog(context, branch, ok(context.request, b"planned:" + SDP_B))
    assert dialog is not None
    assert dialog.caller_leg.sdp == b"planned:" + SDP_B
    assert dialog.caller_leg.cseq == 1
    assert dialog.callee_leg.sdp == b"sent:" + SDP_A
    context.early.answers["bt"] = Latched("bt", SDP_B, b"early:" + SDP_B)
    early = recorded_dialog(context, branch, ok(context.request))
    assert early is not None and early.caller_leg.sdp == b"early:" + SDP_B
    context.early.answers.clear()
    none = recorded_dialog(context, branch, ok(context.request))
    assert none is not None and none.caller_leg.sdp == b""


def test_an_in_dialog_answer_notes_what_each_side_was_sent() -> None:
    context = context_of(invite(to="<sip:bob@example.org>;tag=bt"))
    branch = branch_of(context)
    assert sdp_sent(context, branch, b"answer") == []  # not the call's own request
    context.party = Party.CALLER
    assert sdp_sent(context, branch, b"answer") == [
        (Party.CALLEE, b"sent:" + SDP_A),
        (Party.CALLER, b"answer"),
    ]
    assert sdp_sent(context, branch, b"") == [(Party.CALLEE, b"sent:" + SDP_A)]
    info = context_of(request("INFO", to="<sip:bob@example.org>;tag=bt"))
    info.party = Party.CALLER
    assert sdp_sent(info, branch_of(info), b"answer") == []  # no offer in an INFO


# -- what a refusal does -------------------------------------------------------------------------


@dataclass
class Dialogs:
    """A dialog store that notes what it is told."""

    recorded: list[Dialog] = field(default_factory=list)
    noted: list[tuple[Party, bytes]] = field(default_factory=list)

    async def record(self, dialog: Dialog) -> None:
        self.recorded.append(dialog)

    async def forwarded_sdp(self, call_id: str, to: Party, sdp: bytes) -> None:
        self.noted.append((to, sdp))


@dataclass
class Rig:
    answers: Answers
    planner: Recorder
    dialogs: Dialogs
    context: Context
    branch: Branch
    caller: Flow
    callee: Flow
    ended: list[tuple[str, str]]


async def rig(refusal: Refusal | None = None, message: Request | None = None) -> Rig:
    """An INVITE (``message``, an initial one by default) forked to one phone."""
    tx, _, caller, callee = setup()
    ended: list[tuple[str, str]] = []

    async def end_call(call_id: str, reason: str) -> bool:
        ended.append((call_id, reason))
        return True

    planner, dialogs = Recorder(refusal=refusal), Dialogs()
    answers = Answers(
        address=US,
        media=planner,
        dialogs=dialogs,
        tx=tx,
        router=tx.router,
        end_call=end_call,
    )
    context = tx.open(caller, message or invite())
    assert context is not None
    context.initial_invite = context.request.to.tag is None
    context.offer_from_callee = False
    out = context.request.copy()
    out.headers.add("Via", US.via(callee.id), first=True)
    await tx.fork(context, Target.of_flow(callee.id), out)
    (branch,) = context.branches.values()
    sent(callee)
    return Rig(answers, planner, dialogs, context, branch, caller, callee, ended)


def early_answer(branch: Branch) -> Response:
    response = reply(branch.request, 183, "Session Progress", to_tag="bt")
    response.body = SDP_B
    return response


async def test_an_early_answer_goes_on_planned() -> None:
    r = await rig()
    response = early_answer(r.branch)
    assert await r.answers.provisional(r.context, r.branch, response)
    assert response.body == b"planned:" + SDP_B


async def test_a_refused_early_answer_cancels_its_fork_with_the_refusal_as_its_answer() -> None:
    r = await rig(REFUSED)
    assert not await r.answers.provisional(r.context, r.branch, early_answer(r.branch))
    assert r.branch.cancelled
    assert r.branch.final is not None and r.branch.final.status == 488
    assert REFUSED.warning in (r.branch.final.headers.get("Warning") or "")
    assert sent(r.caller) == []  # the caller hears it unless another fork answers
    assert not r.context.finished


async def test_an_early_answer_refused_for_want_of_planning_is_a_503_now() -> None:
    r = await rig(AWAY)
    assert not await r.answers.provisional(r.context, r.branch, early_answer(r.branch))
    (answer,) = sent(r.caller)
    assert answer.startswith(b"SIP/2.0 503 ")
    assert b"\r\nRetry-After: " in answer
    assert r.context.finished and r.planner.ended == ["c1"]


async def test_a_2xx_records_its_dialog() -> None:
    r = await rig()
    answer = ok(r.branch.request, SDP_B)
    assert await r.answers.final(r.context, r.branch, answer)
    assert answer.body == b"planned:" + SDP_B
    (dialog,) = r.dialogs.recorded
    assert dialog.caller_leg.sdp == b"planned:" + SDP_B
    assert dialog.callee.flow_id == r.callee.id


async def test_a_refused_2xx_to_an_initial_invite_is_acked_and_byed() -> None:
    r = await rig(REFUSED)
    assert not await r.answers.final(r.context, r.branch, ok(r.branch.request, SDP_B))
    assert [m.split(b" ", 1)[0] for m in sent(r.callee)] == [b"ACK", b"BYE"]
    assert r.branch.final is not None and r.branch.final.status == 488
    assert r.dialogs.recorded == [] and r.ended == []


async def test_a_refused_2xx_to_a_reinvite_ends_the_call() -> None:
    r = await rig(REFUSED, invite(to="<sip:bob@example.org>;tag=bt"))
    assert not await r.answers.final(r.context, r.branch, ok(r.branch.request, SDP_B))
    assert r.ended == [("c1", REFUSED.warning)]
    assert sent(r.callee) == []


async def test_a_prack_answers_the_offer_of_a_reliable_18x() -> None:
    r = await rig()
    r.context.early.offer = Latched("bt", SDP_B, b"planned:" + SDP_B)
    prack = request("PRACK", to="<sip:bob@example.org>;tag=bt", body=SDP_A)
    no_sdp = r.answers.tx.open(r.caller, request("PRACK", to="<sip:bob@example.org>;tag=bt"))
    assert no_sdp is not None and await r.answers.prack(no_sdp) is None
    context = r.answers.tx.open(r.caller, prack)
    assert context is not None
    assert await r.answers.prack(context)
    assert prack.body == b"planned:" + SDP_A
    assert r.context.early.offer_answered


async def test_a_refused_prack_answer_ends_the_ringing_call() -> None:
    r = await rig(REFUSED)
    r.context.early.offer = Latched("bt", SDP_B, b"planned:" + SDP_B)
    prack = request("PRACK", to="<sip:bob@example.org>;tag=bt", body=SDP_A)
    context = r.answers.tx.open(r.caller, prack)
    assert context is not None
    assert await r.answers.prack(context) is False
    assert sent(r.caller)[0].startswith(b"SIP/2.0 488 ")
    assert r.ended == [("c1", REFUSED.warning)]
