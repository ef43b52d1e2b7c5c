"""Failed digest authentications, counted in Redis, and the blocks they earn.

Design. Every failed digest answer counts, whatever the method (REGISTER
through the registrar, every other request through the proxy, and a
credential too malformed to check, answered 400 by the core). Counts live in
Redis so every replica sees the same ones, in fixed windows (a counter that
expires ``window`` seconds after its first failure):

1. **Per source first.** A source is an IPv4 address or an IPv6 /64 (one
   subscriber's prefix: rotating addresses inside it changes nothing).
   ``source_failures`` within ``source_window`` block the source for
   ``source_block``: every request from it gets 403 until then. This is what
   stops a stranger guessing passwords, and it blocks only the stranger's
   own address.
2. **Per user, slower and higher.** Failures for an existing account also
   count per username; ``user_failures`` within ``user_window`` block that
   username for ``user_block`` (its credentials get 403 from anywhere,
   without the password being checked). This bounds guessing at one account
   from many addresses. So that one address cannot lock a real user out,
   :func:`one_source_most` bounds what a single source can add to a user's
   count within ``user_window`` under rule 1, and the policy is refused at
   start unless ``user_failures`` is above it (:func:`check_policy`).
   A distributed attacker with more than ``user_failures / source_failures``
   sources can still hold an account blocked; that is the price of bounding
   guesses per account, and it ends ``user_block`` after the attack does.

Unknown usernames count per source only: no key is made for a name that is
not an account. Source keys hold a keyed hash of the address, never the
address (privacy: no IP addresses at rest). A block found or made here is
also remembered in this replica's memory, so the core refuses the source's
next requests without asking Redis.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
from collections import OrderedDict
from contextvars import ContextVar
from dataclasses import dataclass

import redis.asyncio as redis
from prometheus_client import Counter

from quietwire.protocols.clock import Clock
from quietwire.protocols.hmac_sha256 import HmacSha256
from quietwire.runtime.redisclient import LuaScript
from quietwire.signaling.admission import source_key
from quietwire.signaling.limits import LIMITED

#: String per source (keyed hash of its address or /64): failures in the
#: current window. TTL: the window.
SOURCE_FAILURES_KEY = "qw:authfail:{{src:{source}}}"
#: String per source, present while it is blocked. TTL: the block.
SOURCE_BLOCK_KEY = "qw:authblock:{{src:{source}}}"
#: String per user of a realm: failures in the current window. TTL: the window.
USER_FAILURES_KEY = "qw:authfail:{{user:{realm}:{username}}}"
#: String per user of a realm, present while the user is blocked. TTL: the block.
USER_BLOCK_KEY = "qw:authblock:{{user:{realm}:{username}}}"

#: KEYS: a counter and its block (one hash tag, one Cluster slot). ARGV: the
#: limit, the window and the block in ms. Returns the block's ms, 0 if none.
_FAIL = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if n >= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  redis.call('DEL', KEYS[1])
  return tonumber(ARGV[3])
end
return 0
"""

#: The address the request being handled came from; the core sets it for
#: each request, before the registrar or the proxy authenticates it.
current_source: ContextVar[str | None] = ContextVar("quietwire_sip_source", default=None)

BLOCKS = Counter("quietwire_sip_auth_blocks", "Blocks after failed digest answers", ["scope"])
MAX_LOCAL = 100_000


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    source_failures: int = 10
    source_window: float = 600.0
    source_block: float = 600.0
    user_failures: int = 140
    user_window: float = 3600.0
    user_block: float = 900.0


def check_policy(policy: LockoutPolicy) -> None:
    """Raise ValueError unless ``user_failures`` is above :func:`one_source_most`."""
    most = one_source_most(policy)
    if policy.user_failures <= most:
        raise ValueError(
            f"the per-user limit ({policy.user_failures}) must be above the {most} failures"
            " one source can make within the per-user window, or one address could lock"
            " a user out"
        )


def one_source_most(policy: LockoutPolicy) -> int:
    """The most failures one source can count within ``user_window``.

    A source's counting periods start at least ``min(source_block,
    source_window)`` apart (a period ends in a block or when its window
    expires), and each counts at most ``source_failures``.
    """
    period = min(policy.source_block, policy.source_window)
    return policy.source_failures * (math.floor(policy.user_window / period) + 1)


class Lockout:
    def __init__(
        self, client: redis.Redis, realm: str, key: bytes, policy: LockoutPolicy, clock: Clock
    ) -> None:
        self.redis, self.realm, self.policy, self.clock = client, realm, policy, clock
        self._mac = HmacSha256(hmac.new(key, b"quietwire auth lockout", hashlib.sha256).digest())
        #: Every authenticated request asks for its source's block key, for a handful of sources.
        self._source_block_key = functools.lru_cache(maxsize=4096)(self._hashed_block_key)
        self._fail = LuaScript(_FAIL)
        #: Source key → monotonic time its block ends (this replica's view).
        self._blocked: OrderedDict[str, float] = OrderedDict()

    def _hashed(self, source: str) -> str:
        return self._mac.digest(source.encode()).hex()[:24]

    def blocked(self, address: str) -> bool:
        """Is ``address`` blocked, as far as this replica knows (no Redis)?"""
        if not self._blocked:
            return False
        until = self._blocked.get(source_key(address))
        if until is None:
            return False
        if until > self.clock.now():
            LIMITED.labels("auth-failures").inc()
            return True
        self._blocked.pop(source_key(address), None)
        return False

    def _remember(self, source: str, millis: int) -> None:
        self._blocked[source] = self.clock.now() + millis / 1000
        self._blocked.move_to_end(source)
        if len(self._blocked) > MAX_LOCAL:
            self._blocked.popitem(last=False)

    def block_keys(self, username: str) -> tuple[str, ...]:
        """The keys whose PTTL says whether an attempt for ``username`` is refused now."""
        user = USER_BLOCK_KEY.format(realm=self.realm, username=username)
        source = current_source.get()
        if source is None:
            return (user,)
        return (user, self._source_block_key(source))

    def _hashed_block_key(self, source: str) -> str:
        return SOURCE_BLOCK_KEY.format(source=self._hashed(source_key(source)))

    def refused(self, pttls: list[int]) -> bool:
        """From the PTTLs of :meth:`block_keys`: is the user or the source blocked?"""
        source = current_source.get()
        if len(pttls) > 1 and pttls[1] > 0 and source is not None:
            self._remember(source_key(source), pttls[1])
        return any(ms > 0 for ms in pttls)

    async def failed(self, username: str | None) -> None:
        """Count a failure from the current source, and for ``username`` if it is an account."""
        policy = self.policy
        source = current_source.get()
        if source is not None:
            key = source_key(source)
            hashed = self._hashed(key)
            millis = await self._count(
                SOURCE_FAILURES_KEY.format(source=hashed),
                SOURCE_BLOCK_KEY.format(source=hashed),
                policy.source_failures,
                policy.source_window,
                policy.source_block,
            )
            if millis:
                BLOCKS.labels("source").inc()
                self._remember(key, millis)
        if username is not None:
            names = {"realm": self.realm, "username": username}
            millis = await self._count(
                USER_FAILURES_KEY.format(**names),
                USER_BLOCK_KEY.format(**names),
                policy.user_failures,
                policy.user_window,
                policy.user_block,
            )
            if millis:
                BLOCKS.labels("user").inc()

    async def _count(
        self, counter: str, block: str, limit: int, window: float, block_for: float
    ) -> int:
        args = [limit, int(window * 1000), int(block_for * 1000)]
        return int(await self._fail(self.redis, (counter, block), args))
