"""Every ``quietwire`` subcommand runs its own handler; an unknown one is a usage error."""

from __future__ import annotations

import argparse

import pytest
from quietwire import cli

#: One command line per subcommand, and the handler it must reach.
COMMANDS: dict[str, tuple[list[str], str]] = {
    "signaling": (["signaling"], "run_service"),
    "keyagreement": (["keyagreement"], "run_service"),
    "relay": (["relay"], "run_service"),
    "user": (["user", "list"], "run_user"),
    "up": (["up"], "run_up"),
    "phone": (["phone", "answer", "--registrar", "127.0.0.1", "--user", "bob"], "run_phone"),
    "calls": (["calls"], "run_calls"),
    "drain-relay": (["drain-relay"], "run_drain_relay"),
    "health": (["health"], "run_health"),
    "pki": (["pki", "--dir", "pki"], "run_pki"),
}
HANDLERS = sorted({handler for _, handler in COMMANDS.values()})


def subcommands() -> set[str]:
    (commands,) = (
        action for action in cli.parser()._actions if isinstance(action, argparse._SubParsersAction)
    )
    return set(commands.choices)


def test_every_subcommand_is_listed_here() -> None:
    assert subcommands() == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_subcommand_reaches_its_handler(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[tuple[str, str]] = []
    for name in HANDLERS:

        def record(args: argparse.Namespace, name: str = name) -> int:
            called.append((name, args.command))
            return 0

        monkeypatch.setattr(cli, name, record)
    argv, handler = COMMANDS[command]
    assert cli.main(argv) == 0
    assert called == [(handler, command)]


def test_unknown_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["frobnicate"])
    assert exited.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_calls_migrate_parses_its_call_and_relay() -> None:
    args = cli.parser().parse_args(["calls", "migrate", "abc@host", "--to", "relay-2"])
    assert (args.call_id, args.target, args.to) == ("migrate", "abc@host", "relay-2")
    drain = cli.parser().parse_args(["drain-relay", "--migrate", "--timeout", "30"])
    assert (drain.migrate, drain.timeout) == (True, 30.0)


@pytest.mark.parametrize(
    "argv", [["calls", "migrate"], ["calls", "abc@host", "extra"], ["calls", "abc", "--to", "r"]]
)
def test_calls_migrate_misused_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """No call to move, or a second argument / --to without 'migrate': exit 2 before
    any settings are read or keyagreement asked."""
    assert cli.main(argv) == cli.EXIT_USAGE
    assert "migrate" in capsys.readouterr().err
