"""The relay's leg memory writer takes note without I/O: one pending write per call
however often it changes, and a cap past which changes are skipped and counted."""

from __future__ import annotations

import logging

import redis.asyncio as redis
from quietwire.relay.legs import RelayCall
from quietwire.relay.memory import MEMORY_SKIPPED, LegMemoryWriter
from quietwire.runtime.errorlog import ErrorLog


def call(call_id: str) -> RelayCall:
    return RelayCall(call_id, {}, last_packet=0.0, reported=0.0)


def writer(cap: int) -> LegMemoryWriter:
    client = redis.Redis()  # never reached: nothing here writes
    return LegMemoryWriter(client, "r", {}, ErrorLog(logging.getLogger(__name__)), cap=cap)


def test_changes_coalesce_and_are_capped() -> None:
    notes = writer(cap=2)
    skipped = MEMORY_SKIPPED._value.get()
    for _ in range(5):
        notes.changed(call("a#0"))
    assert notes.pending == 1
    notes.changed(call("b#0"))
    notes.changed(call("c#0"))  # past the cap
    assert notes.pending == 2
    assert MEMORY_SKIPPED._value.get() == skipped + 1
