"""Nonces are taken only by the replica that minted them, and each nonce-count once
(protocols/sip/nonces.py): a captured request cannot be replayed, and what a
replica remembers for it stays bounded."""

from __future__ import annotations

import base64
import struct

from quietwire.protocols.hmac_sha256 import HmacSha256
from quietwire.protocols.sip.digest import DigestAlgorithm
from quietwire.protocols.sip.nonces import NonceCheck, NonceCounts, NonceMint

MD5 = DigestAlgorithm.MD5
SECRET = b"k" * 32


def test_another_minter_nonce_is_stale_not_forged() -> None:
    """Same secret, another process (another replica, or this one restarted): the
    phone is asked again with stale=true, never refused."""
    mint, other = NonceMint(SECRET), NonceMint(SECRET)
    nonce = other.mint(1000.0, MD5)
    assert other.check(nonce, 1000.0, MD5) is NonceCheck.FRESH
    assert mint.check(nonce, 1000.0, MD5) is NonceCheck.STALE


def test_a_nonce_of_the_algorithm_bound_layout_is_challenged_again() -> None:
    """The layout before the minter (time, algorithm, random, MAC under another
    label): not ours, so a fresh challenge rather than a refusal."""
    body = struct.pack("!QB", 1_000_000, MD5.nonce_code) + bytes(7)
    mac = HmacSha256(SECRET, b"quietwire digest nonce, algorithm bound:").digest(body)[:12]
    nonce = base64.urlsafe_b64encode(body + mac).decode().rstrip("=")
    assert NonceMint(SECRET).check(nonce, 1000.0, MD5) is NonceCheck.FORGED


def test_each_count_is_taken_once() -> None:
    mint = NonceMint(SECRET)
    counts = NonceCounts(mint)
    nonce = mint.mint(1000.0, MD5)
    assert counts.advance(nonce, 1, 1000.0) == -1
    assert counts.advance(nonce, 1, 1000.0) is None  # the same request again: a replay
    assert counts.advance(nonce, 3, 1000.0) == 1
    assert counts.advance(nonce, 2, 1000.0) is None  # older than one taken
    other = mint.mint(1000.0, MD5)
    assert counts.advance(other, 0, 1000.0) == -1  # no qop: nc 0, good once
    assert counts.advance(other, 0, 1000.0) is None


def test_a_count_given_back_can_be_taken_again() -> None:
    """What Redis did not confirm gave its count back; a count taken since stays."""
    mint = NonceMint(SECRET)
    counts = NonceCounts(mint)
    nonce = mint.mint(1000.0, MD5)
    counts.restore(nonce, 1, counts.advance(nonce, 1, 1000.0) or 0)
    assert len(counts) == 0
    assert counts.advance(nonce, 1, 1000.0) == -1
    assert counts.advance(nonce, 2, 1000.0) == 1
    counts.restore(nonce, 1, -1)  # not the count held now: nothing given back
    assert counts.advance(nonce, 2, 1000.0) is None


def test_a_full_table_refuses_what_it_dropped() -> None:
    """One count too many drops the first; that nonce and all minted no later
    are refused from then on (challenged afresh), newer ones are not."""
    mint = NonceMint(SECRET)
    counts = NonceCounts(mint, capacity=3)
    nonces = [mint.mint(1000.0 + n, MD5) for n in range(5)]
    earlier, later = mint.mint(999.5, MD5), mint.mint(1000.5, MD5)
    for nonce in nonces[:4]:
        assert counts.advance(nonce, 1, 1010.0) == -1
    assert len(counts) == 3
    assert counts.advance(nonces[0], 1, 1010.0) is None  # dropped: a replay would pass
    assert counts.advance(earlier, 1, 1010.0) is None  # minted before the one dropped
    assert counts.advance(later, 1, 1010.0) == -1  # after it: never counted, so never dropped
    assert counts.advance(nonces[4], 1, 1010.0) == -1


def test_expired_nonces_go_and_stay_refused() -> None:
    """A nonce past its lifetime is dropped when one more comes; its count can
    never be taken again, even by a request checked fresh just before."""
    mint = NonceMint(SECRET, lifetime=60)
    counts = NonceCounts(mint)
    old = mint.mint(1000.0, MD5)
    assert counts.advance(old, 1, 1000.0) == -1
    assert counts.advance(mint.mint(1070.0, MD5), 1, 1070.0) == -1
    assert len(counts) == 1
    assert counts.advance(old, 1, 1070.0) is None


def test_the_next_nonce_expires_on_its_own_time() -> None:
    """With the first nonce given back, the next is swept by when it was minted."""
    mint = NonceMint(SECRET, lifetime=60)
    counts = NonceCounts(mint)
    first, second = mint.mint(1000.0, MD5), mint.mint(1050.0, MD5)
    taken = counts.advance(first, 1, 1050.0)
    assert counts.advance(second, 1, 1050.0) == -1
    counts.restore(first, 1, taken or -1)
    assert counts.advance(mint.mint(1070.0, MD5), 1, 1070.0) == -1
    assert counts.advance(second, 2, 1070.0) == 1  # still counted: minted 20 s ago
