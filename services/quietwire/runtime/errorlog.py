"""Exceptions a service meets and goes on from (a SIP request, a background loop's
round): each counted, logged at most once per kind per interval (a stranger who
can trigger one must not be able to flood the log, nor can a Redis blip that
fails a loop every second).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from prometheus_client import Counter

from quietwire.protocols.clock import Clock, MonotonicClock

LOOP_ERRORS = Counter(
    "quietwire_loop_errors",
    "Exceptions in background loops (heartbeats, expiry, discovery), by loop and type",
    ["loop", "exception"],
)
#: Seconds between two log lines of one kind.
LOG_EVERY = 60.0
#: Kinds remembered (exception types are few; this only bounds the table).
MAX_KINDS = 256


class ErrorLog:
    def __init__(
        self,
        logger: logging.Logger,
        clock: Clock | None = None,
        every: float = LOG_EVERY,
        counter: Counter = LOOP_ERRORS,
    ) -> None:
        """``counter``: labelled (where, exception type), counts every one."""
        self.logger, self.every, self.counter = logger, every, counter
        self.clock = clock or MonotonicClock()
        #: Per kind: when it was last logged, and how many went unlogged since.
        self._kinds: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()

    def record(self, where: str, exc: BaseException) -> bool:
        """Count ``exc``; log it with its traceback unless its kind was logged
        within the interval. True when it was logged."""
        kind = (where, type(exc).__name__)
        self.counter.labels(*kind).inc()
        now = self.clock.now()
        last = self._kinds.get(kind)
        if last is not None and now - last[0] < self.every:
            self._kinds[kind] = (last[0], last[1] + 1)
            return False
        self._kinds[kind] = (now, 0)
        self._kinds.move_to_end(kind)
        while len(self._kinds) > MAX_KINDS:
            self._kinds.popitem(last=False)
        self.logger.error(
            "%s failed",
            where,
            exc_info=exc,
            extra={"exception": kind[1], "suppressed": last[1] if last else 0},
        )
        return True
