"""HmacSha256 gives what ``hmac.digest`` gives, for any key, prefix and message."""

from __future__ import annotations

import hmac

from hypothesis import given
from hypothesis import strategies as st
from quietwire.protocols.hmac_sha256 import HmacSha256


@given(st.binary(max_size=200), st.binary(max_size=150), st.lists(st.binary(max_size=150)))
def test_as_hmac_digest(key: bytes, prefix: bytes, messages: list[bytes]) -> None:
    mac = HmacSha256(key, prefix)
    for data in messages:  # the states kept are never changed by a MAC
        assert mac.digest(data) == hmac.digest(key, prefix + data, "sha256")
