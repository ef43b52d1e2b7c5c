"""``quietwire keyagreement``: per-call security plans.

So far the chassis only: ready while Redis answers. Plans, policy and the
ZRTP binding checks come with their own issue.
"""

from __future__ import annotations

from quietwire.runtime.redisclient import RedisBackedService


class KeyAgreementService(RedisBackedService):
    pass
