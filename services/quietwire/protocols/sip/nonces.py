"""Digest nonces (RFC 3261 section 22.4, RFC 7616 section 3.3): minted and
checked without storage, and the counts answered with them.

A nonce carries its age, the algorithm of the challenge it was minted for, the
minter (one per process start) and a MAC under the secret every replica shares
(:class:`NonceMint`). Only its minter takes it: the same process remembers the
highest nonce-count answered with each of its nonces (:class:`NonceCounts`), so
a captured request cannot be replayed, with no shared store and no write per
request. A phone's messages reach the replica its connection is open to; a
nonce brought to another replica (the phone reconnected, a replica restarted)
is stale there, and the phone answers the fresh challenge without asking its
user (``stale=true``).
"""

from __future__ import annotations

import binascii
import enum
import hmac
import struct
from collections import OrderedDict
from typing import TYPE_CHECKING, Final

from quietwire.protocols.hmac_sha256 import HmacSha256
from quietwire.protocols.randomness import POOL

if TYPE_CHECKING:
    from quietwire.protocols.sip.digest import DigestAlgorithm

#: Counts a replica remembers (least recently first used dropped first; what
#: was minted before a dropped one is stale from then on).
MAX_COUNTED = 200_000


class NonceCheck(enum.Enum):
    FRESH = "fresh"
    #: Too old, or minted by another replica (or before a restart): challenge again.
    STALE = "stale"
    FORGED = "forged"
    #: Ours, but minted for another algorithm's challenge.
    OTHER_ALGORITHM = "other-algorithm"


class NonceMint:
    """Nonces that carry their own age, algorithm, minter and integrity
    (base64url of ``time(8) algorithm(1) minter(4) random(7) mac(12)``).

    The registrar needs no storage to know a nonce is ours, fresh, and was
    issued in the challenge for the algorithm it is answered with (a nonce
    from the SHA-256 challenge answered with MD5 is a downgrade, RFC 8760
    section 3). Each mint is its own minter: a nonce of another (another
    replica, or this one before it restarted) is stale here.
    """

    def __init__(self, secret: bytes, lifetime: float = 300.0) -> None:
        #: HMAC-SHA-256 under the secret, over a label naming this layout: a nonce
        #: of an earlier layout (from a replica not yet upgraded) is not ours, so
        #: it is challenged again rather than refused.
        self._hmac = HmacSha256(secret, _NONCE_LABEL)
        self.lifetime = lifetime
        self.minter = POOL.take(_MINTER)

    def _mac(self, body: bytes) -> bytes:
        return self._hmac.digest(body)[:_MAC]

    def mint(self, now: float, algorithm: DigestAlgorithm) -> str:
        head = _NONCE_HEAD.pack(int(now * 1000), algorithm.nonce_code)
        body = head + self.minter + POOL.take(_RANDOM)
        return nonce_text(body + self._mac(body))

    def check(self, nonce: str, now: float, algorithm: DigestAlgorithm) -> NonceCheck:
        raw = nonce_bytes(nonce)
        if (
            raw is None
            or len(raw) != _LENGTH
            or not hmac.compare_digest(self._mac(raw[:_BODY]), raw[_BODY:])
        ):
            return NonceCheck.FORGED
        millis, code = _NONCE_HEAD.unpack_from(raw)
        if code != algorithm.nonce_code:
            return NonceCheck.OTHER_ALGORITHM
        issued = millis / 1000
        if not issued - 5 <= now <= issued + self.lifetime or raw[_HEAD:_RANDOM_AT] != self.minter:
            return NonceCheck.STALE
        return NonceCheck.FRESH

    def issued(self, nonce: str) -> float:
        """When a nonce this mint checked was minted (its own word: check it first)."""
        raw = nonce_bytes(nonce)
        if raw is None or len(raw) != _LENGTH:
            raise ValueError("not a nonce of this layout")
        millis, _ = _NONCE_HEAD.unpack_from(raw)
        return float(millis / 1000)


class NonceCounts:
    """The highest nonce-count (``nc``) answered with each nonce of one mint.

    A count is taken once per nonce (:meth:`advance`), only by credentials that
    verified: a stranger without a password adds nothing. At most ``capacity``
    nonces are remembered; when one more comes, the one counted first is
    dropped and every nonce minted no later than it is refused from then on (a
    phone asked again answers a fresh challenge), so a dropped count can never
    be replayed. Nonces past the mint's lifetime are dropped as they come to
    the front.
    """

    def __init__(self, mint: NonceMint, capacity: int = MAX_COUNTED) -> None:
        self.mint = mint
        self.capacity = capacity
        self._counts: OrderedDict[str, int] = OrderedDict()
        #: Nonces minted at or before this time and not remembered are refused.
        self._floor = float("-inf")
        #: When the first nonce of ``_counts`` was minted (read while there is one).
        self._first = 0.0

    def __len__(self) -> int:
        return len(self._counts)

    def advance(self, nonce: str, count: int, now: float) -> int | None:
        """Take ``count`` for ``nonce`` (checked FRESH by the mint) if it is above
        every count taken with it: the highest before it (-1: none), for
        :meth:`restore`. None when it is not above (a replay) or the nonce's
        counts were dropped."""
        counts = self._counts
        seen = counts.get(nonce)
        if seen is None:
            if self._floor > float("-inf") and self.mint.issued(nonce) <= self._floor:
                return None
            oldest = now - self.mint.lifetime
            while counts and (len(counts) >= self.capacity or self._first < oldest):
                self._drop_first()
            if not counts:
                self._first = self.mint.issued(nonce)
            counts[nonce] = count
            return -1
        if count <= seen:
            return None
        counts[nonce] = count
        return seen

    def restore(self, nonce: str, count: int, previous: int) -> None:
        """Give back ``count`` taken by :meth:`advance` (``previous`` what it
        returned) when what it was taken for did not happen, unless a higher
        count was taken since."""
        if self._counts.get(nonce) != count:
            return
        if previous < 0:
            self._drop(nonce)
        else:
            self._counts[nonce] = previous

    def _drop_first(self) -> None:
        """Forget the nonce counted first; refuse from then on what was minted
        no later (an expired nonce's check and its count are apart in time)."""
        self._floor = max(self._floor, self._first)
        self._drop(next(iter(self._counts)))

    def _drop(self, nonce: str) -> None:
        first = next(iter(self._counts))
        del self._counts[nonce]
        if nonce == first and self._counts:
            self._first = self.mint.issued(next(iter(self._counts)))


_NONCE_LABEL: Final = b"quietwire digest nonce, algorithm and minter bound:"
#: A nonce's time in ms and its algorithm's code.
_NONCE_HEAD: Final = struct.Struct("!QB")
_HEAD: Final = _NONCE_HEAD.size
_MINTER: Final = 4
_RANDOM: Final = 7
_MAC: Final = 12
_RANDOM_AT: Final = _HEAD + _MINTER
_BODY: Final = _RANDOM_AT + _RANDOM
_LENGTH: Final = _BODY + _MAC
#: The base64 alphabet to base64url's and back (RFC 4648 section 5).
_TO_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE: Final = bytes.maketrans(b"-_", b"+/")


def nonce_text(raw: bytes) -> str:
    """``raw`` in base64url without padding (what ``base64.urlsafe_b64encode``
    and ``rstrip("=")`` give, with no Python-level helper in between)."""
    return binascii.b2a_base64(raw, newline=False).rstrip(b"=").translate(_TO_URLSAFE).decode()


def nonce_bytes(text: str) -> bytes | None:
    """What ``base64.urlsafe_b64decode`` gives for ``text`` padded to whole
    quanta (characters outside the alphabet skipped), None where it raises."""
    try:
        padded = (text + "=" * (-len(text) % 4)).encode("ascii")
        return binascii.a2b_base64(padded.translate(_FROM_URLSAFE))
    except ValueError:  # binascii.Error and UnicodeEncodeError are ValueErrors
        return None
