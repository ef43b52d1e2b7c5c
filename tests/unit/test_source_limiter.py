"""The per-source token bucket (signaling/limits.py): a burst, then the rate."""

from __future__ import annotations

import pytest
from quietwire.signaling import limits
from quietwire.signaling.limits import SourceLimiter

from tests.support.clock import FakeClock


def test_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    limiter = SourceLimiter(clock, rate=2.0, burst=3.0)
    assert [limiter.allow("192.0.2.1") for _ in range(4)] == [True, True, True, False]
    clock.t = 0.5  # one token back at 2 per second
    assert [limiter.allow("192.0.2.1") for _ in range(2)] == [True, False]
    clock.t = 100.0  # refilled to the burst, never above it
    assert [limiter.allow("192.0.2.1") for _ in range(4)] == [True, True, True, False]


def test_sources_are_limited_apart_and_refusals_counted() -> None:
    limiter = SourceLimiter(FakeClock(), rate=1.0, burst=1.0)
    refused = limits.LIMITED.labels("rate")
    before = refused._value.get()
    assert limiter.allow("192.0.2.1") and not limiter.allow("192.0.2.1")
    assert limiter.allow("192.0.2.2")
    assert refused._value.get() == before + 1


def test_the_table_of_sources_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_SOURCES", 3)
    limiter = SourceLimiter(FakeClock(), rate=1.0, burst=1.0)
    for i in range(10):
        limiter.allow(f"192.0.2.{i}")
    assert len(limiter._sources) == 3
    assert limiter.allow("192.0.2.0")  # forgotten (oldest first): a full bucket again
