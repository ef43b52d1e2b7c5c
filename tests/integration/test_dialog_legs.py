"""The dialog record's legs in Redis: each side's last SDP and the CSeq numbers
the platform takes in a dialog (RFC 3261 section 12.2): whatever order a phone's
request and the platform's own arrive in, the other phone sees numbers that go
up; nothing is left or created once the call's record is taken."""

from __future__ import annotations

from quietwire.signaling.dialogs import (
    DIALOG_TTL,
    LEGS_KEY,
    DialogStore,
    Party,
)

from tests.integration.conftest import DIALOG

CALLER, CALLEE = Party.CALLER, Party.CALLEE


async def test_the_legs_come_back_with_the_dialog(store: DialogStore) -> None:
    got = await store.get(DIALOG.call_id)
    assert got == DIALOG
    assert 0 < await store.redis.ttl(LEGS_KEY.format(call_id=DIALOG.call_id)) <= DIALOG_TTL
    await store.forwarded_sdp(DIALOG.call_id, CALLEE, b"v=0 moved")
    got = await store.get(DIALOG.call_id)
    assert got is not None and got.callee_leg.sdp == b"v=0 moved"


async def test_a_phones_requests_go_above_the_platforms_numbers(store: DialogStore) -> None:
    call = DIALOG.call_id
    assert await store.phone_request(call, CALLER, 21) == 0  # nothing taken yet: unchanged
    taken = await store.platform_number(call, CALLER)
    assert taken == 22
    offset = await store.phone_request(call, CALLER, 22)  # the caller's next request
    assert offset is not None and 22 + offset > taken
    # A request the caller sent just before the platform took its number...
    assert await store.phone_request(call, CALLER, 23) == offset
    again = await store.platform_number(call, CALLER)
    assert again is not None and again > 23 + offset
    # ...and the callee, who never sent any: its first request, whatever its number.
    first = await store.platform_number(call, CALLEE)
    assert first == 1
    later = await store.phone_request(call, CALLEE, 1)
    assert later is not None and 1 + later > first


async def test_nothing_outlives_the_taken_dialog(store: DialogStore) -> None:
    call = DIALOG.call_id
    assert await store.take(call) == DIALOG
    assert await store.phone_request(call, CALLER, 30) is None
    assert await store.platform_number(call, CALLEE) is None
    await store.forwarded_sdp(call, CALLER, b"v=0 late")
    assert not await store.redis.exists(LEGS_KEY.format(call_id=call))
    assert await store.get(call) is None


async def test_a_new_record_replaces_every_leg_field(store: DialogStore) -> None:
    call = DIALOG.call_id
    await store.forwarded_sdp(call, CALLEE, b"v=0 moved")
    await store.platform_number(call, CALLER)
    await store.phone_request(call, CALLEE, 7)
    await store.record(DIALOG)
    assert await store.get(call) == DIALOG
    assert await store.redis.hlen(LEGS_KEY.format(call_id=call)) == 6
