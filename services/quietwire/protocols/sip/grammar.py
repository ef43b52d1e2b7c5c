"""Scalar productions of RFC 3261 section 25.1 that every SIP parser shares.

``DIGIT`` is ASCII ``%x30-39`` (RFC 5234 appendix B.1). Python's ``str.isdigit``
and ``int`` also take ``²`` or Arabic-Indic digits, so nothing here uses them on
wire text unchecked.
"""

from __future__ import annotations

from typing import Final

from quietwire.protocols.sip.errors import ParseError

#: RFC 3261 section 20.19 and 20.22: delta-seconds and the like are 32-bit.
MAX_UINT32: Final = 2**32 - 1
#: Most digits ``ascii_int`` reads (a 32-bit value has ten).
MAX_DIGITS: Final = 10


def ascii_int(text: str, what: str, maximum: int = MAX_UINT32) -> int:
    """``1*DIGIT`` (at most ten) as an int no greater than ``maximum``, or :class:`ParseError`."""
    if not is_ascii_int(text):
        raise ParseError(f"bad {what}")
    value = int(text)
    if value > maximum:
        raise ParseError(f"{what} out of range")
    return value


def is_ascii_int(text: str) -> bool:
    """``1*DIGIT``, at most ten: ``isdigit`` is ASCII ``0-9`` on ASCII text."""
    return 0 < len(text) <= MAX_DIGITS and text.isascii() and text.isdigit()
