"""The phone's command line: what its ZRTP Hello offers."""

from __future__ import annotations

import pytest
from quietwire.phone.cli import _offer
from quietwire.protocols.zrtp.session import DEFAULT_OFFER


def test_key_agreements_narrowed_in_order_with_multistream() -> None:
    offer = _offer("X255, DH3k")
    assert offer.key_agreements == (b"X255", b"DH3k", b"Mult")
    assert offer.hashes == DEFAULT_OFFER.hashes
    assert _offer(None) is DEFAULT_OFFER


@pytest.mark.parametrize("value", ["X448", "Mult", ","])
def test_unknown_key_agreement_named(value: str) -> None:
    with pytest.raises(ValueError, match="choose from DH2k, DH3k, EC25, EC38, X255"):
        _offer(value)


def test_password_on_the_command_line_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12 finding 14: ``--password`` would show it to every user in ``ps``."""
    from quietwire.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(["phone", "answer", "--registrar", "127.0.0.1", "--user", "a", "--password", "s3cr3t"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "--password-stdin or $QW_PHONE_PASSWORD" in err and "s3cr3t" not in err
