"""Flood and abuse limits per source address (kept per replica, in memory).

A token bucket bounds requests per second; repeated failed authentications
block a source for a while. Both answer early (503 / 403) and are counted.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from prometheus_client import Counter

from quietwire.protocols.sip.transaction import Clock

LIMITED = Counter("quietwire_sip_limited", "Requests refused by a per-source limit", ["limit"])
MAX_SOURCES = 100_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    failures: list[float] = field(default_factory=list)
    blocked_until: float = 0.0


class SourceLimiter:
    def __init__(
        self,
        clock: Clock,
        rate: float,
        burst: float,
        max_failures: int,
        failure_window: float = 60.0,
        block_for: float = 300.0,
    ) -> None:
        self.clock = clock
        self.rate, self.burst = rate, burst
        self.max_failures, self.failure_window, self.block_for = (
            max_failures,
            failure_window,
            block_for,
        )
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

    def blocked(self, source: str) -> bool:
        if self._bucket(source).blocked_until > self.clock.now():
            LIMITED.labels("auth-failures").inc()
            return True
        return False

    def failed(self, source: str) -> None:
        """A failed authentication from ``source``; too many block it for a while."""
        bucket = self._bucket(source)
        now = self.clock.now()
        bucket.failures = [t for t in bucket.failures if now - t < self.failure_window] + [now]
        if len(bucket.failures) >= self.max_failures:
            bucket.blocked_until = now + self.block_for
            bucket.failures.clear()
