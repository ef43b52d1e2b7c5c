"""The soak (`make soak`, bench/soak.py) in short: secure calls with churn and
re-registration through a real `quietwire up` leave no failed call, relay port,
Redis key or process behind. RSS slopes are printed, not asserted (too short to
mean anything, and speed is not behaviour)."""

from __future__ import annotations

import shutil

import pytest
import redis as redis_sync
from quietwire.keyagreement.calls import CALL_KEY, ENDED_TTL
from quietwire.signaling.dialogs import DIALOG_KEY
from quietwire.signaling.locations import LOCATION_KEY
from quietwire.signaling.users import USER_KEY

from bench.soak import Options, run
from bench.soak_checks import classify_keys, slope_per_minute


@pytest.mark.timeout(300)
def test_short_soak_leaves_nothing_behind() -> None:
    if shutil.which("cc") is None:
        pytest.fail("cc not found: the soak's media generator is C (install gcc)")
    options = Options(
        calls=3,
        seconds=20,
        hold=4,
        reregister=6,
        sample=1,
        warmup=5,
        rss_bound=0,
        check_rss=False,
    )
    result = run(options)
    print(result.report())
    tally = result.tally
    assert tally.completed >= options.calls, result.report()
    assert tally.attempts == tally.completed, result.report()
    assert tally.registrations > 2 * options.calls, "the phones registered again"
    assert tally.received > 0
    assert result.relay.pairs > 0 and result.relay.leaked == 0 and result.relay.calls == 0
    assert not result.keys.leaked, result.report()
    assert result.keys.kept.get("ended calls (TTL)", 0) >= tally.completed
    assert not result.left_processes
    assert set(result.slopes) == {"signaling", "keyagreement", "relay", "redis"}
    assert not result.problems, result.report()


def test_what_counts_as_a_leaked_key(redis_url: str) -> None:
    """The soak's Redis check can fail: a live call record, a dialog, a registration
    without a TTL are leaks; users, TTL'd registrations and ended calls are not."""
    client = redis_sync.Redis.from_url(redis_url)
    try:
        client.hset(USER_KEY.format(realm="r", username="u"), "ha1", "x")
        client.hset(LOCATION_KEY.format(aor="sip:u@r"), "b", "x")
        client.expire(LOCATION_KEY.format(aor="sip:u@r"), 600)
        client.hset(LOCATION_KEY.format(aor="sip:v@r"), "b", "x")
        client.hset(CALL_KEY.format(call_id="ended"), mapping={"ended": "bye"})
        client.expire(CALL_KEY.format(call_id="ended"), ENDED_TTL)
        client.hset(CALL_KEY.format(call_id="live"), mapping={"ended": ""})
        client.expire(CALL_KEY.format(call_id="live"), 3600)
        client.set(DIALOG_KEY.format(call_id="live"), "{}", ex=3600)
        keys = classify_keys(client)
    finally:
        client.close()
    assert keys.kept == {"users": 1, "registrations": 1, "ended calls (TTL)": 1}
    assert set(keys.leaked) == {
        LOCATION_KEY.format(aor="sip:v@r"),
        CALL_KEY.format(call_id="live"),
        DIALOG_KEY.format(call_id="live"),
    }


def test_rss_slope_is_least_squares_per_minute() -> None:
    assert slope_per_minute([(0, 100), (30, 150), (60, 200)]) == pytest.approx(100)
    assert slope_per_minute([(0, 100), (60, 100)]) == 0
    assert slope_per_minute([(5, 100)]) == 0
