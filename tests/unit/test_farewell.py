"""Which signaling workers `quietwire up`'s farewell asks to end a call, in turn."""

from __future__ import annotations

from quietwire.embedded.farewell import asked_in_turn

WORKERS = {"signaling-a1": "127.0.0.1:7001", "signaling-2-b2": "127.0.0.1:7002"}


def test_a_call_is_asked_of_its_own_worker_first_then_the_others() -> None:
    assert asked_in_turn("signaling-2-b2", WORKERS) == ["127.0.0.1:7002", "127.0.0.1:7001"]


def test_a_call_of_a_dead_or_unknown_worker_is_asked_of_every_live_one() -> None:
    assert asked_in_turn("signaling-dead", WORKERS) == ["127.0.0.1:7001", "127.0.0.1:7002"]
    assert asked_in_turn("", WORKERS) == ["127.0.0.1:7001", "127.0.0.1:7002"]


def test_no_live_worker_no_one_to_ask() -> None:
    assert asked_in_turn("signaling-a1", {}) == []
