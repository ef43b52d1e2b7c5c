"""The dialog store's scripts and copies against a real Redis: the caller's ACK
from the replica's one-use copy, dropped by any change of the dialog; a party's
BYE on its own flow checked and taken in one script, anything else left."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import pytest
from quietwire.protocols.sip.message import Request
from quietwire.signaling.dialogs import DIALOG_KEY, LEGS_KEY, DialogStore, Party

from tests.integration.conftest import DIALOG
from tests.unit.test_signaling_proxy import request

CALL = DIALOG.call_id
CALLER_FLOW, CALLEE_FLOW = DIALOG.caller.flow_id, DIALOG.callee.flow_id


def in_dialog(method: str, from_tag: str | None = "a", to_tag: str = "b") -> Request:
    from_ = "<sip:x@d>" if from_tag is None else f"<sip:x@d>;tag={from_tag}"
    return request(method, from_=from_, to=f"<sip:y@d>;tag={to_tag}", call_id=CALL)


async def forget(store: DialogStore) -> None:
    """Redis loses the dialog behind the store's back: only a copy can still answer."""
    await store.redis.delete(DIALOG_KEY.format(call_id=CALL), LEGS_KEY.format(call_id=CALL))


async def test_the_callers_ack_is_served_once_from_the_copy(store: DialogStore) -> None:
    await forget(store)
    assert await store.for_ack(in_dialog("ACK"), CALLER_FLOW) == DIALOG
    assert await store.for_ack(in_dialog("ACK"), CALLER_FLOW) is None  # Redis's answer


async def test_an_ack_from_another_flow_reads_redis(store: DialogStore) -> None:
    await forget(store)
    assert await store.for_ack(in_dialog("ACK"), CALLEE_FLOW) is None
    assert await store.for_ack(in_dialog("ACK"), CALLER_FLOW) == DIALOG  # still the caller's


CHANGES: list[Callable[[DialogStore], Awaitable[object]]] = [
    lambda s: s.take(CALL),
    lambda s: s.forwarded_sdp(CALL, Party.CALLER, b"v=0 moved"),
    lambda s: s.phone_request(CALL, Party.CALLEE, 3),
    lambda s: s.platform_number(CALL, Party.CALLER),
    lambda s: s.for_bye(in_dialog("BYE", "b", "a"), CALLEE_FLOW),
]


@pytest.mark.parametrize("change", CHANGES, ids=["take", "sdp", "phone", "platform", "bye"])
async def test_any_change_drops_the_copy(
    store: DialogStore, change: Callable[[DialogStore], Awaitable[object]]
) -> None:
    await change(store)
    await forget(store)
    assert await store.for_ack(in_dialog("ACK"), CALLER_FLOW) is None


async def test_a_partys_bye_on_its_flow_takes_the_dialog(store: DialogStore) -> None:
    assert await store.for_bye(in_dialog("BYE", "b", "a"), CALLEE_FLOW) == (DIALOG, True)
    assert not await store.redis.exists(LEGS_KEY.format(call_id=CALL))
    assert await store.get(CALL) is None
    assert await store.for_bye(in_dialog("BYE", "b", "a"), CALLEE_FLOW) == (None, False)


async def test_the_callers_bye_on_its_flow_takes_the_dialog(store: DialogStore) -> None:
    assert await store.for_bye(in_dialog("BYE"), CALLER_FLOW) == (DIALOG, True)
    assert await store.get(CALL) is None


@pytest.mark.parametrize(
    ("bye", "flow_id"),
    [
        (in_dialog("BYE"), CALLEE_FLOW),  # the caller's tags on the callee's flow
        (in_dialog("BYE", "b", "a"), "r.9"),  # the callee's tags on a stranger's flow
        (in_dialog("BYE", "b", "x"), CALLEE_FLOW),  # a made-up tag
        (in_dialog("BYE", "a", "a"), CALLER_FLOW),
        (in_dialog("BYE", None, "b"), CALLER_FLOW),
    ],
    ids=["other-party-flow", "stranger-flow", "made-up-tag", "own-tag-twice", "no-from-tag"],
)
async def test_any_other_bye_leaves_the_dialog(
    store: DialogStore, bye: Request, flow_id: str
) -> None:
    assert await store.for_bye(bye, flow_id) == (DIALOG, False)
    assert await store.get(CALL) == DIALOG
    assert len(store.copies) == 1  # nothing changed: the caller's ACK still has its copy


async def test_a_record_without_its_tags_is_never_taken_by_a_bye(store: DialogStore) -> None:
    """Written before the records held both tags: read, left for the proxy's own check."""
    key = DIALOG_KEY.format(call_id=CALL)
    record = json.loads(await store.redis.get(key))
    del record["caller_tag"], record["callee_tag"]
    await store.redis.set(key, json.dumps(record))
    assert await store.for_bye(in_dialog("BYE", "b", "a"), CALLEE_FLOW) == (DIALOG, False)
    assert await store.take(CALL) == DIALOG
