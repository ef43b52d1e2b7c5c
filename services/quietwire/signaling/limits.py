"""Flood and abuse limits per source address (kept per replica, in memory).

A token bucket bounds requests per second, answered early (503) and counted.
Failed authentications block a source in :mod:`quietwire.signaling.lockout`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from prometheus_client import Counter

from quietwire.protocols.clock import Clock

LIMITED = Counter("quietwire_sip_limited", "Requests refused by a per-source limit", ["limit"])
MAX_SOURCES = 100_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class SourceLimiter:
    def __init__(self, clock: Clock, rate: float, burst: float) -> None:
        self.clock = clock
        self.rate, self.burst = rate, burst
        self._sources: OrderedDict[str, _Bucket] = OrderedDict()

    def _bucket(self, source: str) -> _Bucket:
        bucket = self._sources.get(source)
        if bucket is None:
            bucket = _Bucket(self.burst, self.clock.now())
            self._sources[source] = bucket
            if len(self._sources) > MAX_SOURCES:
                self._sources.popitem(last=False)
        self._sources.move_to_end(source)
        return bucket

    def allow(self, source: str) -> bool:
        """Take one token for a request from ``source``; False when it is over its rate."""
        bucket = self._bucket(source)
        now = self.clock.now()
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens < 1:
            LIMITED.labels("rate").inc()
            return False
        bucket.tokens -= 1
        return True
