"""JSON-lines logging with the call id from context and IP addresses masked.

Privacy (OSTN): servers must not log persistent IP addresses, so every
address in a message or a string field is replaced by ``<ip>`` unless the
operator sets ``QW_LOG_IPS=true``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from quietwire.runtime.context import call_id_var, leg_id_var

MASK = "<ip>"
_IP_CANDIDATE = re.compile(
    r"(?<![\w.:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f.]*"  # IPv6, maybe with a dotted tail
    r"|(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)"  # IPv4
)
# Attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def mask_ips(text: str) -> str:
    """``text`` with every IPv4 or IPv6 address replaced by ``<ip>``."""

    def replace(match: re.Match[str]) -> str:
        candidate = match.group(0)
        try:
            ipaddress.ip_address(candidate)
        except ValueError:
            return candidate
        return MASK

    return _IP_CANDIDATE.sub(replace, text)


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_ips(value)
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context, extras."""

    def __init__(self, service: str, *, show_ips: bool = False) -> None:
        super().__init__()
        self.service = service
        self.show_ips = show_ips

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if (call_id := call_id_var.get()) is not None:
            entry["call_id"] = call_id
        if (leg_id := leg_id_var.get()) is not None:
            entry["leg_id"] = leg_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if not self.show_ips:
            entry = _masked(entry)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(
    service: str, level: str = "info", *, show_ips: bool = False, stream: TextIO | None = None
) -> None:
    """Send every log record of the process to ``stream`` (stderr) as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(service, show_ips=show_ips))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
