"""`quietwire up`'s restart schedule, its relays' names and port slices, and
``--relays`` checked at the command line."""

from __future__ import annotations

import pytest
from quietwire import cli
from quietwire.embedded.children import describe_status
from quietwire.embedded.supervisor import RESTART_CAP, RESTART_FIRST, RESTART_STABLE, Backoff
from quietwire.embedded.up import MAX_RELAYS, relay_names, relay_port_range, service_names


def test_restarts_back_off_to_the_cap_and_reset_after_a_stable_run() -> None:
    backoff = Backoff()
    delays = [backoff.after(1.0) for _ in range(10)]
    assert delays[:4] == [RESTART_FIRST, 2 * RESTART_FIRST, 4 * RESTART_FIRST, 8 * RESTART_FIRST]
    assert max(delays) == delays[-1] == RESTART_CAP
    assert backoff.after(RESTART_STABLE) == RESTART_FIRST
    assert backoff.after(0.0) == 2 * RESTART_FIRST


def test_exit_statuses_read_as_a_person_reads_them() -> None:
    assert describe_status(1) == "1"
    assert describe_status(-9) == "killed by SIGKILL"
    assert describe_status(-200) == "killed by signal 200"


def test_relays_are_named_and_given_disjoint_port_slices() -> None:
    assert relay_names(1) == ["relay"]
    assert service_names(3) == ["keyagreement", "relay", "relay-2", "relay-3", "signaling"]
    slices = [relay_port_range(index, 3) for index in range(3)]
    assert slices == [(30000, 33331), (33332, 36663), (36664, 39995)]
    for low, high in slices:
        assert low % 2 == 0 and (high - low + 1) % 2 == 0
    last = relay_port_range(MAX_RELAYS - 1, MAX_RELAYS)
    assert last[1] <= 39999 and last[1] - last[0] >= 3


@pytest.mark.parametrize("value", ["0", "-1", str(MAX_RELAYS + 1), "two"])
def test_a_bad_relay_count_is_a_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.parser().parse_args(["up", "--relays", value])
    assert exited.value.code == 2
    assert "--relays: must be a whole number from 1 to 16" in capsys.readouterr().err


def test_relays_default_to_one() -> None:
    assert cli.parser().parse_args(["up"]).relays == 1
    assert cli.parser().parse_args(["up", "--relays", "3"]).relays == 3
