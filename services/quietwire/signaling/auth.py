"""Digest authentication of SIP requests (RFC 3261 section 22, RFC 8760).

The configured algorithms are challenged (by default SHA-256 first, MD5 for
older phones), with ``qop=auth``; an answer with any other algorithm, or with
a nonce minted for another algorithm's challenge, fails. Nonces are minted
by :class:`NonceMint` (they expire by themselves, and a replica takes only
its own); their counts are remembered here (:class:`NonceCounts`) so a
captured request cannot be replayed, and a nonce answered without qop is good
for one use. Credentials are parsed by a strict grammar before anything of
theirs reaches Redis; every failure is counted toward a block
(:mod:`quietwire.signaling.lockout`).

A replica remembers the HA1 of each user who authenticated through it. A
REGISTER whose credentials verify against it is answered in one Redis round
trip: :meth:`Authenticator.proof` makes the checks that need Redis (the HA1
is still the stored one, no block) a precondition of the binding's write,
and :meth:`Authenticator.proven` takes the nonce-count for it. Anything else
(no remembered HA1, a wrong answer, a block, a changed password) takes the
full check, which alone answers failures, so the remembered HA1 can never let
through what the stored one would not.
"""

from __future__ import annotations

import enum
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import redis.asyncio as redis
from prometheus_client import Counter

from quietwire.protocols.sip.digest import (
    Challenge,
    Credentials,
    DigestAlgorithm,
    same_resource,
)
from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.message import Request, Response, reply
from quietwire.protocols.sip.nonces import NonceCheck, NonceCounts, NonceMint
from quietwire.runtime.redisclient import LuaScript, executed
from quietwire.signaling.locations import Precondition, Unproven
from quietwire.signaling.lockout import Lockout
from quietwire.signaling.users import UserStore, ha1_field

#: The checks of :meth:`Authenticator.proof`, before an update (a
#: :class:`Precondition`): KEYS[2] the user's hash, KEYS[3] on the blocks
#: (present while they hold); ARGV ends with the HA1 field and the HA1 the
#: credentials were verified with. Each redis.call costs Redis's Lua more
#: than the command it runs: the blocks are one EXISTS, and the arguments are
#: taken off by index (no table.remove).
PROOF_CHECK = """
local n = #ARGV
local field, ha1 = ARGV[n - 1], ARGV[n]
ARGV[n - 1], ARGV[n] = nil, nil
if redis.call('HGET', KEYS[2], field) ~= ha1 then return {'unproven'} end
if #KEYS > 2 and redis.call('EXISTS', unpack(KEYS, 3)) > 0 then return {'unproven'} end
"""
#: Users whose HA1 a replica remembers (least recently verified dropped first).
MAX_REMEMBERED = 100_000

AUTH_FAILURES = Counter("quietwire_sip_auth_failures", "Failed digest authentications", ["why"])


class Verdict(enum.Enum):
    OK = "ok"
    CHALLENGE = "challenge"  # no (usable) credentials: send a challenge
    STALE = "stale"  # the nonce expired: challenge again with stale=true
    FAILED = "failed"  # wrong password, unknown user, replay, refused algorithm, blocked


@dataclass(frozen=True, slots=True)
class AuthResult:
    verdict: Verdict
    username: str | None = None


@dataclass(frozen=True, slots=True)
class Proof:
    """Credentials that verified against a remembered HA1 (:meth:`Authenticator.proof`):
    what Redis must confirm, and the nonce-count to take when it is asked."""

    username: str
    precondition: Precondition
    nonce: str
    count: int


T = TypeVar("T")


class Authenticator:
    def __init__(
        self,
        users: UserStore,
        client: redis.Redis,
        mint: NonceMint,
        lockout: Lockout,
        algorithms: tuple[DigestAlgorithm, ...] = (DigestAlgorithm.SHA_256, DigestAlgorithm.MD5),
    ) -> None:
        self.users = users
        self.algorithms = algorithms
        self.redis = client
        self.mint = mint
        self.lockout = lockout
        self.realm = users.realm
        self.counts = NonceCounts(mint)
        self._proven = LuaScript(PROOF_CHECK + "return 'proven'\n")
        #: (username, algorithm token) → the HA1 last verified against (see the module
        #: doc). The token, not the member: an enum member hashes in Python.
        self._remembered: OrderedDict[tuple[str, str], str] = OrderedDict()

    def proof(self, request: Request, *, proxy: bool) -> Proof | None:
        """What Redis must confirm, when the request's credentials verify
        against the HA1 remembered for them (no I/O); None otherwise."""
        try:
            credentials = self.credentials(request, proxy=proxy)
        except ParseError:
            return None
        if credentials is None or credentials.algorithm not in self.algorithms:
            return None
        algorithm, username = credentials.algorithm, credentials.username
        remembered = self._remembered.get((username, algorithm.token))
        if remembered is None or not credentials.matches(remembered, request.method):
            return None
        if self.mint.check(credentials.nonce, time.time(), algorithm) is not NonceCheck.FRESH:
            return None
        keys = (self.users.key(username), *self.lockout.block_keys(username))
        precondition = Precondition(PROOF_CHECK, keys, (ha1_field(algorithm), remembered))
        return Proof(username, precondition, credentials.nonce, credentials.nonce_count or 0)

    async def proven(self, proof: Proof, write: Callable[[Precondition], Awaitable[T]]) -> T:
        """``write`` under the proof's precondition, its nonce-count taken first;
        :class:`Unproven` (and the count given back) when Redis does not confirm
        it, or at once when the count is not fresh (the full check says why)."""
        previous = self.counts.advance(proof.nonce, proof.count, time.time())
        if previous is None:
            raise Unproven(proof.username)
        try:
            return await write(proof.precondition)
        except Unproven:
            self.counts.restore(proof.nonce, proof.count, previous)
            raise

    def _remember(self, username: str, algorithm: DigestAlgorithm, ha1: str | None) -> None:
        key = (username, algorithm.token)
        if ha1 is None:
            self._remembered.pop(key, None)
            return
        self._remembered[key] = ha1
        self._remembered.move_to_end(key)
        if len(self._remembered) > MAX_REMEMBERED:
            self._remembered.popitem(last=False)

    async def _lookup(self, username: str) -> tuple[Mapping[bytes | str, bytes | str], bool]:
        """One round trip: the user's hashes, and whether the user or the source
        is blocked (:class:`Lockout`)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.users.key(username))
        for key in self.lockout.block_keys(username):
            pipe.pttl(key)
        stored, *pttls = await executed(pipe)
        return stored, self.lockout.refused([int(ms) for ms in pttls])

    def challenge(self, request: Request, *, proxy: bool, stale: bool = False) -> Response:
        """401 (registrar) or 407 (proxy) with one challenge per configured algorithm,
        each with its own nonce, bound to that algorithm."""
        status, header = (407, "Proxy-Authenticate") if proxy else (401, "WWW-Authenticate")
        reason = "Proxy Authentication Required" if proxy else "Unauthorized"
        response = reply(request, status, reason)
        now = time.time()
        for algorithm in self.algorithms:
            nonce = self.mint.mint(now, algorithm)
            response.headers.add(header, str(Challenge(self.realm, nonce, algorithm, stale=stale)))
        return response

    def credentials(self, request: Request, *, proxy: bool) -> Credentials | None:
        """The request's digest credentials for our realm, None if it has none.

        ``Authorization`` for the registrar, ``Proxy-Authorization`` for the proxy.
        Raises :class:`ParseError` (400, or 403 for what we never offer) for
        any credential outside the grammar, two for our realm, or a ``uri``
        that is not the Request-URI (RFC 7616 section 3.4.6).
        """
        header = "Proxy-Authorization" if proxy else "Authorization"
        # Parsed once per message: it is screened, proven and checked.
        digest = request.view(header, lambda: digest_credentials(request, header))
        ours = [credentials for credentials in digest if credentials.realm == self.realm]
        if not ours:
            return None
        if len(ours) > 1:
            raise ParseError("more than one credential for the realm")
        if not same_resource(ours[0].uri, request.uri):
            raise ParseError("digest uri is not the Request-URI")
        return ours[0]

    async def screen(self, request: Request) -> None:
        """Refuse a malformed credential before anything else sees it: raises
        :class:`ParseError` (what to answer), and counts it as a failure."""
        try:
            self.credentials(request, proxy=request.method != "REGISTER")
            return
        except ParseError as exc:
            malformed = exc
        AUTH_FAILURES.labels("malformed").inc()
        await self.lockout.failed(None)  # after the handler (runtime/aio.py says why)
        raise malformed

    async def check(self, request: Request, *, proxy: bool, remembered: bool = True) -> AuthResult:
        """The verdict on the request's credentials; every FAILED one is counted
        (:class:`Lockout`). Credentials that match the remembered HA1 cost one
        script (:meth:`proof`; ``remembered`` False when the caller tried it);
        the full check when Redis does not confirm it."""
        proof = self.proof(request, proxy=proxy) if remembered else None
        if proof is not None:
            try:
                await self.proven(proof, self._confirm)
                return AuthResult(Verdict.OK, proof.username)
            except Unproven:
                pass
        try:
            credentials, malformed = self.credentials(request, proxy=proxy), False
        except ParseError:
            credentials, malformed = None, True
        if malformed:  # counted after the handler (runtime/aio.py says why)
            return await self._failed("malformed", None)
        if credentials is None:
            return AuthResult(Verdict.CHALLENGE)
        algorithm = credentials.algorithm
        if algorithm not in self.algorithms:
            return await self._failed("algorithm", None)
        nonce_state = self.mint.check(credentials.nonce, time.time(), algorithm)
        if nonce_state is NonceCheck.FORGED:
            return AuthResult(Verdict.CHALLENGE)
        if nonce_state is NonceCheck.OTHER_ALGORITHM:
            return await self._failed("algorithm", None)
        if nonce_state is NonceCheck.STALE:
            return AuthResult(Verdict.STALE)
        stored, blocked = await self._lookup(credentials.username)
        if blocked:
            AUTH_FAILURES.labels("blocked").inc()
            return AuthResult(Verdict.FAILED, credentials.username)
        user = self.users.from_hash(credentials.username, stored)
        stored_ha1 = None if user is None else user.ha1.get(algorithm)
        if stored_ha1 is None or not credentials.matches(stored_ha1, request.method):
            if self._remembered.get((credentials.username, algorithm.token)) != stored_ha1:
                self._remember(credentials.username, algorithm, None)  # no longer the stored one
            return await self._failed("credentials", None if user is None else user.username)
        self._remember(credentials.username, algorithm, stored_ha1)
        count = credentials.nonce_count or 0
        if self.counts.advance(credentials.nonce, count, time.time()) is None:
            AUTH_FAILURES.labels("replay").inc()
            return AuthResult(Verdict.STALE)
        return AuthResult(Verdict.OK, credentials.username)

    async def _confirm(self, precondition: Precondition) -> None:
        """The precondition alone (no update); :class:`Unproven` when it does not hold."""
        # Run alone, the script's KEYS[1] (a location, else) is the user's hash again.
        keys = (precondition.keys[0], *precondition.keys)
        if await self._proven(self.redis, keys, precondition.args) != b"proven":
            raise Unproven(precondition.keys[0])

    async def _failed(self, why: str, account: str | None) -> AuthResult:
        AUTH_FAILURES.labels(why).inc()
        await self.lockout.failed(account)
        return AuthResult(Verdict.FAILED, account)


def digest_credentials(request: Request, header: str) -> list[Credentials]:
    """Every Digest credential of ``header``, parsed (:class:`ParseError` for a bad one).

    Credentials of another scheme are not ours to judge: without Digest ones
    the request is challenged (RFC 3261 section 22.1, RFC 4475 section 3.3.7)."""
    return [Credentials.parse(v) for v in request.headers.get_all(header) if is_digest(v)]


def is_digest(value: str) -> bool:
    """Whether a credentials header value is of the Digest scheme (case-insensitive)."""
    return value.lstrip().partition(" ")[0].lower() == "digest"
