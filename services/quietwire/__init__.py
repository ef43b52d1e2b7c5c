"""quietwire: a secure VoIP hosting platform (SIP over TLS, ZRTP, SRTP relays)."""

from quietwire import native as native

__version__ = "0.1.0"
