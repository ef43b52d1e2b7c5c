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
