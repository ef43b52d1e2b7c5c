"""The one rate-limited error log of every service (SIP handling, background loops)."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry, Counter
from quietwire.runtime.errorlog import ErrorLog

from tests.support.clock import FakeClock


def test_each_error_is_counted_and_each_kind_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counter = Counter("errors", "test", ["where", "exception"], registry=CollectorRegistry())
    clock = FakeClock()
    errors = ErrorLog(logging.getLogger("test.errorlog"), clock, every=60.0, counter=counter)
    with caplog.at_level(logging.ERROR, "test.errorlog"):
        assert errors.record("heartbeat", ValueError("x"))
        assert not errors.record("heartbeat", ValueError("y"))
        assert errors.record("heartbeat", KeyError("z"))  # another kind
        assert errors.record("expiry", ValueError("v"))  # another place
        clock.t = 61.0
        assert errors.record("heartbeat", ValueError("w"))
    assert [r.getMessage() for r in caplog.records] == [
        "heartbeat failed",
        "heartbeat failed",
        "expiry failed",
        "heartbeat failed",
    ]
    assert caplog.records[-1].__dict__["suppressed"] == 1
    assert counter.labels("heartbeat", "ValueError")._value.get() == 3
    assert counter.labels("heartbeat", "KeyError")._value.get() == 1
