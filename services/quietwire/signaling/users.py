"""SIP users in Redis: digest HA1 hashes per algorithm, never a password."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

import redis.asyncio as redis
from redis.typing import EncodableT, FieldT

from quietwire.protocols.sip.digest import DigestAlgorithm, ha1
from quietwire.runtime.redisclient import executed, text
from quietwire.signaling.locations import Precondition

#: Hash per user: ``ha1_md5`` and/or ``ha1_sha256`` (lowercase hex; only the
#: configured algorithms'), ``created`` (unix seconds). Accounts have no TTL:
#: they live until deleted. The hash tag keeps a realm's users and their index
#: in one Cluster slot, so adding a user is one MULTI.
USER_KEY = "qw:{{users:{realm}}}:user:{username}"
#: Set of the usernames of a realm, for listing without SCAN.
USER_INDEX_KEY = "qw:{{users:{realm}}}:index"

#: A conservative subset of the RFC 3261 ``user`` production: no escapes,
#: nothing a phone's UI might mangle.
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MIN_PASSWORD_LENGTH = 8
#: A :class:`Precondition`: the user whose hash is the last key exists. It takes
#: that key off KEYS, so another precondition can follow it (:meth:`Precondition.then`).
_EXISTS = """
local user = KEYS[#KEYS]
KEYS[#KEYS] = nil
if redis.call('EXISTS', user) == 0 then return {'unproven'} end
"""


class UserError(ValueError):
    """A username or password that cannot be stored; the message says why."""


@dataclass(frozen=True, slots=True)
class User:
    username: str
    realm: str
    ha1: dict[DigestAlgorithm, str]
    created: float


def check_username(username: str) -> str:
    if not USERNAME.match(username):
        raise UserError(
            f"invalid username {username!r}: use 1-64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return username


def ha1_field(algorithm: DigestAlgorithm) -> str:
    """``ha1_md5``, ``ha1_sha256``."""
    return "ha1_" + algorithm.token.lower().replace("-", "")  # not .name: a Python property


class UserStore:
    """Users of one realm (the SIP domain) in Redis.

    :meth:`put` stores an HA1 for each of ``algorithms`` only: with MD5 turned
    off (``QW_SIP_DIGEST_ALGORITHMS``) no MD5 hash of a password is kept, and
    setting a password again drops one stored before.
    """

    def __init__(
        self,
        client: redis.Redis,
        realm: str,
        algorithms: tuple[DigestAlgorithm, ...] = tuple(DigestAlgorithm),
    ) -> None:
        self.redis = client
        self.realm = realm
        self.algorithms = algorithms

    def key(self, username: str) -> str:
        return USER_KEY.format(realm=self.realm, username=username)

    @property
    def _index(self) -> str:
        return USER_INDEX_KEY.format(realm=self.realm)

    async def put(self, username: str, password: str) -> bool:
        """Create or replace a user; True if it is new."""
        check_username(username)
        if len(password) < MIN_PASSWORD_LENGTH:
            raise UserError(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")
        fields: dict[FieldT, EncodableT] = {
            ha1_field(alg): ha1(alg, username, self.realm, password) for alg in self.algorithms
        }
        fields["created"] = str(time.time())
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.key(username))
        pipe.hset(self.key(username), mapping=fields)
        pipe.sadd(self._index, username)
        _, _, added = await executed(pipe)
        return bool(added)

    async def delete(self, username: str) -> bool:
        """Remove a user; True if it existed."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.key(username))
        pipe.srem(self._index, username)
        deleted, _ = await executed(pipe)
        return bool(deleted)

    def existing(self, username: str) -> Precondition:
        """That ``username`` is a user, checked with a location update or lookup."""
        return Precondition(_EXISTS, (self.key(username),), ())

    async def get(self, username: str) -> User | None:
        return self.from_hash(username, await self.redis.hgetall(self.key(username)))

    def from_hash(self, username: str, stored: Mapping[bytes | str, bytes | str]) -> User | None:
        """A user from its stored hash (HGETALL of :meth:`key`), None when absent."""
        raw = {text(k): text(v) for k, v in stored.items()}
        if not raw:
            return None
        hashes = {alg: raw[ha1_field(alg)] for alg in DigestAlgorithm if ha1_field(alg) in raw}
        return User(username, self.realm, hashes, float(raw["created"]))

    async def usernames(self) -> list[str]:
        return sorted(text(m) for m in await self.redis.smembers(self._index))
