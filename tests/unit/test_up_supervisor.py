"""`quietwire up`'s restart schedule, its relays' and signaling workers' names,
the relays' port slices, and ``--relays`` and ``--signaling`` checked at the
command line."""

from __future__ import annotations

import pytest
from quietwire import cli
from quietwire.embedded.children import describe_status
from quietwire.embedded.supervisor import RESTART_CAP, RESTART_FIRST, RESTART_STABLE, Backoff
from quietwire.embedded.up import (
    MAX_RELAYS,
    MAX_SIGNALING,
    REGISTRY_IDS,
    command,
    relay_names,
    relay_port_range,
    service_names,
    signaling_names,
)


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


def test_signaling_workers_are_named_and_start_after_keyagreement() -> None:
    assert signaling_names(1) == ["signaling"]
    assert signaling_names(3) == ["signaling", "signaling-2", "signaling-3"]
    assert service_names(2, 2) == ["keyagreement", "relay", "relay-2", "signaling", "signaling-2"]
    assert service_names(1) == ["keyagreement", "relay", "signaling"]


def test_each_run_is_the_command_of_its_service_under_its_registry_setting() -> None:
    names = service_names(2, 2)
    assert [command(name) for name in names] == [
        "keyagreement",
        "relay",
        "relay",
        "signaling",
        "signaling",
    ]
    assert {name: REGISTRY_IDS[command(name)].setting for name in names[1:]} == {
        "relay": "QW_RELAY_ID",
        "relay-2": "QW_RELAY_ID",
        "signaling": "QW_REPLICA_ID",
        "signaling-2": "QW_REPLICA_ID",
    }


@pytest.mark.parametrize(
    ("option", "most"), [("--relays", MAX_RELAYS), ("--signaling", MAX_SIGNALING)]
)
@pytest.mark.parametrize("value", ["0", "-1", "17", "two", "1.5"])
def test_a_bad_count_is_a_usage_error(
    option: str, most: int, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert most == 16
    with pytest.raises(SystemExit) as exited:
        cli.parser().parse_args(["up", option, value])
    assert exited.value.code == 2
    assert f"{option}: must be a whole number from 1 to 16" in capsys.readouterr().err


def test_relays_and_signaling_workers_default_to_one() -> None:
    assert cli.parser().parse_args(["up"]).relays == 1
    assert cli.parser().parse_args(["up"]).signaling == 1
    assert cli.parser().parse_args(["up", "--relays", "3"]).relays == 3
    assert cli.parser().parse_args(["up", "--signaling", "16"]).signaling == 16
