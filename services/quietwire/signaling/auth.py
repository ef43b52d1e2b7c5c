"""Digest authentication of SIP requests (RFC 3261 section 22, RFC 8760).

Both algorithms are challenged (SHA-256 first, MD5 for older phones), with
``qop=auth``. Nonces are minted by :class:`NonceMint` (they expire by
themselves); nonce-counts are remembered in Redis so a captured request
cannot be replayed, and a nonce answered without qop is good for one use.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass

import redis.asyncio as redis
from prometheus_client import Counter
from redis.exceptions import NoScriptError

from quietwire.protocols.sip.digest import (
    Challenge,
    Credentials,
    DigestAlgorithm,
    NonceCheck,
    NonceMint,
)
from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.message import Request, Response, reply
from quietwire.signaling.users import UserStore

#: String per nonce: the highest nonce-count seen. TTL: the nonce lifetime.
NONCE_KEY = "qw:nonce:{{{nonce}}}"
_ADVANCE_NC = """
local seen = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > seen then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
return 0
"""

AUTH_FAILURES = Counter("quietwire_sip_auth_failures", "Failed digest authentications", ["why"])


class Verdict(enum.Enum):
    OK = "ok"
    CHALLENGE = "challenge"  # no (usable) credentials: send a challenge
    STALE = "stale"  # the nonce expired: challenge again with stale=true
    FAILED = "failed"  # wrong password, unknown user, replay


@dataclass(frozen=True, slots=True)
class AuthResult:
    verdict: Verdict
    username: str | None = None


class Authenticator:
    def __init__(
        self,
        users: UserStore,
        client: redis.Redis,
        mint: NonceMint,
        algorithms: tuple[DigestAlgorithm, ...] = (DigestAlgorithm.SHA_256, DigestAlgorithm.MD5),
    ) -> None:
        self.users = users
        self.algorithms = algorithms
        self.redis = client
        self.mint = mint
        self.realm = users.realm
        self._advance = client.register_script(_ADVANCE_NC)

    async def _user_and_count(
        self, username: str, nonce_key: str, count: int
    ) -> tuple[Mapping[bytes | str, bytes | str], int]:
        """One round trip: the user's hashes, and the nonce-count moved forward.

        A wrong password thus spends a count of a nonce it could not use anyway.
        EVALSHA, not the Script object: in a pipeline that costs a SCRIPT EXISTS
        round trip every time. The script is loaded again if Redis lost it.
        """
        try:
            return await self._pipelined(username, nonce_key, count)
        except NoScriptError:
            await self.redis.script_load(_ADVANCE_NC)
            return await self._pipelined(username, nonce_key, count)

    async def _pipelined(
        self, username: str, nonce_key: str, count: int
    ) -> tuple[Mapping[bytes | str, bytes | str], int]:
        ttl = int(self.mint.lifetime) + 10
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.users.key(username))
            pipe.evalsha(self._advance.sha, 1, nonce_key, count, ttl)
            stored, fresh = await pipe.execute()
        return stored, int(fresh)

    def challenge(self, request: Request, *, proxy: bool, stale: bool = False) -> Response:
        """401 (registrar) or 407 (proxy) with one challenge per configured algorithm."""
        status, header = (407, "Proxy-Authenticate") if proxy else (401, "WWW-Authenticate")
        reason = "Proxy Authentication Required" if proxy else "Unauthorized"
        response = reply(request, status, reason)
        nonce = self.mint.mint(time.time())
        for algorithm in self.algorithms:
            response.headers.add(header, str(Challenge(self.realm, nonce, algorithm, stale=stale)))
        return response

    async def check(self, request: Request, *, proxy: bool) -> AuthResult:
        header = "Proxy-Authorization" if proxy else "Authorization"
        values = [v for v in request.headers.get_all(header) if v]
        if not values:
            return AuthResult(Verdict.CHALLENGE)
        try:
            credentials = Credentials.parse(values[0])
        except ParseError:
            AUTH_FAILURES.labels("malformed").inc()
            return AuthResult(Verdict.FAILED)
        if credentials.realm != self.realm:
            return AuthResult(Verdict.CHALLENGE)
        nonce_state = self.mint.check(credentials.nonce, time.time())
        if nonce_state is NonceCheck.FORGED:
            return AuthResult(Verdict.CHALLENGE)
        if nonce_state is NonceCheck.STALE:
            return AuthResult(Verdict.STALE)
        count = credentials.nonce_count if credentials.qop else 0
        if count is None:
            return AuthResult(Verdict.FAILED, credentials.username)
        stored, fresh = await self._user_and_count(
            credentials.username, NONCE_KEY.format(nonce=credentials.nonce), count
        )
        user = self.users.from_hash(credentials.username, stored)
        if user is None or not credentials.matches(user.ha1[credentials.algorithm], request.method):
            AUTH_FAILURES.labels("credentials").inc()
            return AuthResult(Verdict.FAILED, credentials.username)
        if not fresh:
            AUTH_FAILURES.labels("replay").inc()
            return AuthResult(Verdict.STALE)
        return AuthResult(Verdict.OK, credentials.username)
