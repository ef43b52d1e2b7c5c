"""Per-user media policy in Redis, owned by keyagreement (set by ``quietwire user policy``)."""

from __future__ import annotations

import redis.asyncio as redis

from quietwire.keyagreement.policy import Policy, policy_or, strictest
from quietwire.runtime.redisclient import text

#: Hash: a user's address of record -> the Policy value that user asked for
#: (set with ``quietwire user policy``); users without one follow the deployment.
USER_POLICY_KEY = "qw:media-policy"


class UserPolicies:
    """Per-user media policy: a call follows the stricter of its two users."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    async def set(self, aor: str, policy: Policy | None) -> None:
        if policy is None:
            await self.redis.hdel(USER_POLICY_KEY, aor)
        else:
            await self.redis.hset(USER_POLICY_KEY, aor, policy.value)

    async def for_call(self, caller: str, callee: str, default: Policy) -> Policy:
        chosen = await self.redis.hmget(USER_POLICY_KEY, [caller, callee])
        return strictest(*(policy_or(text(v) if v else None, default) for v in chosen))
