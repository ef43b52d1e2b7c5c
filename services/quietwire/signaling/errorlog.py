"""Exceptions met while handling SIP: :class:`ErrorLog` (shared with every
service's loops) counting in ``quietwire_sip_handler_errors``."""

from __future__ import annotations

import logging

from prometheus_client import Counter

from quietwire.protocols.clock import Clock
from quietwire.runtime.errorlog import ErrorLog

__all__ = ["ERRORS", "ErrorLog", "sip_errors"]

ERRORS = Counter(
    "quietwire_sip_handler_errors",
    "Exceptions while handling SIP, by where and exception type",
    ["where", "exception"],
)


def sip_errors(logger: logging.Logger, clock: Clock) -> ErrorLog:
    return ErrorLog(logger, clock, counter=ERRORS)
