"""``quietwire relay``: media relays.

So far the chassis only: ready while Redis answers. Port pairs, latching,
forwarding and the registry come with their own issue.
"""

from __future__ import annotations

from quietwire.runtime.redisclient import RedisBackedService


class RelayService(RedisBackedService):
    pass
